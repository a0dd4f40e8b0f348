"""LeRobot v3.0 layout: paths, feature schemas, ``info.json`` and durable file writes.

This project writes one episode per file (spec section 0.5): episode ``e`` lives in
``chunk-{e // 1000:03d}/file-{e % 1000:03d}`` for its data parquet, its episodes-metadata parquet
and each camera's mp4. Every file is written under a temporary name in its final folder, fsynced
and renamed, so a reader never sees half a file; ``info.json`` is written last and is the commit
point of a save.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vla_demo.constants import (
    ACTION,
    ACTION_NAMES,
    EXECUTED_ACTION,
    GOAL_NAMES,
    GOAL_POSITIONS,
    INTERVENTION,
    MAX_OBJECTS,
    OBJECT_LABEL_FIELDS,
    OBJECT_LABELS,
    OBS_IMAGE_FRONT,
    OBS_IMAGE_WRIST,
    OBS_STATE,
    STATE_NAMES,
)

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
INFO_PATH, STATS_PATH, TASKS_PATH, CARD_PATH = "meta/info.json", "meta/stats.json", "meta/tasks.parquet", "README.md"
TRASH_DIR = ".trash"
LOCK_NAME = ".writer.lock"
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
SOURCES = ("scripted", "teleop", "policy", "shared")
# Columns whose frames may have no value, stored as a row of NaN: ``goal_positions`` of an app
# recording whose instruction names no object in the scene. Stats leave such rows out (stats.py).
MAY_BE_MISSING = frozenset({GOAL_POSITIONS})


def episode_location(episode_index: int) -> dict[str, int]:
    chunk, file = divmod(episode_index, CHUNKS_SIZE)
    return {"chunk_index": chunk, "file_index": file}


def data_path(root: Path, e: int) -> Path:
    return root / DATA_PATH.format(**episode_location(e))


def video_path(root: Path, key: str, e: int) -> Path:
    return root / VIDEO_PATH.format(video_key=key, **episode_location(e))


def episodes_path(root: Path, e: int) -> Path:
    return root / EPISODES_PATH.format(**episode_location(e))


def file_number(path: Path) -> int | None:
    """Episode number encoded in a ``chunk-CCC/file-FFF.ext`` path (None for other names)."""
    try:
        chunk = int(path.parent.name.removeprefix("chunk-"))
        file = int(path.stem.removeprefix("file-"))
    except ValueError:
        return None
    return chunk * CHUNKS_SIZE + file


# ----------------------------------------------------------------------------- features


def video_feature(height: int, width: int) -> dict[str, Any]:
    return {"dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"]}


def sim_features(image_size: tuple[int, int] = (128, 128), wrist: bool = False,
                 goals: bool = False, objects: bool = False) -> dict[str, dict[str, Any]]:
    """User features of a sim dataset (the five default columns are added by the writer);
    ``goals`` adds the scripted collector's ``goal_positions`` labels, ``objects`` its
    ``object_labels``."""
    h, w = image_size
    feats = {OBS_IMAGE_FRONT: video_feature(h, w)}
    if wrist:
        feats[OBS_IMAGE_WRIST] = video_feature(h, w)
    feats[OBS_STATE] = {"dtype": "float32", "shape": [len(STATE_NAMES)], "names": list(STATE_NAMES)}
    feats[ACTION] = {"dtype": "float32", "shape": [len(ACTION_NAMES)], "names": list(ACTION_NAMES)}
    feats[EXECUTED_ACTION] = {"dtype": "float32", "shape": [len(ACTION_NAMES)], "names": list(ACTION_NAMES)}
    feats[INTERVENTION] = {"dtype": "bool", "shape": [1], "names": None}
    if goals:
        feats[GOAL_POSITIONS] = {"dtype": "float32", "shape": [len(GOAL_NAMES)], "names": list(GOAL_NAMES)}
    if objects:
        names = [f"object{i}_{f}" for i in range(MAX_OBJECTS) for f in OBJECT_LABEL_FIELDS]
        feats[OBJECT_LABELS] = {"dtype": "float32", "shape": [len(names)], "names": names}
    return feats


def keeps_column(root: Path, key: str) -> bool:
    """Whether a recording saved to ``root`` should carry the column ``key``: yes for a new
    dataset; an existing one keeps the columns it was created with."""
    return not (root / INFO_PATH).exists() or key in read_info(root).get("features", {})


def webcam_features(image_size: tuple[int, int] = (128, 128)) -> dict[str, dict[str, Any]]:
    """Webcam datasets: an image stream and operator-labelled actions, no proprioception."""
    feats = sim_features(image_size)
    del feats[OBS_STATE], feats[EXECUTED_ACTION]
    return feats


def video_keys(features: dict[str, Any]) -> list[str]:
    return [k for k, f in features.items() if f["dtype"] == "video"]


def column_keys(features: dict[str, Any]) -> list[str]:
    """Features stored as parquet columns (everything but videos), in schema order."""
    return [k for k, f in features.items() if f["dtype"] != "video"]


def user_features(features: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in features.items() if k not in DEFAULT_FEATURES}


def comparable(features: dict[str, Any]) -> dict[str, Any]:
    """Features without the probed video ``info`` blocks (for checking that schemas agree)."""
    return {k: {kk: vv for kk, vv in v.items() if kk != "info"} for k, v in user_features(features).items()}


def new_info(features: dict[str, Any], fps: int, robot_type: str) -> dict[str, Any]:
    for key in features:
        if "/" in key:
            raise ValueError(f"feature names may not contain '/': {key!r}")
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": int(fps),
        "splits": {"train": "0:0"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if video_keys(features) else None,
        "features": {**user_features(features), **DEFAULT_FEATURES},
    }


def read_info(root: Path) -> dict[str, Any]:
    path = root / INFO_PATH
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{root} is not a LeRobot dataset: {INFO_PATH} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"corrupt {path}: {e}") from None
    if not isinstance(info, dict):
        raise ValueError(f"corrupt {path}: expected a JSON object, got {type(info).__name__}")
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise ValueError(f"{root} is a LeRobot {version or 'unknown-version'} dataset; only v3.x is supported "
                         "(convert v2.1 with lerobot's convert_dataset_v21_to_v30)")
    for key in ("fps", "features", "total_episodes", "total_frames"):
        if key not in info:
            raise ValueError(f"corrupt {path}: no {key!r}")
    _check_info_values(info, path)
    return info


def _check_info_values(info: dict[str, Any], path: Path) -> None:
    """Types and ranges of the fields every reader relies on (ValueError naming the field)."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not number(info["fps"]) or not info["fps"] > 0:
        raise ValueError(f"corrupt {path}: fps must be a positive number, got {info['fps']!r}")
    for key in ("total_episodes", "total_frames"):
        if not isinstance(info[key], int) or isinstance(info[key], bool) or info[key] < 0:
            raise ValueError(f"corrupt {path}: {key} must be a non-negative integer, got {info[key]!r}")
    feats = info["features"]
    if not isinstance(feats, dict) or not all(isinstance(v, dict) for v in feats.values()):
        raise ValueError(f"corrupt {path}: features must map each feature name to an object")


class InfoView:
    """Shared accessors for classes holding a dataset's ``info`` dict (reader and writer)."""

    info: dict[str, Any]

    @property
    def fps(self) -> int:
        return int(self.info["fps"])

    @property
    def features(self) -> dict[str, Any]:
        return self.info["features"]

    @property
    def num_episodes(self) -> int:
        return int(self.info["total_episodes"])

    @property
    def num_frames(self) -> int:
        return int(self.info["total_frames"])


# ----------------------------------------------------------------------------- durable writes


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync directories
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, fsync, and rename onto ``path``. Temp files never survive an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=4, ensure_ascii=False) + "\n")
