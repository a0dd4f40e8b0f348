"""Training view: a LeRobot v3.0 dataset as (image, instruction, state, action chunk) items.

:class:`TrainingView` works on any v3.0 folder (ours or one from the hub already on disk). Items
follow ARCHITECTURE's batch contract::

    observation.images.front  float32 (3, H, W) in [0, 1]
    observation.images.wrist  float32 (3, H, W) in [0, 1], only when asked for (``wrist_key``)
    observation.state         float32 (state_dim,)  only when the dataset has a state feature
    task                      str, the instruction in force at that frame
    action                    float32 (chunk_size, action_dim): actions t..t+H-1 of the same episode
    action_is_pad             bool (chunk_size,): True where the chunk ran past the episode end
    intervention              bool 0-d tensor (False when the dataset has no such column)

Parquet columns (actions, states, task ids, intervention flags) of the selected episodes are read
once at construction. Camera frames are decoded one episode at a time and kept as uint8 in an LRU
cache bounded by ``cache_budget_mb``; an episode that does not fit is decoded again on each access.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_demo.constants import (ACTION, ACTION_IS_PAD, EXECUTED_ACTION, GOAL_NAMES, GOAL_POSITIONS, INTERVENTION, MAX_OBJECTS,
                                OBJECT_LABEL_FIELDS, OBJECT_LABELS, OBS_IMAGE_FRONT, OBS_IMAGE_WRIST, OBS_STATE, TASK)
from vla_demo.data import format as fmt
from vla_demo.data import stats as st
from vla_demo.data.reader import DatasetReader

POLICY_SOURCES = ("policy", "shared")  # episode sources in which the learned policy drove some frames

CAMERA_DTYPES = ("video", "image")
NUMERIC_KINDS = "biuf"  # numpy kinds of bool, int, unsigned and float dtypes
BYTES_PER_MB = 2**20


class TrainingView(torch.utils.data.Dataset):
    """Frame-indexed training items over one LeRobot v3.0 dataset.

    Args:
        root: dataset folder (holding ``meta/info.json``), or a DatasetReader of one to share.
        chunk_size: H, the number of future actions per item (t..t+H-1).
        image_key: the camera feature (named after ``key_map``) served as ``observation.images.front``.
        wrist_key: a second camera feature served as ``observation.images.wrist`` (None: none).
        image_size: resize frames to ``image_size`` x ``image_size`` (cv2.INTER_AREA); None keeps them.
        wrist_size: the same for the wrist camera (None: ``image_size``).
        cache_budget_mb: upper bound of the decoded-frame cache (uint8, already resized).
        key_map: ``{dataset key: our key}`` renames applied before validation, e.g.
            ``{"robot.command": "action"}``. A mapped key hides a dataset key of the same name.
        action_dim: expected number of values per action.
        episodes: episode indices to serve, in this order (default: all).

    Raises:
        ValueError: when a key is missing, has the wrong kind or size (the message names the
            dataset's keys and the ``key_map`` or argument that fixes it).
    """

    def __init__(self, root: str | Path | DatasetReader, chunk_size: int = 8, image_key: str = OBS_IMAGE_FRONT,
                 image_size: int | None = None, cache_budget_mb: float = 2048,
                 key_map: dict[str, str] | None = None, action_dim: int = 7, episodes: list[int] | None = None,
                 wrist_key: str | None = None, wrist_size: int | None = None):
        if chunk_size < 1 or action_dim < 1 or any(s is not None and s < 1 for s in (image_size, wrist_size)):
            raise ValueError(f"chunk_size ({chunk_size}), action_dim ({action_dim}), image_size ({image_size}) "
                             f"and wrist_size ({wrist_size}) must be positive")
        # A reader may be shared: views of one dataset (a run's training and validation splits)
        # then read its episode table once (2,000 small parquet files take seconds to open).
        self.reader = root if isinstance(root, DatasetReader) else DatasetReader(root)
        root = self.reader.root
        self.chunk_size, self.action_dim = chunk_size, action_dim
        self.image_key, self.wrist_key, self.image_size = image_key, wrist_key, image_size
        self._sizes = {image_key: image_size, wrist_key: wrist_size or image_size}  # camera -> side, None: as stored
        self.cache_budget_bytes = int(cache_budget_mb * BYTES_PER_MB)
        self.key_map = dict(key_map or {})
        self.features, self._source = rename_features(self.reader.features, self.key_map)
        check_camera(self.features, image_key, self.key_map)
        if wrist_key is not None and wrist_key not in self.features:
            raise ValueError(f"{root} has no wrist camera ({wrist_key!r}): a wrist-camera policy trains only on "
                             "datasets recorded with it (collect --wrist, or the app under a wrist-camera policy)")
        if wrist_key is not None:
            check_camera(self.features, wrist_key, self.key_map)
        check_action(self.features, action_dim, self.key_map)
        check_numeric(self.features, OBS_STATE)
        self.episodes = select_episodes(episodes, self.reader.num_episodes)
        self._load_columns()
        self._cache: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()  # (episode position, camera) -> (L, h, w, 3)
        self._cache_bytes = 0

    # ------------------------------------------------------------------ construction
    def _load_columns(self) -> None:
        """Concatenate the small per-frame columns of the selected episodes (frames in view order)."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in (ACTION, OBS_STATE, INTERVENTION, GOAL_POSITIONS, EXECUTED_ACTION,
                                                              OBJECT_LABELS, "task_index")}
        for e in self.episodes:
            cols = self.reader.episode_columns(e)
            length = len(cols["task_index"])
            for key in parts:
                source = self._source.get(key, key)
                if source in cols:
                    parts[key].append(cols[source].reshape(length, -1))
        self.lengths = np.array([len(p) for p in parts["task_index"]], dtype=np.int64)  # (E,)
        self._starts = np.concatenate([[0], np.cumsum(self.lengths)])  # (E + 1,) first row of each episode
        n = int(self._starts[-1])
        self._actions = _concat(parts[ACTION], (n, self.action_dim), np.float32)  # (N, A)
        self._states = _concat(parts[OBS_STATE], (n, -1), np.float32) if parts[OBS_STATE] else None  # (N, S)
        self._task_ids = _concat(parts["task_index"], (n,), np.int64)  # (N,)
        self._interventions = _concat(parts[INTERVENTION], (n,), bool) if parts[INTERVENTION] else np.zeros(n, bool)
        # Frames the policy drove (episodes recorded in Policy or Shared mode) whose label is the action
        # it took: nothing new to learn from them. A scripted demonstration's frames never count.
        self._own_actions = np.zeros(n, bool)
        if len(parts[EXECUTED_ACTION]) == len(self.episodes) and n:
            executed = _concat(parts[EXECUTED_ACTION], (n, -1), np.float32)
            policy_drove = np.repeat([self.reader.episode(e).get("source") in POLICY_SOURCES for e in self.episodes], self.lengths)
            same = np.all(executed == self._actions, axis=1) if executed.shape == self._actions.shape else np.zeros(n, bool)
            self._own_actions = policy_drove & ~self._interventions & same
        # Goal labels (scripted datasets only); NaN rows mean "no label" to the auxiliary loss.
        n_goal = len(GOAL_NAMES)
        have_goals = len(parts[GOAL_POSITIONS]) == len(self.episodes) and len(self.episodes) > 0
        self._goals = _concat(parts[GOAL_POSITIONS], (n, n_goal), np.float32) if have_goals else np.full((n, n_goal), np.nan, np.float32)
        self._objects = _concat(parts[OBJECT_LABELS], (n, -1), np.float32) if len(parts[OBJECT_LABELS]) == len(self.episodes) and n else no_objects(n)
        if n and self._task_ids.max() >= len(self.reader.tasks):
            raise ValueError(f"{self.reader.root}: task_index {self._task_ids.max()} has no entry in "
                             f"{fmt.TASKS_PATH} ({len(self.reader.tasks)} tasks)")

    # ------------------------------------------------------------------ Dataset API
    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> dict[str, Any]:
        """The training item of frame ``i`` (frames of the selected episodes, in view order)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"frame {i} out of range ({n} frames)")
        i = int(i) % n
        k = int(np.searchsorted(self._starts, i, side="right")) - 1  # episode position
        t, length = i - int(self._starts[k]), int(self.lengths[k])
        steps = t + np.arange(self.chunk_size)  # (H,)
        rows = self._starts[k] + np.minimum(steps, length - 1)  # past the end: repeat the last action
        item: dict[str, Any] = {
            OBS_IMAGE_FRONT: to_chw_float(self.episode_frames(k)[t]),  # (3, h, w)
            TASK: self.reader.tasks[self._task_ids[i]],
            ACTION: torch.from_numpy(self._actions[rows]),  # (H, A)
            ACTION_IS_PAD: torch.from_numpy(steps >= length),  # (H,)
            INTERVENTION: torch.tensor(bool(self._interventions[i])),
            GOAL_POSITIONS: torch.from_numpy(self._goals[i].copy()),  # (6,), NaN when unlabelled
            OBJECT_LABELS: torch.from_numpy(self._objects[i].copy()),  # (MAX_OBJECTS * 7,), colours -1 when unlabelled
        }
        if self.wrist_key is not None:
            item[OBS_IMAGE_WRIST] = to_chw_float(self.episode_frames(k, self.wrist_key)[t])  # (3, h, w)
        if self._states is not None:
            item[OBS_STATE] = torch.from_numpy(self._states[i].copy())  # (S,)
        return item

    # ------------------------------------------------------------------ frames and cache
    @property
    def cache_bytes(self) -> int:
        """Bytes of decoded frames currently cached (never more than ``cache_budget_bytes``)."""
        return self._cache_bytes

    def episode_frames(self, k: int, camera: str | None = None) -> np.ndarray:
        """(L, h, w, 3) uint8 frames of the k-th selected episode's ``camera`` (default: the
        ``image_key`` one), from the cache or decoded now."""
        key = (k, camera or self.image_key)
        frames = self._cache.get(key)
        if frames is not None:
            self._cache.move_to_end(key)
            return frames
        frames = self._load(k, key[1])
        self._remember(key, frames)
        return frames

    def prefill(self, workers: int = 2, stop=None, progress=None) -> int:
        """Decode the selected episodes' cameras into the cache before training, ``workers`` at a time.

        Without it the first few hundred steps decode on demand, one episode after another on one
        core (the default run's first 50 steps took 74 s instead of 11). Video decoding and resizing
        run outside the GIL, so threads share the work; the cache is filled from this thread only.
        Episodes are taken in order while their frames fit ``cache_budget_mb`` (a larger dataset
        keeps decoding on demand for the rest).

        Args:
            stop: a ``threading.Event``-like flag; when set, the prefill ends early (what is decoded stays).
            progress: ``progress(done, total)`` after each decoded episode camera.

        Returns:
            the number of episode cameras decoded.
        """
        from concurrent.futures import ThreadPoolExecutor

        keys = self._keys_that_fit()
        pool = ThreadPoolExecutor(max_workers=max(1, workers))
        try:
            futures = [pool.submit(self._load, *key) for key in keys]
            for done, (key, future) in enumerate(zip(keys, futures, strict=True), 1):
                if stop is not None and stop.is_set():
                    return done - 1
                self._remember(key, future.result())  # a damaged episode raises here, as on demand
                if progress is not None:
                    progress(done, len(keys))
            return len(keys)
        finally:  # stopped, failed or interrupted: the queued episodes are dropped, not decoded
            pool.shutdown(wait=True, cancel_futures=True)

    def _keys_that_fit(self) -> list[tuple[int, str]]:
        """(episode position, camera) pairs not cached yet, in order, whose frames fit the budget."""
        cameras = [self.image_key] + ([self.wrist_key] if self.wrist_key else [])
        keys, total = [], self._cache_bytes  # what is cached already counts once
        for k, length in enumerate(self.lengths):
            for cam in cameras:
                if (k, cam) in self._cache:
                    continue
                size = self._sizes[cam]
                h, w = (size, size) if size else self.features[cam]["shape"][:2]
                total += int(length) * h * w * 3
                if total > self.cache_budget_bytes:
                    return keys
                keys.append((k, cam))
        return keys

    def _load(self, k: int, camera: str) -> np.ndarray:
        return resize_frames(self._decode(self.episodes[k], camera), self._sizes[camera])

    def _decode(self, e: int, camera: str) -> np.ndarray:
        source = self._source.get(camera, camera)
        if self.features[camera]["dtype"] == "video":
            return self.reader.frames(source, e)
        return decode_pngs(self.reader.episode_columns(e)[source])

    def _remember(self, key: tuple[int, str], frames: np.ndarray) -> None:
        """Cache ``frames``, evicting least recently used episodes; skip when they alone exceed the budget."""
        if frames.nbytes > self.cache_budget_bytes:
            return
        while self._cache and self._cache_bytes + frames.nbytes > self.cache_budget_bytes:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes
        self._cache[key] = frames
        self._cache_bytes += frames.nbytes

    # ------------------------------------------------------------------ extras
    def sample_weights(self, intervention_weight: float = 1.0, own_action_weight: float = 1.0) -> torch.Tensor:
        """Per-frame sampling weights: ``intervention_weight`` for frames an operator drove,
        ``own_action_weight`` for frames the policy drove that are labelled with its own action (in a
        Shared-mode recording: nothing new to learn, and the steps that made the operator take
        over), 1 for the rest (demonstrations, and policy frames an expert relabelled).

        Returns:
            float64 (N,) tensor, ready for ``torch.utils.data.WeightedRandomSampler``.
        """
        for name, w in (("intervention_weight", intervention_weight), ("own_action_weight", own_action_weight)):
            if not np.isfinite(w) or w < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {w}")
        w = np.where(self._interventions, float(intervention_weight), 1.0)
        w[self._own_actions] = float(own_action_weight)
        if len(w) and not w.any():  # a recording of the policy alone: its frames are all there is
            w[:] = 1.0
        return torch.from_numpy(w)

    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """``meta/stats.json`` (whole dataset) as numpy arrays, keyed by our names (``key_map`` applied)."""
        try:
            raw = self.reader.stats()
        except FileNotFoundError:
            raise ValueError(f"{self.reader.root} has no {fmt.STATS_PATH}") from None
        ours = {source: name for name, source in self._source.items()}
        return st.from_json({ours.get(k, k): d for k, d in raw.items() if k in ours})


# ----------------------------------------------------------------------------- validation


def rename_features(features: dict[str, Any], key_map: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply ``key_map`` to the dataset's features.

    Returns:
        ``({our key: feature}, {our key: dataset key})``.
    """
    unknown = sorted(set(key_map) - set(features))
    if unknown:
        raise ValueError(f"key_map names {unknown}, which the dataset does not have; its keys are {describe(features)}")
    targets = list(key_map.values())
    doubled = sorted({t for t in targets if targets.count(t) > 1})
    if doubled:
        raise ValueError(f"key_map maps several dataset keys onto {doubled}; each of our keys needs one source")
    # a renamed key leaves its old name, and a mapped key hides a dataset key of the same name
    source = {k: k for k in features if k not in key_map and k not in set(targets)}
    source.update({ours: theirs for theirs, ours in key_map.items()})
    return {ours: features[theirs] for ours, theirs in source.items()}, source


def describe(features: dict[str, Any]) -> str:
    """``"key (dtype [shape]), ..."`` of the user features, for error messages."""
    return ", ".join(f"{k} ({f['dtype']} {list(f['shape'])})" for k, f in fmt.user_features(features).items())


def _example_source(features: dict[str, Any], want: str, fits) -> str:
    """A dataset key that ``fits`` (to show in a key_map suggestion), else a placeholder."""
    candidates = [k for k, f in fmt.user_features(features).items() if k != want and fits(f)]
    return candidates[0] if candidates else "their.key"


def check_camera(features: dict[str, Any], image_key: str, key_map: dict[str, str]) -> None:
    """``image_key`` must be a video feature, or an image feature (PNG bytes in the parquet)."""
    feature = features.get(image_key)
    if feature is not None and feature["dtype"] in CAMERA_DTYPES:
        return
    cameras = [k for k, f in features.items() if f["dtype"] in CAMERA_DTYPES]
    found = "no" if feature is None else f"a {feature['dtype']}, not a video or image,"
    example = cameras[0] if cameras else "their.camera"
    raise ValueError(f"the dataset has {found} feature {image_key!r} (key_map {key_map}); its cameras are {cameras} "
                     f"and its keys {describe(features)}; pass image_key={example!r} or "
                     f"key_map={{{example!r}: {image_key!r}}}")


def check_action(features: dict[str, Any], action_dim: int, key_map: dict[str, str]) -> None:
    """``action`` must be a numeric feature of ``action_dim`` values."""
    feature = features.get(ACTION)
    if feature is None:
        example = _example_source(features, ACTION, lambda f: _size(f) == action_dim and _is_numeric(f))
        raise ValueError(f"the dataset has no {ACTION!r} feature (key_map {key_map}); its keys are "
                         f"{describe(features)}; name the commanded action with key_map={{{example!r}: {ACTION!r}}}")
    check_numeric(features, ACTION)
    if _size(feature) != action_dim:
        example = _example_source(features, ACTION, lambda f: _size(f) == action_dim and _is_numeric(f))
        raise ValueError(f"{ACTION!r} has {_size(feature)} values per frame (shape {list(feature['shape'])}) but "
                         f"action_dim is {action_dim}; pass action_dim={_size(feature)} for a model with that action "
                         f"size, or map a {action_dim}-value feature with key_map={{{example!r}: {ACTION!r}}}; "
                         f"the dataset's keys are {describe(features)}")


def check_numeric(features: dict[str, Any], key: str) -> None:
    """An optional feature ``key``, when present, must be numeric (ValueError otherwise)."""
    if key in features and not _is_numeric(features[key]):
        raise ValueError(f"{key!r} must be numeric but the dataset stores it as {features[key]['dtype']}; "
                         f"map another feature with key_map={{'their.key': {key!r}}}")


def _is_numeric(feature: dict[str, Any]) -> bool:
    try:
        return np.dtype(feature["dtype"]).kind in NUMERIC_KINDS
    except TypeError:  # "video", "image", "string", ...
        return False


def _size(feature: dict[str, Any]) -> int:
    return int(np.prod(feature["shape"]))


def select_episodes(episodes: list[int] | None, total: int) -> list[int]:
    """Validated episode indices (all of them when ``episodes`` is None)."""
    if episodes is None:
        return list(range(total))
    chosen = [int(e) for e in episodes]
    bad = [e for e in chosen if not 0 <= e < total]
    if bad:
        raise ValueError(f"episodes {bad} do not exist (the dataset has {total}: 0..{total - 1})")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"episodes lists an episode twice: {chosen}")
    return chosen


