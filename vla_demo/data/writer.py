"""Recording episodes into a LeRobot v3.0 dataset that survives crashes.

* :class:`EpisodeRecorder` (one per operator session) validates and buffers frames; ``finish``
  hands the complete :class:`Episode` to the dataset's writer, ``discard`` drops it.
* :class:`DatasetWriter` (one per dataset folder in a process, shared by all sessions) saves
  episodes one at a time under a lock. An episode is durable when ``save_episode`` returns: its
  data parquet, videos and episodes-metadata parquet are written under temporary names, fsynced
  and renamed, then ``tasks.parquet``, ``stats.json`` and finally ``info.json`` (the commit point).
  A second process opening the same folder is refused (an OS file lock, released even on SIGKILL).
  Reopening cleans orphans of an interrupted save and appends.

Save cost is flat in the dataset size: nothing already written is read or rewritten (stats are
folded into running totals), except by the rare edits (delete, trim, relabel).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla_demo.constants import TASK
from vla_demo.data import format as fmt
from vla_demo.data import stats as st
from vla_demo.data import video


class DatasetLockedError(RuntimeError):
    """Another process is writing to this dataset."""


class DatasetWriteError(OSError):
    """An episode could not be saved (disk full, permissions...); earlier episodes are intact."""


@dataclass
class Episode:
    """A complete episode: per-feature arrays of length L plus one task string per frame."""

    frames: dict[str, np.ndarray]
    tasks: list[str]
    success: bool | None = None
    source: str = "teleop"
    operator: str = ""

    def __len__(self) -> int:
        return len(self.tasks)


# ----------------------------------------------------------------------------- frame validation


def check_frame(frame: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
    """Validate one frame against the user features; returns it with arrays of the right dtype.

    Raises ValueError naming the key and what was expected.
    """
    expected = set(fmt.user_features(features)) | {TASK}
    missing, extra = expected - set(frame), set(frame) - expected
    if missing or extra:
        raise ValueError(f"frame keys do not match the dataset: missing {sorted(missing)}, unexpected {sorted(extra)}")
    task = frame[TASK]
    if not isinstance(task, str):
        raise ValueError(f"frame['task'] must be the instruction string, got {type(task).__name__}")
    out: dict[str, Any] = {TASK: task}
    for key, feat in fmt.user_features(features).items():
        value = np.asarray(frame[key])
        shape = tuple(feat["shape"])
        if feat["dtype"] == "video":
            if value.dtype != np.uint8 or value.shape != shape:
                raise ValueError(f"{key} must be a {shape} uint8 image, got {value.shape} {value.dtype}")
        elif feat["dtype"] == "bool":
            if value.size != 1 or value.dtype.kind not in "bui":
                raise ValueError(f"{key} must be a single bool, got {value.shape} {value.dtype}")
            value = value.reshape(()).astype(bool)
        else:
            if value.shape != shape and not (shape == (1,) and value.shape == ()):
                raise ValueError(f"{key} must have shape {shape}, got {value.shape}")
            if not np.issubdtype(value.dtype, np.number):
                raise ValueError(f"{key} must be numeric, got {value.dtype}")
            if not np.all(np.isfinite(value)) and not (key in fmt.MAY_BE_MISSING and np.isnan(value).all()):
                raise ValueError(f"{key} has NaN or inf values: {value.tolist()}")
            value = value.astype(feat["dtype"])
        out[key] = value
    return out


class EpisodeRecorder:
    """Buffers one operator's episode; ``finish`` hands it to the shared writer.

    Args:
        writer: the dataset's :class:`DatasetWriter`.
        max_frames: refuse to grow past this (a forgotten recording must not eat the RAM).
    """

    def __init__(self, writer: DatasetWriter, max_frames: int = 20_000):
        self.writer = writer
        self.max_frames = max_frames
        self._frames: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._frames)

    def add_frame(self, frame: dict[str, Any]) -> None:
        if len(self._frames) >= self.max_frames:
            raise ValueError(f"episode is longer than {self.max_frames} frames; finish or discard it")
        self._frames.append(check_frame(frame, self.writer.features))

    def discard(self) -> None:
        self._frames = []

    def finish(self, success: bool | None = None, source: str = "teleop", operator: str = "") -> int:
        """Save the buffered episode; returns its index. The buffer is kept if saving fails."""
        if not self._frames:
            raise ValueError("nothing to save: the episode has no frames")
        keys = [k for k in self._frames[0] if k != TASK]
        episode = Episode(
            frames={k: np.stack([f[k] for f in self._frames]) for k in keys},
            tasks=[f[TASK] for f in self._frames],
            success=success,
            source=source,
            operator=operator,
        )
        index = self.writer.save_episode(episode)
        self._frames = []
        return index


# ----------------------------------------------------------------------------- the writer


def trash_stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 1_000_000:06d}"


class DatasetWriter(fmt.InfoView):
    """The one writer of a dataset folder in this process (see :meth:`open`)."""

    _registry: dict[Path, DatasetWriter] = {}
    _registry_lock = threading.Lock()

    @classmethod
    def open(cls, root: str | os.PathLike, features: dict[str, Any] | None = None, fps: int | None = None,
             robot_type: str = "pybullet_panda", card_note: str = "") -> DatasetWriter:
        """Open (or create, when ``features`` and ``fps`` are given) the dataset at ``root``.

        Every caller in this process gets the same writer for the same folder; another process
        holding the folder makes this raise :class:`DatasetLockedError`.
        """
        root = Path(root).resolve()
        with cls._registry_lock:
            writer = cls._registry.get(root)
            if writer is None or writer.closed:
                writer = cls(root, features, fps, robot_type, card_note)
                cls._registry[root] = writer
            elif features is not None and fmt.comparable(features) != fmt.comparable(writer.features):
                raise ValueError(f"{root} is open with different features")
            return writer

    @classmethod
    @contextlib.contextmanager
    def held(cls, root: str | os.PathLike, features: dict[str, Any] | None = None, fps: int | None = None,
             robot_type: str = "pybullet_panda", card_note: str = ""):
        """:meth:`open` for the length of a ``with`` block (a collection job, a batch of corrections):
        the writer is closed at the end, releasing the folder's lock, unless it was already open in
        this process before the block (then its other users keep it)."""
        with cls._registry_lock:
            before = cls._registry.get(Path(root).resolve())
            was_open = before is not None and not before.closed
        writer = cls.open(root, features, fps, robot_type, card_note)
        try:
            yield writer
        finally:
            if not was_open:
                writer.close()

    def __init__(self, root: Path, features, fps, robot_type, card_note):
        self.root = root
        self._lock = threading.RLock()
        self._lock_file = self._acquire_process_lock(features is not None)
        self.closed = False
        try:
            if (root / fmt.INFO_PATH).exists():
                self.info = fmt.read_info(root)
                if features is not None and fmt.comparable(features) != fmt.comparable(self.info["features"]):
                    raise ValueError(f"{root} already holds a dataset with other features: "
                                     f"{sorted(fmt.user_features(self.info['features']))}")
                if fps is not None and int(fps) != int(self.info["fps"]):
                    raise ValueError(f"{root} records at {self.info['fps']} fps, not {fps}")
            elif features is None or fps is None:
                raise ValueError(f"no dataset at {root}; give features and fps to create one")
            else:
                self.info = fmt.new_info(features, fps, robot_type)
                fmt.write_json(root / fmt.INFO_PATH, self.info)
            self.card_note = card_note
            self._recover()
        except BaseException:
            self._release()
            raise

    # ------------------------------------------------------------------ locking
    def _acquire_process_lock(self, create: bool):
        if not self.root.exists():
            if not create:
                raise ValueError(f"no dataset at {self.root}; give features and fps to create one")
            self.root.mkdir(parents=True)
        f = open(self.root / fmt.LOCK_NAME, "a+")  # noqa: SIM115 (held for the writer's lifetime)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise DatasetLockedError(
                f"{self.root} is being written by another process (pid {holder}); close it there first"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        return f

    def _release(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self._release()
                with DatasetWriter._registry_lock:
                    if DatasetWriter._registry.get(self.root) is self:
                        del DatasetWriter._registry[self.root]

    # ------------------------------------------------------------------ recovery
    def _recover(self) -> None:
        """Load tasks and stats; move files of an interrupted save (beyond info.json's count) aside."""
        from vla_demo.data.reader import read_tasks

        n = self.num_episodes
        orphans = []
        for pattern in ("data/*/*.parquet", "meta/episodes/*/*.parquet", "videos/*/*/*.mp4"):
            for path in self.root.glob(pattern):
                num = fmt.file_number(path)
                if num is None or num >= n:
                    orphans.append(path)
        for pattern in ("data/*/.*", "meta/episodes/*/.*", "videos/*/*/.*", "meta/.*"):
            for path in self.root.glob(pattern):
                path.unlink(missing_ok=True)  # temp files of a write that never completed
        if orphans:
            dest = self.root / fmt.TRASH_DIR / f"orphans-{trash_stamp()}"
            for path in orphans:
                target = dest / path.relative_to(self.root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), target)
        self.tasks: dict[str, int] = read_tasks(self.root) if (self.root / fmt.TASKS_PATH).exists() else {}
        self._episode_stats = self._load_episode_stats()
        self._stats = st.aggregate(self._episode_stats) if self._episode_stats else {}
        self._repair_meta()

    def _load_episode_stats(self) -> list[dict[str, dict[str, np.ndarray]]]:
        from vla_demo.data.reader import read_episode_rows

        return [row_stats(row) for row in read_episode_rows(self.root, self.num_episodes)]

    # ------------------------------------------------------------------ saving
    def save_episode(self, episode: Episode) -> int:
        """Write an episode; returns its index. Thread-safe. Raises DatasetWriteError on I/O failure."""
        self._validate(episode)
        with self._lock:
            if self.closed:
                raise ValueError(f"the writer of {self.root} is closed")
            e = self.num_episodes
            committing = False
            try:
                ep_stats = self._write_episode_files(e, episode, self.num_frames)
                committing = True
                self._commit(e, len(episode), ep_stats, episode.tasks)
            except OSError as err:
                self._remove_episode_files(e)
                self._recover_memory(committing)
                raise DatasetWriteError(err.errno or errno.EIO, f"could not save episode {e} to {self.root}: "
                                        f"{err.strerror or err}; earlier episodes are intact") from err
            return e

    def _validate(self, episode: Episode) -> None:
        L = len(episode)
        if L == 0:
            raise ValueError("an episode needs at least one frame")
        user = fmt.user_features(self.features)
        if set(episode.frames) != set(user):
            raise ValueError(f"episode features {sorted(episode.frames)} do not match the dataset's {sorted(user)}")
        for key, arr in episode.frames.items():
            if len(arr) != L:
                raise ValueError(f"{key} has {len(arr)} frames but the episode has {L} tasks")
        if episode.source not in fmt.SOURCES:
            raise ValueError(f"source must be one of {fmt.SOURCES}, got {episode.source!r}")
        if episode.success not in (None, True, False):
            raise ValueError(f"success must be True, False or None, got {episode.success!r}")

    def _write_episode_files(self, e: int, episode: Episode, start: int) -> dict:
        """Data parquet, videos and episodes-metadata parquet of episode ``e`` (durable, not yet committed)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        L = len(episode)
        task_ids = self._task_ids(episode.tasks)
        columns = self._columns(episode, e, start, task_ids)
        table = pa.table({k: to_arrow(v, self.features[k]) for k, v in columns.items()})
        fmt.atomic_write(fmt.data_path(self.root, e), lambda tmp: pq.write_table(table, tmp, compression="snappy"))
        videos = {k: episode.frames[k] for k in fmt.video_keys(self.features)}
        for key, frames in videos.items():
            fmt.atomic_write(fmt.video_path(self.root, key, e), lambda tmp, f=frames: video.encode(tmp, f, self.fps, _codec_for(self.features[key])))
        ep_stats = st.episode_stats(columns, videos)
        row = self._episode_row(e, episode, start, L, ep_stats)
        row_table = pa.Table.from_pylist([row])
        fmt.atomic_write(fmt.episodes_path(self.root, e), lambda tmp: pq.write_table(row_table, tmp, compression="snappy"))
        return ep_stats

    def _task_ids(self, tasks: list[str]) -> np.ndarray:
        ids = []
        pending = dict(self.tasks)
        for t in tasks:
            if t not in pending:
                pending[t] = len(pending)
            ids.append(pending[t])
        self._pending_tasks = pending
        return np.asarray(ids, dtype=np.int64)

    def _columns(self, episode: Episode, e: int, start: int, task_ids: np.ndarray) -> dict[str, np.ndarray]:
        L = len(episode)
        cols = {k: v for k, v in episode.frames.items() if self.features[k]["dtype"] != "video"}
        frame_index = np.arange(L, dtype=np.int64)
        cols["timestamp"] = (frame_index / self.fps).astype(np.float32)
        cols["frame_index"] = frame_index
        cols["episode_index"] = np.full(L, e, dtype=np.int64)
        cols["index"] = start + frame_index
        cols["task_index"] = task_ids
        return {k: cols[k] for k in fmt.column_keys(self.features)}

    def _episode_row(self, e: int, episode: Episode, start: int, L: int, ep_stats: dict) -> dict[str, Any]:
        loc = fmt.episode_location(e)
        row: dict[str, Any] = {
            "episode_index": e,
            "tasks": list(dict.fromkeys(episode.tasks)),
            "length": L,
            "data/chunk_index": loc["chunk_index"],
            "data/file_index": loc["file_index"],
            "dataset_from_index": start,
            "dataset_to_index": start + L,
        }
        for key in fmt.video_keys(self.features):
            row[f"videos/{key}/chunk_index"] = loc["chunk_index"]
            row[f"videos/{key}/file_index"] = loc["file_index"]
            row[f"videos/{key}/from_timestamp"] = 0.0
            row[f"videos/{key}/to_timestamp"] = L / self.fps
        for key, s in ep_stats.items():  # NaN (a feature no frame has a value for) stays a float in Parquet
            for name, value in s.items():
                row[f"stats/{key}/{name}"] = np.asarray(value).tolist()
        row["meta/episodes/chunk_index"] = loc["chunk_index"]
        row["meta/episodes/file_index"] = loc["file_index"]
        row["success"] = episode.success
        row["source"] = episode.source
        row["operator"] = episode.operator
        return row

    def _commit(self, e: int, L: int, ep_stats: dict, tasks: list[str]) -> None:
        """tasks.parquet, stats.json, the card, then info.json: the episode exists from here on."""
        if self._pending_tasks != self.tasks:
            write_tasks(self.root, self._pending_tasks)
        new_stats = st.aggregate([self._stats, ep_stats]) if self._stats else ep_stats
        fmt.write_json(self.root / fmt.STATS_PATH, st.to_json(new_stats))
        info = dict(self.info)
        info["total_episodes"] = e + 1
        info["total_frames"] = self.num_frames + L
        info["total_tasks"] = len(self._pending_tasks)
        info["splits"] = {"train": f"0:{e + 1}"}
        if e == 0:
            info["features"] = self._with_video_info(info["features"], e)
        fmt.write_json(self.root / fmt.INFO_PATH, info)
        self.info, self.tasks, self._stats = info, self._pending_tasks, new_stats
        self._episode_stats.append(ep_stats)
        self._write_card_safely()

    def _with_video_info(self, features: dict, e: int) -> dict:
        out = {k: dict(v) for k, v in features.items()}
        for key in fmt.video_keys(out):
            out[key]["info"] = video.probe(fmt.video_path(self.root, key, e), self.fps)
        return out

    def _remove_episode_files(self, e: int) -> None:
        paths = [fmt.data_path(self.root, e), fmt.episodes_path(self.root, e)]
        paths += [fmt.video_path(self.root, k, e) for k in fmt.video_keys(self.features)]
        for p in paths:
            try:
                p.unlink(missing_ok=True)
            except OSError:
                pass  # cleaned as an orphan on the next open

    def _recover_memory(self, committing: bool = False) -> None:
        """Forget a failed save. When its commit had begun (a full disk at stats.json or info.json),
        tasks.parquet and stats.json may be ahead of info.json: put them back to the committed state
        (best effort: the episode's files are gone, so there is room again; a reopen repairs the rest,
        see :meth:`_repair_meta`)."""
        new_tasks = self._pending_tasks != self.tasks
        self._pending_tasks = dict(self.tasks)
        if not committing:
            return
        with contextlib.suppress(OSError):
            if new_tasks and self.tasks:
                write_tasks(self.root, self.tasks)
            elif new_tasks:
                (self.root / fmt.TASKS_PATH).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            if self._stats:
                fmt.write_json(self.root / fmt.STATS_PATH, st.to_json(self._stats))
            else:
                (self.root / fmt.STATS_PATH).unlink(missing_ok=True)

    def _repair_meta(self) -> None:
        """On open: undo what a commit killed between its metadata files and info.json left ahead.
        Extra tasks are counted into info.json (kept: an interrupted relabel may already use them);
        stats.json is recomputed from the committed episodes when it covers another number of frames."""
        import json

        if len(self.tasks) > int(self.info.get("total_tasks", 0)):
            self.info = {**self.info, "total_tasks": len(self.tasks)}
            fmt.write_json(self.root / fmt.INFO_PATH, self.info)
        path = self.root / fmt.STATS_PATH
        try:
            count = json.loads(path.read_text(encoding="utf-8"))["frame_index"]["count"][0]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            count = None
        if self._stats and count != self.num_frames:
            fmt.write_json(path, st.to_json(self._stats))

    def _write_card_safely(self) -> None:
        from vla_demo.data.card import dataset_card

        try:
            fmt.atomic_write_text(self.root / fmt.CARD_PATH, dataset_card(self.root, self.info, self.tasks, self.card_note))
        except OSError:
            pass  # the card is a convenience; the episode is already committed

    # ------------------------------------------------------------------ edits (see data/edit.py)
    def reload(self) -> None:
        """Re-read the committed state after an edit rewrote files."""
        with self._lock:
            self.info = fmt.read_info(self.root)
            self._recover()


def _codec_for(feature: dict) -> str | None:
    codec = feature.get("info", {}).get("video.codec")
    return {"av1": "libsvtav1", "h264": "libx264"}.get(codec) if codec else None


def to_arrow(values: np.ndarray, feature: dict[str, Any]):
    """A column in LeRobot's Arrow types: scalars for shape (1,), fixed-size lists for vectors."""
    import pyarrow as pa

    dtype = feature["dtype"]
    shape = tuple(feature["shape"])
    arr = np.asarray(values)
    if shape == (1,):
        return pa.array(arr.reshape(-1).astype(dtype))
    flat = pa.array(arr.reshape(len(arr), -1).reshape(-1).astype(dtype))
    return pa.FixedSizeListArray.from_arrays(flat, int(np.prod(shape)))


def write_tasks(root: Path, tasks: dict[str, int]) -> None:
    import pandas as pd

    ordered = sorted(tasks, key=tasks.get)
    df = pd.DataFrame({"task_index": np.arange(len(ordered), dtype=np.int64)}, index=pd.Index(ordered, name="task"))
    fmt.atomic_write(root / fmt.TASKS_PATH, lambda tmp: df.to_parquet(tmp))


def row_stats(row: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """Per-episode stats from an episodes-metadata row (``stats/<feature>/<stat>`` columns)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for col, value in row.items():
        if col.startswith("stats/") and value is not None:
            key, name = col[len("stats/"):].rsplit("/", 1)
            out.setdefault(key, {})[name] = np.asarray(value, dtype=np.float64)
    return out
