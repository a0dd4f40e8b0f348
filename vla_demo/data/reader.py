"""Reading any LeRobot v3.0 dataset (ours, or one from the hub already on disk) without ``lerobot``.

Episodes may share files (lerobot packs many per parquet/mp4) or have one each (ours): rows are
located through ``dataset_from_index``/``dataset_to_index`` and frames through each camera's
``from_timestamp``/``to_timestamp``, as the spec prescribes.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from vla_demo.data import format as fmt
from vla_demo.data import video


def read_tasks(root: Path) -> dict[str, int]:
    """``{task string: task_index}`` from ``meta/tasks.parquet``."""
    import pandas as pd

    path = root / fmt.TASKS_PATH
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several error types for damaged files
        raise ValueError(f"corrupt {path}: {e}") from None
    if "task_index" not in df.columns:
        raise ValueError(f"corrupt {path}: no task_index column")
    names = df.index if df.index.dtype == object else df.get("task", df.index)
    return {str(t): int(i) for t, i in zip(names, df["task_index"], strict=True)}


def read_episode_rows(root: Path, n: int | None = None, stats: bool = True) -> list[dict[str, Any]]:
    """Episode metadata rows sorted by ``episode_index`` (the first ``n`` when given).

    ``stats=False`` leaves out the per-episode ``stats/...`` columns (about nine in ten of them):
    a reader needs the rest, the writer's stats aggregation needs them. The files (one per episode)
    are read by a few threads; Parquet decoding runs outside the GIL. For the 2,000 files of the
    default demonstrations (2026-12-05): about 13.7 s one at a time with the stats, 5.0 s on
    threads with them, 2.8 s on threads without them.
    """
    from concurrent.futures import ThreadPoolExecutor

    paths = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        rows = [r for part in pool.map(lambda p: _episode_file_rows(p, stats), paths) for r in part]
    rows.sort(key=lambda r: r["episode_index"])
    return rows if n is None else [r for r in rows if r["episode_index"] < n]


def _episode_file_rows(path: Path, stats: bool) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as f:
            columns = None if stats else [c for c in f.schema_arrow.names if not c.startswith("stats/")]
            return f.read(columns=columns).to_pylist()
    except Exception as e:  # pyarrow raises several error types for damaged files
        raise ValueError(f"corrupt {path}: {e}") from None


def column_to_numpy(column) -> np.ndarray:
    """An Arrow column -> numpy; fixed-size lists become (L, n) arrays."""
    import pyarrow as pa

    col = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        return np.stack([np.asarray(v) for v in col.to_pylist()])
    return col.to_numpy(zero_copy_only=False)


class DatasetReader(fmt.InfoView):
    """Read-only view of a LeRobot v3.0 dataset.

    Attributes:
        info: ``meta/info.json``; ``fps``, ``features`` and the totals come from it.
        tasks: task strings in task_index order.
        episodes: one metadata dict per episode (extras such as ``success`` included).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.info = fmt.read_info(self.root)
        tasks = read_tasks(self.root) if (self.root / fmt.TASKS_PATH).exists() else {}
        self.tasks = [t for t, _ in sorted(tasks.items(), key=lambda kv: kv[1])]
        self.episodes = read_episode_rows(self.root, self.num_episodes, stats=False)
        if len(self.episodes) != self.num_episodes:
            raise ValueError(f"{self.root}: info.json counts {self.num_episodes} episodes but "
                             f"meta/episodes holds {len(self.episodes)}")

    @property
    def video_keys(self) -> list[str]:
        return fmt.video_keys(self.features)

    def stats(self) -> dict[str, Any]:
        import json

        path = self.root / fmt.STATS_PATH
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"corrupt {path}: {e}") from None

    # ------------------------------------------------------------------ frames
    def _data_file(self, ep: dict[str, Any]) -> Path:
        return self.root / self.info["data_path"].format(chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"])

    @functools.lru_cache(maxsize=8)  # noqa: B019
    def _table(self, path: Path):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path)
        except Exception as e:
            raise ValueError(f"corrupt {path}: {e}") from None

    def episode_columns(self, e: int) -> dict[str, np.ndarray]:
        """Every parquet column of episode ``e`` as numpy arrays (vectors as (L, n))."""
        ep = self.episode(e)
        table = self._table(self._data_file(ep))
        index = table.column("index").to_numpy()
        rows = np.nonzero((index >= ep["dataset_from_index"]) & (index < ep["dataset_to_index"]))[0]
        part = table.take(rows)
        return {name: column_to_numpy(part.column(name)) for name in part.column_names}

    def episode(self, e: int) -> dict[str, Any]:
        if not 0 <= e < self.num_episodes:
            raise ValueError(f"episode {e} does not exist ({self.num_episodes} episodes)")
        return self.episodes[e]

    def frames(self, key: str, e: int) -> np.ndarray:
        """Decoded (L, H, W, 3) uint8 frames of camera ``key`` for episode ``e``."""
        if key not in self.video_keys:
            raise ValueError(f"{key!r} is not a video feature; cameras are {self.video_keys}")
        ep = self.episode(e)
        path = self.root / self.info["video_path"].format(
            video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"], file_index=ep[f"videos/{key}/file_index"]
        )
        start = float(ep[f"videos/{key}/from_timestamp"])
        frames = video.decode(path, start, start + ep["length"] / self.fps, fps=self.fps)
        if len(frames) != ep["length"]:
            raise ValueError(f"{path}: decoded {len(frames)} frames for episode {e}, expected {ep['length']}")
        return frames

    def episode_tasks(self, e: int) -> list[str]:
        """The instruction in force at each frame of episode ``e``."""
        ids = self.episode_columns(e)["task_index"]
        return [self.tasks[i] for i in ids]