# ----------------------------------------------------------------------------- arrays


def no_objects(n: int) -> np.ndarray:
    """(n, MAX_OBJECTS * 7) object labels of frames without any: every slot empty (colour -1)."""
    rows = np.zeros((n, MAX_OBJECTS, len(OBJECT_LABEL_FIELDS)), np.float32)
    rows[..., :2] = -1
    return rows.reshape(n, -1)


def _concat(parts: list[np.ndarray], shape: tuple[int, ...], dtype) -> np.ndarray:
    if not parts:
        return np.zeros(shape, dtype=dtype)
    return np.ascontiguousarray(np.concatenate(parts).reshape(shape).astype(dtype, copy=False))


def resize_frames(frames: np.ndarray, size: int | None) -> np.ndarray:
    """(L, H, W, 3) uint8 -> (L, size, size, 3) with cv2.INTER_AREA (unchanged when size is None)."""
    if size is None or frames.shape[1:3] == (size, size):
        return frames
    import cv2

    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def decode_pngs(cells: np.ndarray) -> np.ndarray:
    """An ``image`` column (``{"bytes", "path"}`` structs of PNG/JPEG bytes) -> (L, H, W, 3) uint8 RGB."""
    import cv2

    frames = []
    for cell in cells:
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if data is None:
            raise ValueError("image features must embed their bytes; images stored as file paths are not supported")
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"could not decode an embedded image ({cell.get('path')})")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def to_chw_float(frame: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1))).float().div_(255)
