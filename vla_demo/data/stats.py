"""Feature statistics as LeRobot v3.0 computes them (spec section 7).

Per episode: min, max, mean, std (population), count and the q01/q10/q50/q90/q99 quantiles of
every numeric feature; image and video features per channel, shape (3, 1, 1), in [0, 1], from a
sample of frames. Episodes aggregate with count weights and the parallel-variance formula, which is
associative, so the writer folds each new episode into running totals instead of re-reading the
whole dataset (save cost stays flat as the dataset grows).

A row of NaN is a frame without a value (``goal_positions`` of an instruction that names no object
in the scene): it is left out of the statistics and out of ``count``. A feature no frame has a value
for gets ``count`` 0 and NaN statistics (``null`` in JSON), and aggregation skips it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAT_NAMES = ("min", "max", "mean", "std", "count", *QUANTILES)


def _no_values(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The stats of a feature no frame has a value for: NaN everywhere, ``count`` 0."""
    return {**{name: np.full(shape, np.nan) for name in STAT_NAMES}, "count": np.array([0])}


def _numeric(values: np.ndarray) -> dict[str, np.ndarray]:
    x = values.astype(np.float64)
    if x.ndim == 1:
        x = x[:, None]
    x = x[~np.isnan(x).all(axis=tuple(range(1, x.ndim)))]  # rows without a value
    if len(x) == 0:
        return _no_values(x.shape[1:])
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    for name, q in QUANTILES.items():
        out[name] = np.quantile(x, q, axis=0) if len(x) >= 2 else x.mean(0)
    return out


def sample_indices(n: int) -> np.ndarray:
    """Frames sampled for image stats: all up to 100, then about n**0.75 (as lerobot)."""
    k = min(n, max(100, min(int(n**0.75), 10000)))
    return np.round(np.linspace(0, n - 1, k)).astype(int)


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """(L, H, W, 3) uint8 -> per-channel stats of shape (3, 1, 1) in [0, 1].

    Computed exactly from per-channel 256-bin histograms (pixels are uint8), which is ~50x
    faster than sorting the sampled pixels for the quantiles.
    """
    sample = frames[sample_indices(len(frames))]
    longer = max(sample.shape[1:3])
    if longer >= 300:
        step = int(longer / 150)
        sample = sample[:, ::step, ::step]
    levels = np.arange(256) / 255.0
    out: dict[str, list[float]] = {k: [] for k in ("min", "max", "mean", "std", *QUANTILES)}
    for c in range(3):
        hist = np.bincount(sample[..., c].ravel(), minlength=256).astype(np.float64)
        n = hist.sum()
        mean = (hist * levels).sum() / n
        present = np.nonzero(hist)[0]
        cdf = np.cumsum(hist) / n
        out["min"].append(levels[present[0]])
        out["max"].append(levels[present[-1]])
        out["mean"].append(mean)
        out["std"].append(np.sqrt((hist * (levels - mean) ** 2).sum() / n))
        for name, q in QUANTILES.items():
            out[name].append(levels[min(255, int(np.searchsorted(cdf, q)))])
    stats = {k: np.asarray(v).reshape(3, 1, 1) for k, v in out.items()}
    stats["count"] = np.array([len(sample)])
    return stats


def episode_stats(columns: dict[str, np.ndarray], videos: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Stats of every numeric column and every camera of one episode."""
    stats = {k: _numeric(np.asarray(v)) for k, v in columns.items()}
    stats.update({k: image_stats(v) for k, v in videos.items()})
    return stats


def aggregate(parts: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Combine per-episode stats (count-weighted; parallel variance; quantiles averaged)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    keys = {k for p in parts for k in p}
    for key in keys:
        present = [p[key] for p in parts if key in p]
        items = [s for s in present if float(s["count"][0]) > 0]
        if not items:  # no frame of any part has a value
            out[key] = _no_values(np.shape(present[0]["mean"]))
            continue
        counts = np.array([float(s["count"][0]) for s in items])
        w = (counts / counts.sum()).reshape(-1, *([1] * np.asarray(items[0]["mean"]).ndim))
        means = np.stack([np.asarray(s["mean"], np.float64) for s in items])
        mean = (w * means).sum(0)
        var = (w * (np.stack([np.asarray(s["std"], np.float64) for s in items]) ** 2 + (means - mean) ** 2)).sum(0)
        agg = {
            "min": np.min(np.stack([np.asarray(s["min"], np.float64) for s in items]), 0),
            "max": np.max(np.stack([np.asarray(s["max"], np.float64) for s in items]), 0),
            "mean": mean,
            "std": np.sqrt(var),
            "count": np.array([int(counts.sum())]),
        }
        for q in QUANTILES:
            agg[q] = (w * np.stack([np.asarray(s[q], np.float64) for s in items])).sum(0)
        out[key] = agg
    return out


def _plain(v: Any) -> Any:
    """An array as JSON-ready lists, NaN as ``None`` (JSON has no NaN)."""
    a = np.asarray(v)
    if a.dtype.kind == "f" and np.isnan(a).any():
        return np.where(np.isnan(a), None, a.astype(object)).tolist()
    return a.tolist()


def to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {k: {name: _plain(v) for name, v in s.items()} for k, s in stats.items()}


def from_json(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """``to_json``'s inverse: float arrays (``None`` back to NaN), ``count`` as integers."""
    return {k: {name: np.asarray(v, dtype=np.int64 if name == "count" else np.float64) for name, v in s.items()}
            for k, s in stats.items()}

