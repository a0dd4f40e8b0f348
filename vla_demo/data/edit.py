"""Dataset edits (delete with undo, trim, relabel), the ``check`` of every format invariant, and export.

Edits run through the dataset's :class:`~vla_demo.data.writer.DatasetWriter` (so they hold its
locks) and keep the dataset valid: episodes stay numbered 0..N-1 with contiguous global frame
indices. A deleted or trimmed-away episode moves to ``.trash/<id>/`` (outside ``data/``, ``meta/``
and ``videos/``, so loaders never see it) and :func:`restore_episode` appends it back. Videos are
renamed, never re-encoded, except the one episode a trim shortens.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from vla_demo.data import format as fmt
from vla_demo.data import stats as st
from vla_demo.data import video
from vla_demo.data.reader import DatasetReader, column_to_numpy, read_episode_rows
from vla_demo.data.writer import DatasetWriter, Episode, row_stats, trash_stamp, write_tasks

MANIFEST = "manifest.json"


# ----------------------------------------------------------------------------- helpers


def _read_table(path: Path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _write_table(path: Path, table) -> None:
    import pyarrow.parquet as pq

    fmt.atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="snappy"))


def _replace_columns(table, updates: dict[str, np.ndarray]):
    import pyarrow as pa

    for name, values in updates.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pa.array(values, type=table.schema.field(name).type))
    return table


def _episode_files(root: Path, features: dict, e: int) -> list[Path]:
    files = [fmt.data_path(root, e), fmt.episodes_path(root, e)]
    return files + [fmt.video_path(root, k, e) for k in fmt.video_keys(features)]


def _move_episode(root: Path, features: dict, src: int, dst: int, index_shift: int) -> None:
    """Renumber episode ``src`` as ``dst`` and shift its global frame indices."""
    data = _read_table(fmt.data_path(root, src))
    L = data.num_rows
    data = _replace_columns(data, {
        "episode_index": np.full(L, dst, dtype=np.int64),
        "index": column_to_numpy(data.column("index")) + index_shift,
    })
    _write_table(fmt.data_path(root, dst), data)
    for key in fmt.video_keys(features):
        target = fmt.video_path(root, key, dst)
        if src != dst:
            target.parent.mkdir(parents=True, exist_ok=True)
            fmt.video_path(root, key, src).replace(target)
    row = _read_table(fmt.episodes_path(root, src)).to_pylist()[0]
    loc = fmt.episode_location(dst)
    row.update({
        "episode_index": dst,
        "dataset_from_index": row["dataset_from_index"] + index_shift,
        "dataset_to_index": row["dataset_to_index"] + index_shift,
        "data/chunk_index": loc["chunk_index"], "data/file_index": loc["file_index"],
        "meta/episodes/chunk_index": loc["chunk_index"], "meta/episodes/file_index": loc["file_index"],
    })
    for key in fmt.video_keys(features):
        row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"] = loc["chunk_index"], loc["file_index"]
    _write_row(root, dst, row)
    if src != dst:
        fmt.data_path(root, src).unlink()
        fmt.episodes_path(root, src).unlink()


def _write_row(root: Path, e: int, row: dict[str, Any]) -> None:
    import pyarrow as pa

    old = fmt.episodes_path(root, e)
    schema = _read_table(old).schema if old.exists() else None
    table = pa.Table.from_pylist([row], schema=schema)
    _write_table(fmt.episodes_path(root, e), table)


def _refresh_info(writer: DatasetWriter) -> None:
    """Recompute totals and stats from the episodes table and commit info.json last."""
    root = writer.root
    rows = read_episode_rows(root)
    stats = st.aggregate([row_stats(r) for r in rows]) if rows else {}
    fmt.write_json(root / fmt.STATS_PATH, st.to_json(stats))
    info = dict(writer.info)
    info["total_episodes"] = len(rows)
    info["total_frames"] = int(sum(r["length"] for r in rows))
    info["total_tasks"] = len(writer.tasks)
    info["splits"] = {"train": f"0:{len(rows)}"}
    fmt.write_json(root / fmt.INFO_PATH, info)
    writer.reload()
    writer._write_card_safely()


def _check_index(writer: DatasetWriter, e: int) -> None:
    if not 0 <= e < writer.num_episodes:
        raise ValueError(f"episode {e} does not exist ({writer.num_episodes} episodes)")


# ----------------------------------------------------------------------------- edits


def delete_episode(writer: DatasetWriter, e: int) -> str:
    """Move episode ``e`` to the trash and renumber the later ones; returns the trash id (for undo)."""
    with writer._lock:
        _check_index(writer, e)
        root, feats = writer.root, writer.features
        trash_id = f"episode-{e:06d}-{trash_stamp()}"
        dest = root / fmt.TRASH_DIR / trash_id
        reader = DatasetReader(root)
        manifest = {"episode_index": e, "tasks": reader.episode_tasks(e), "row": _jsonable(reader.episode(e))}
        L = reader.episode(e)["length"]
        for path in _episode_files(root, feats, e):
            target = dest / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
        fmt.write_json(dest / MANIFEST, manifest)
        for k in range(e + 1, writer.num_episodes):
            _move_episode(root, feats, k, k - 1, -L)
        _refresh_info(writer)
        return trash_id


def trashed_episodes(root: str | Path) -> list[str]:
    """Trash ids that :func:`restore_episode` accepts, oldest first."""
    trash = Path(root) / fmt.TRASH_DIR
    return sorted(p.name for p in trash.glob("episode-*") if (p / MANIFEST).exists())


def restore_episode(writer: DatasetWriter, trash_id: str) -> int:
    """Append a deleted episode back (as the last episode); returns its new index."""
    with writer._lock:
        if "/" in trash_id or trash_id.startswith(".") or trash_id not in trashed_episodes(writer.root):
            raise ValueError(f"no deleted episode {trash_id!r}; available: {trashed_episodes(writer.root)}")
        src = writer.root / fmt.TRASH_DIR / trash_id
        manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
        old = manifest["episode_index"]
        data = _read_table(src / fmt.DATA_PATH.format(**fmt.episode_location(old)))
        frames = {k: column_to_numpy(data.column(k)) for k in fmt.column_keys(fmt.user_features(writer.features))}
        for key in fmt.video_keys(writer.features):
            path = src / fmt.VIDEO_PATH.format(video_key=key, **fmt.episode_location(old))
            frames[key] = video.decode(path, fps=writer.fps)
        row = manifest["row"]
        episode = Episode(frames, manifest["tasks"], row.get("success"), row.get("source", "teleop"), row.get("operator", ""))
        index = writer.save_episode(episode)
        shutil.rmtree(src)
        return index


def trim_episode(writer: DatasetWriter, e: int, start: int, end: int) -> str:
    """Keep frames [start, end) of episode ``e``; returns the trash id of the untrimmed original."""
    with writer._lock:
        _check_index(writer, e)
        root = writer.root
        reader = DatasetReader(root)
        ep = reader.episode(e)
        L = ep["length"]
        if not 0 <= start < end <= L:
            raise ValueError(f"trim range [{start}, {end}) must lie within [0, {L}) and keep at least one frame")
        episode = load_episode(reader, e)
        cut = Episode({k: v[start:end] for k, v in episode.frames.items()}, episode.tasks[start:end],
                      episode.success, episode.source, episode.operator)
        trash_id = f"episode-{e:06d}-{trash_stamp()}"
        dest = root / fmt.TRASH_DIR / trash_id
        for path in _episode_files(root, writer.features, e):
            target = dest / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        fmt.write_json(dest / MANIFEST, {"episode_index": e, "tasks": episode.tasks, "row": _jsonable(ep)})
        writer._write_episode_files(e, cut, ep["dataset_from_index"])
        for k in range(e + 1, writer.num_episodes):
            _move_episode(root, writer.features, k, k, -(L - len(cut)))
        _refresh_info(writer)
        return trash_id


def relabel_episode(writer: DatasetWriter, e: int, task: str | None = None, success: bool | None | str = "keep") -> None:
    """Set the instruction of every frame of episode ``e`` and/or its success label."""
    with writer._lock:
        _check_index(writer, e)
        root = writer.root
        row = _read_table(fmt.episodes_path(root, e)).to_pylist()[0]
        if task is not None:
            if not isinstance(task, str) or not task.strip():
                raise ValueError("the new instruction must be a non-empty string")
            tasks = dict(writer.tasks)
            tasks.setdefault(task, len(tasks))
            if tasks != writer.tasks:
                write_tasks(root, tasks)
                writer.tasks = tasks
            data = _read_table(fmt.data_path(root, e))
            data = _replace_columns(data, {"task_index": np.full(data.num_rows, tasks[task], dtype=np.int64)})
            _write_table(fmt.data_path(root, e), data)
            row["tasks"] = [task]
        if success != "keep":
            if success not in (None, True, False):
                raise ValueError(f"success must be True, False or None, got {success!r}")
            row["success"] = success
        _write_row(root, e, row)
        _refresh_info(writer)


def load_episode(reader: DatasetReader, e: int) -> Episode:
    """Read a whole episode back (columns, decoded videos, per-frame tasks, extras)."""
    cols = reader.episode_columns(e)
    user = fmt.user_features(reader.features)
    frames = {k: cols[k] for k in user if k in cols}
    for key in reader.video_keys:
        frames[key] = reader.frames(key, e)
    ep = reader.episode(e)
    tasks = [reader.tasks[i] for i in cols["task_index"]]
    return Episode(frames, tasks, ep.get("success"), ep.get("source") or "teleop", ep.get("operator") or "")


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("episode_index", "length", "success", "source", "operator", "tasks")
    return {k: row.get(k) for k in keep}


# ----------------------------------------------------------------------------- check and export


def check(root: str | Path, videos: bool = True) -> list[str]:
    """Every invariant of the format (spec sections 3-8); returns the problems found (empty = valid)."""
    root = Path(root)
    try:
        reader = DatasetReader(root)
    except ValueError as e:
        return [str(e)]
    problems: list[str] = []
    info = reader.info
    if info.get("codebase_version") != fmt.CODEBASE_VERSION:
        problems.append(f"codebase_version is {info.get('codebase_version')!r}, expected {fmt.CODEBASE_VERSION!r}")
    for key, feat in fmt.DEFAULT_FEATURES.items():
        if info["features"].get(key) != feat:
            problems.append(f"default feature {key!r} missing or different")
    if info["total_tasks"] != len(reader.tasks) or len(set(reader.tasks)) != len(reader.tasks):
        problems.append(f"total_tasks {info['total_tasks']} but tasks.parquet has {len(reader.tasks)} (unique: {len(set(reader.tasks))})")
    if info.get("splits", {}).get("train") != f"0:{reader.num_episodes}":
        problems.append(f"splits {info.get('splits')} do not cover 0:{reader.num_episodes}")
    expected_from = 0
    for e, ep in enumerate(reader.episodes):
        problems += _check_episode(reader, e, ep, expected_from, videos)
        expected_from = ep["dataset_to_index"]
    if expected_from != reader.num_frames:
        problems.append(f"episodes cover {expected_from} frames but total_frames is {reader.num_frames}")
    problems += _check_stats(reader)
    problems += _check_orphans(reader)
    return problems


def _check_episode(reader: DatasetReader, e: int, ep: dict, expected_from: int, videos: bool) -> list[str]:
    out = []
    if ep["episode_index"] != e:
        out.append(f"episode rows are not contiguous: row {e} has episode_index {ep['episode_index']}")
    L = ep["length"]
    if ep["dataset_from_index"] != expected_from or ep["dataset_to_index"] - ep["dataset_from_index"] != L:
        out.append(f"episode {e}: index range [{ep['dataset_from_index']}, {ep['dataset_to_index']}) is not contiguous with length {L}")
    try:
        cols = reader.episode_columns(e)
    except (ValueError, OSError) as err:
        return out + [f"episode {e}: data unreadable: {err}"]
    fi = cols["frame_index"]
    if len(fi) != L or not np.array_equal(fi, np.arange(L)):
        out.append(f"episode {e}: frame_index is not 0..{L - 1} ({len(fi)} rows)")
        return out
    if not np.array_equal(cols["timestamp"], (fi / reader.fps).astype(np.float32)):
        out.append(f"episode {e}: timestamps differ from frame_index / fps")
    if not (cols["episode_index"] == e).all():
        out.append(f"episode {e}: rows carry other episode indices")
    if not np.array_equal(cols["index"], np.arange(ep["dataset_from_index"], ep["dataset_to_index"])):
        out.append(f"episode {e}: global index is not contiguous")
    if cols["task_index"].min() < 0 or cols["task_index"].max() >= len(reader.tasks):
        out.append(f"episode {e}: task_index outside tasks.parquet")
    elif sorted(set(ep["tasks"])) != sorted({reader.tasks[i] for i in cols["task_index"]}):
        out.append(f"episode {e}: the episodes table lists other tasks than its frames use")
    if videos:
        for key in reader.video_keys:
            try:
                n = len(reader.frames(key, e))
                if n != L:
                    out.append(f"episode {e}: {key} has {n} frames, expected {L}")
            except (ValueError, OSError) as err:
                out.append(f"episode {e}: {key} unreadable: {err}")
    return out


def _check_stats(reader: DatasetReader) -> list[str]:
    out = []
    try:
        stats = reader.stats()
    except (OSError, ValueError) as err:
        return [f"stats.json unreadable: {err}"]
    if reader.num_episodes == 0:
        return out
    for key, feat in reader.features.items():
        if feat["dtype"] in ("string", "language"):
            continue
        s = stats.get(key)
        if s is None or set(st.STAT_NAMES) - set(s):
            out.append(f"stats.json lacks {key} or some of {st.STAT_NAMES}")
            continue
        if np.asarray(s["count"]).shape != (1,):
            out.append(f"stats.json {key}.count must have shape (1,)")
        want = (3, 1, 1) if feat["dtype"] in ("video", "image") else tuple(feat["shape"])
        for name in st.STAT_NAMES:
            if name != "count" and np.asarray(s[name]).shape != want:
                out.append(f"stats.json {key}.{name} has shape {np.asarray(s[name]).shape}, expected {want}")
                break
    return out


def _check_orphans(reader: DatasetReader) -> list[str]:
    out = []
    for pattern in ("data/*/*.parquet", "meta/episodes/*/*.parquet", "videos/*/*/*.mp4"):
        for path in reader.root.glob(pattern):
            num = fmt.file_number(path)
            if num is None or num >= reader.num_episodes:
                out.append(f"orphan file {path.relative_to(reader.root)} (not referenced by info.json)")
    return out


def export_zip(root: str | Path, out: str | Path) -> Path:
    """Zip the dataset (without the trash and the lock file) for sharing."""
    root, out = Path(root), Path(out)
    fmt.read_info(root)
    if out.resolve().is_relative_to(root.resolve()):
        raise ValueError("write the zip outside the dataset folder")

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root)
                if path.is_file() and rel.parts[0] != fmt.TRASH_DIR and path.name != fmt.LOCK_NAME and not path.name.startswith("."):
                    z.write(path, Path(root.name) / rel)

    return fmt.atomic_write(out, write)
