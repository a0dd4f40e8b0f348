"""LeRobot v3.0 writing and reading: round trip, invariants, durability, concurrency, edits, bad input."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pandas as pd
import pytest

from vla_demo.data import edit
from vla_demo.data import format as fmt
from vla_demo.data.reader import DatasetReader
from vla_demo.data.writer import DatasetWriteError, DatasetWriter, Episode, EpisodeRecorder

SIZE = (32, 32)


def frame(i: int, task: str = "pick up the red cube", episode: int = 0) -> dict:
    img = np.zeros((*SIZE, 3), np.uint8)
    img[:, :, 0] = (i * 20) % 256
    img[:, :, 1] = (episode * 60) % 256
    return {
        "observation.images.front": img,
        "observation.state": np.full(7, i, np.float32) + episode * 100,
        "action": np.linspace(-1, 1, 7).astype(np.float32) * i,
        "executed_action": np.full(7, -i, np.float32),
        "intervention": i % 3 == 0,
        "task": task,
    }


@pytest.fixture
def writer(tmp_path):
    w = DatasetWriter.open(tmp_path / "ds", fmt.sim_features(SIZE), fps=10)
    yield w
    w.close()


def record(writer, n_frames: int, episode: int = 0, tasks=None, **finish) -> int:
    rec = EpisodeRecorder(writer)
    for i in range(n_frames):
        rec.add_frame(frame(i, tasks[i] if tasks else "pick up the red cube", episode))
    return rec.finish(**{"success": True, "source": "teleop", "operator": "ada", **finish})


def test_round_trip_arrays_videos_tasks_and_extras(writer):
    tasks = ["pick up the red cube"] * 4 + ["now lift the ball"] * 3
    assert record(writer, 7, tasks=tasks) == 0
    assert record(writer, 5, episode=1, success=None, source="scripted", operator="") == 1
    r = DatasetReader(writer.root)
    assert (r.num_episodes, r.num_frames, r.fps) == (2, 12, 10)
    assert r.tasks == ["pick up the red cube", "now lift the ball"]
    cols = r.episode_columns(0)
    for i in range(7):
        f = frame(i)
        np.testing.assert_array_equal(cols["observation.state"][i], f["observation.state"])
        np.testing.assert_array_equal(cols["action"][i], f["action"])
        np.testing.assert_array_equal(cols["executed_action"][i], f["executed_action"])
        assert cols["intervention"][i] == f["intervention"]
    assert r.episode_tasks(0) == tasks
    video = r.frames("observation.images.front", 0)
    assert video.shape == (7, *SIZE, 3)
    for i in range(7):
        assert np.abs(video[i].astype(int) - frame(i)["observation.images.front"]).mean() < 4
    assert cols["timestamp"].dtype == np.float32 and np.array_equal(cols["timestamp"], (np.arange(7) / 10).astype(np.float32))
    e0, e1 = r.episodes
    assert (e0["success"], e0["source"], e0["operator"]) == (True, "teleop", "ada")
    assert (e1["success"], e1["source"]) == (None, "scripted")
    assert e1["dataset_from_index"] == 7 and e1["dataset_to_index"] == 12
    assert edit.check(writer.root) == []


def test_files_follow_the_lerobot_layout(writer):
    record(writer, 3)
    root = writer.root
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_tasks"] == 1 and info["splits"] == {"train": "0:1"}
    front = info["features"]["observation.images.front"]
    assert front["dtype"] == "video" and front["info"]["video.codec"] in ("av1", "h264")
    assert front["info"]["video.fps"] == 10 and front["info"]["video.height"] == SIZE[0]
    assert set(fmt.DEFAULT_FEATURES) <= set(info["features"])
    for rel in ("data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet",
                "videos/observation.images.front/chunk-000/file-000.mp4", "meta/stats.json", "meta/tasks.parquet", "README.md"):
        assert (root / rel).is_file(), rel
    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    assert list(tasks.index) == ["pick up the red cube"] and tasks.index.name == "task"
    assert list(tasks["task_index"]) == [0]
    import pyarrow.parquet as pq

    schema = pq.read_schema(root / "data/chunk-000/file-000.parquet")
    state_type = schema.field("observation.state").type
    assert state_type.list_size == 7 and str(state_type.value_type) == "float"  # fixed_size_list<float32>[7]
    assert str(schema.field("intervention").type) == "bool" and str(schema.field("index").type) == "int64"
    card = (root / "README.md").read_text()
    assert "LeRobot" in card and "episodes: 1" in card and "pick up the red cube" in card


def test_stats_match_numpy_over_all_frames(writer):
    record(writer, 6)
    record(writer, 9, episode=1)
    stats = json.loads((writer.root / "meta/stats.json").read_text())
    states = np.concatenate([[frame(i, episode=e)["observation.state"] for i in range(n)] for e, n in ((0, 6), (1, 9))]).astype(np.float64)
    s = stats["observation.state"]
    np.testing.assert_allclose(s["mean"], states.mean(0), rtol=1e-9)
    np.testing.assert_allclose(s["std"], states.std(0), rtol=1e-9)
    np.testing.assert_allclose(s["min"], states.min(0))
    np.testing.assert_allclose(s["max"], states.max(0))
    assert s["count"] == [15]
    img = stats["observation.images.front"]
    assert np.asarray(img["mean"]).shape == (3, 1, 1) and 0 <= np.asarray(img["mean"]).min() <= 1
    assert set(stats) >= {"action", "timestamp", "index", "intervention"}


def test_goal_labels_may_be_missing_and_stats_leave_those_frames_out(tmp_path):
    w = DatasetWriter.open(tmp_path / "goals", fmt.sim_features(SIZE, goals=True), fps=10)
    goal = lambda i: np.arange(6, dtype=np.float32) + i  # noqa: E731
    rows = [goal(0), np.full(6, np.nan, np.float32), goal(2), goal(5)]
    rec = EpisodeRecorder(w)
    for i, g in enumerate(rows):
        rec.add_frame({**frame(i), "goal_positions": g})
    assert rec.finish(success=True) == 0
    rec = EpisodeRecorder(w)  # an instruction naming no object in the scene: no frame is labelled
    for i in range(3):
        rec.add_frame({**frame(i, "dance with the purple teapot"), "goal_positions": np.full(6, np.nan, np.float32)})
    assert rec.finish(success=None) == 1
    with pytest.raises(ValueError, match="NaN or inf"):  # half a label is a bug, not a missing label
        EpisodeRecorder(w).add_frame({**frame(0), "goal_positions": np.array([0, 0, 0, np.nan, 0, 0], np.float32)})
    w.close()

    reader = DatasetReader(tmp_path / "goals")
    got = reader.episode_columns(0)["goal_positions"]
    np.testing.assert_array_equal(got[[0, 2, 3]], np.stack([rows[0], rows[2], rows[3]]))
    assert np.isnan(got[1]).all() and np.isnan(reader.episode_columns(1)["goal_positions"]).all()
    s = reader.stats()["goal_positions"]  # strict JSON: no NaN tokens in the file
    labelled = np.stack([rows[0], rows[2], rows[3]]).astype(np.float64)
    np.testing.assert_allclose(s["mean"], labelled.mean(0), rtol=1e-9)
    np.testing.assert_allclose(s["std"], labelled.std(0), rtol=1e-9)
    assert s["count"] == [3] and "NaN" not in (reader.root / "meta/stats.json").read_text()
    assert edit.check(reader.root) == []
    # the unlabelled episode's own stats: count 0 and null values, skipped when aggregating
    import pyarrow.parquet as pq

    from vla_demo.data import stats as st
    from vla_demo.data.reader import read_episode_rows
    from vla_demo.data.writer import row_stats

    types = {str(pq.read_schema(p).field("stats/goal_positions/mean").type) for p in reader.root.glob("meta/episodes/*/*.parquet")}
    assert types == {"list<element: double>"}  # one schema across files (LeRobot loads them as one table)
    ep = [row_stats(r) for r in read_episode_rows(reader.root)]
    assert ep[1]["goal_positions"]["count"][0] == 0 and np.isnan(ep[1]["goal_positions"]["mean"]).all()
    np.testing.assert_allclose(st.aggregate(ep)["goal_positions"]["mean"], labelled.mean(0), rtol=1e-9)
    only = st.aggregate([ep[1]])["goal_positions"]
    assert only["count"][0] == 0 and np.isnan(only["mean"]).all() and only["mean"].shape == (6,)
    assert st.to_json({"g": only})["g"]["mean"] == [None] * 6
    np.testing.assert_array_equal(st.from_json(st.to_json({"g": only}))["g"]["count"], [0])


def test_reopening_appends_and_keeps_everything(tmp_path):
    root = tmp_path / "ds"
    w = DatasetWriter.open(root, fmt.sim_features(SIZE), fps=10)
    record(w, 4)
    w.close()
    w2 = DatasetWriter.open(root)  # features come from info.json
    assert w2.num_episodes == 1
    record(w2, 3, episode=1, tasks=["other task"] * 3)
    w2.close()
    r = DatasetReader(root)
    assert r.num_episodes == 2 and r.episodes[1]["dataset_from_index"] == 4 and r.tasks == ["pick up the red cube", "other task"]
    assert edit.check(root) == []


def test_reopen_refuses_other_features_or_fps(tmp_path):
    root = tmp_path / "ds"
    DatasetWriter.open(root, fmt.sim_features(SIZE), fps=10).close()
    with pytest.raises(ValueError, match="other features"):
        DatasetWriter.open(root, fmt.sim_features((64, 64)), fps=10)
    with pytest.raises(ValueError, match="10 fps"):
        DatasetWriter.open(root, fmt.sim_features(SIZE), fps=30)
    with pytest.raises(ValueError, match="give features and fps"):
        DatasetWriter.open(tmp_path / "new")


def test_one_writer_per_folder_shared_by_sessions(writer):
    assert DatasetWriter.open(writer.root) is writer
    errors = []

    def session(k):
        try:
            for _ in range(3):
                record(writer, 4 + k, episode=k)
        except Exception as e:  # surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=session, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    r = DatasetReader(writer.root)
    assert r.num_episodes == 9 and sorted(e["length"] for e in r.episodes) == [4] * 3 + [5] * 3 + [6] * 3
    assert edit.check(writer.root) == []


def test_a_second_process_is_refused(writer):
    code = textwrap.dedent(f"""
        from vla_demo.data.writer import DatasetWriter, DatasetLockedError
        try:
            DatasetWriter.open({str(writer.root)!r})
        except DatasetLockedError as e:
            print("refused:", e)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "refused:" in done.stdout and "another process" in done.stdout, done.stderr


def test_a_held_writer_is_closed_after_its_block_unless_it_was_open_before(writer, tmp_path):
    with DatasetWriter.held(tmp_path / "job", fmt.sim_features(SIZE), fps=10) as held:
        assert DatasetWriter.open(tmp_path / "job") is held and not held.closed
    assert held.closed  # the lock is released: another process may write the folder now
    reopened = DatasetWriter.open(tmp_path / "job")
    assert reopened is not held and not reopened.closed
    reopened.close()
    with DatasetWriter.held(writer.root) as same:
        assert same is writer
    assert not writer.closed  # the app's writer outlives a job that borrowed it


@pytest.mark.parametrize(
    "change, message",
    [
        ({"observation.images.front": np.zeros((32, 32, 4), np.uint8)}, "uint8 image"),
        ({"observation.images.front": np.zeros((32, 32, 3), np.float32)}, "uint8 image"),
        ({"action": np.zeros(6, np.float32)}, r"shape \(7,\)"),
        ({"action": np.array([0, 0, np.nan, 0, 0, 0, 1], np.float32)}, "NaN or inf"),
        ({"observation.state": np.array(["a"] * 7)}, "numeric"),
        ({"intervention": np.zeros(3)}, "single bool"),
        ({"task": 5}, "instruction string"),
        ({"unknown": 1}, "unexpected"),
    ],
)
def test_bad_frames_are_rejected_with_clear_messages(writer, change, message):
    rec = EpisodeRecorder(writer)
    with pytest.raises(ValueError, match=message):
        rec.add_frame({**frame(0), **change})
    assert len(rec) == 0


def test_missing_keys_empty_episodes_and_bad_extras(writer):
    rec = EpisodeRecorder(writer)
    bad = frame(0)
    del bad["action"]
    with pytest.raises(ValueError, match="missing"):
        rec.add_frame(bad)
    with pytest.raises(ValueError, match="no frames"):
        rec.finish()
    rec.add_frame(frame(0))
    with pytest.raises(ValueError, match="source"):
        rec.finish(source="martians")
    assert len(rec) == 1  # a refused save keeps the buffer
    rec.discard()
    assert len(rec) == 0 and writer.num_episodes == 0


def test_full_disk_surfaces_an_error_and_keeps_earlier_episodes(writer, monkeypatch):
    record(writer, 4)
    import pyarrow.parquet as pq

    real = pq.write_table

    def full(table, where, **kw):
        if "episodes" in str(where):  # fail late: after the data file and video were written
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, where, **kw)

    monkeypatch.setattr(pq, "write_table", full)
    rec = EpisodeRecorder(writer)
    for i in range(3):
        rec.add_frame(frame(i, episode=1))
    with pytest.raises(DatasetWriteError, match="No space left") as info:
        rec.finish()
    assert "earlier episodes are intact" in str(info.value)
    assert len(rec) == 3 and writer.num_episodes == 1
    assert edit.check(writer.root) == []
    monkeypatch.setattr(pq, "write_table", real)
    assert rec.finish() == 1  # space is back: the same buffer saves
    assert edit.check(writer.root) == []


CRASH_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {repo!r})
from tests.data.test_writer import frame, SIZE
from vla_demo.data import format as fmt
from vla_demo.data.writer import DatasetWriter, EpisodeRecorder
w = DatasetWriter.open({root!r}, fmt.sim_features(SIZE), fps=10)
rec = EpisodeRecorder(w)
e = 0
while True:
    for i in range(12):
        rec.add_frame(frame(i, episode=e))
    print("saved", rec.finish(), flush=True)
    e += 1
"""


@pytest.mark.slow
def test_sigkill_mid_recording_leaves_a_valid_dataset(tmp_path):
    import pathlib

    repo = str(pathlib.Path(__file__).resolve().parents[2])
    root = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT.format(repo=repo, root=str(root))],
                            stdout=subprocess.PIPE, text=True)
    saved = []
    for line in proc.stdout:  # wait on events (saved episodes), not on time
        saved.append(int(line.split()[1]))
        if len(saved) == 4:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    w = DatasetWriter.open(root)  # the lock died with the process
    assert w.num_episodes >= 4
    assert edit.check(root) == []
    r = DatasetReader(root)
    for e in saved:
        np.testing.assert_array_equal(r.episode_columns(e)["observation.state"][5], frame(5, episode=e)["observation.state"])
    record(w, 3, episode=99)
    assert edit.check(root) == []
    w.close()


def test_reopen_moves_orphans_of_an_interrupted_save_aside(writer):
    record(writer, 3)
    root = writer.root
    writer.close()
    # Simulate a save killed after its data file was written but before info.json.
    (root / "data/chunk-000/file-001.parquet").write_bytes((root / "data/chunk-000/file-000.parquet").read_bytes())
    (root / "data/chunk-000/.file-002.parquet.x.tmp").write_bytes(b"partial")
    assert any("orphan" in p for p in edit.check(root))
    w = DatasetWriter.open(root)
    assert edit.check(root) == [] and w.num_episodes == 1
    assert list((root / fmt.TRASH_DIR).glob("orphans-*/data/chunk-000/file-001.parquet"))
    assert record(w, 2, episode=1) == 1
    w.close()


def test_delete_and_restore(writer):
    for e in range(3):
        record(writer, 3 + e, episode=e, tasks=[f"task {e}"] * (3 + e))
    trash_id = edit.delete_episode(writer, 1)
    r = DatasetReader(writer.root)
    assert r.num_episodes == 2 and [e["length"] for e in r.episodes] == [3, 5] and r.num_frames == 8
    assert r.episode_tasks(1) == ["task 2"] * 5
    assert edit.check(writer.root) == []
    assert edit.trashed_episodes(writer.root) == [trash_id]
    assert edit.restore_episode(writer, trash_id) == 2
    r = DatasetReader(writer.root)
    assert [e["length"] for e in r.episodes] == [3, 5, 4] and r.episode_tasks(2) == ["task 1"] * 4
    np.testing.assert_array_equal(r.episode_columns(2)["observation.state"][1], frame(1, episode=1)["observation.state"])
    assert edit.check(writer.root) == [] and edit.trashed_episodes(writer.root) == []
    with pytest.raises(ValueError, match="no deleted episode"):
        edit.restore_episode(writer, "../../etc")
    with pytest.raises(ValueError, match="does not exist"):
        edit.delete_episode(writer, 7)


def test_trim_and_relabel(writer):
    record(writer, 6)
    record(writer, 4, episode=1)
    edit.trim_episode(writer, 0, 1, 4)
    r = DatasetReader(writer.root)
    assert [e["length"] for e in r.episodes] == [3, 4] and r.num_frames == 7
    np.testing.assert_array_equal(r.episode_columns(0)["action"][0], frame(1)["action"])
    assert len(r.frames("observation.images.front", 0)) == 3
    assert edit.check(writer.root) == []
    with pytest.raises(ValueError, match="trim range"):
        edit.trim_episode(writer, 0, 2, 2)
    edit.relabel_episode(writer, 1, "put the ball in the tray", success=False)
    r = DatasetReader(writer.root)
    assert r.episode_tasks(1) == ["put the ball in the tray"] * 4 and r.episodes[1]["success"] is False
    assert edit.check(writer.root) == []
    with pytest.raises(ValueError, match="non-empty"):
        edit.relabel_episode(writer, 1, "  ")


def test_export_zip(writer, tmp_path):
    import zipfile

    record(writer, 3)
    path = edit.export_zip(writer.root, tmp_path / "out.zip")
    names = zipfile.ZipFile(path).namelist()
    assert "ds/meta/info.json" in names and not any(fmt.LOCK_NAME in n or ".trash" in n for n in names)
    with pytest.raises(ValueError, match="outside"):
        edit.export_zip(writer.root, writer.root / "x.zip")


def test_reader_refuses_non_datasets_and_old_versions(tmp_path):
    with pytest.raises(ValueError, match="info.json is missing"):
        DatasetReader(tmp_path)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta/info.json").write_text(json.dumps({"codebase_version": "v2.1"}))
    with pytest.raises(ValueError, match="v2.1"):
        DatasetReader(tmp_path)
    (tmp_path / "meta/info.json").write_text("{broken")
    assert "corrupt" in edit.check(tmp_path)[0]


def test_check_finds_broken_invariants(writer):
    record(writer, 4)
    record(writer, 4, episode=1)
    info_path = writer.root / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["total_frames"] = 9
    info_path.write_text(json.dumps(info))
    (writer.root / "videos/observation.images.front/chunk-000/file-001.mp4").write_bytes(b"not a video")
    problems = edit.check(writer.root)
    assert any("total_frames" in p for p in problems) and any("unreadable" in p for p in problems)


def test_episode_objects_are_validated(writer):
    good = {k: np.stack([frame(i)[k] for i in range(2)]) for k in fmt.user_features(writer.features)}
    with pytest.raises(ValueError, match="tasks"):
        writer.save_episode(Episode({**good, "action": good["action"][:1]}, ["a", "a"]))
    with pytest.raises(ValueError, match="success"):
        writer.save_episode(Episode(good, ["a", "a"], success="yes"))
    with pytest.raises(ValueError, match="at least one frame"):
        writer.save_episode(Episode(good, []))


def test_webcam_datasets_have_no_state(tmp_path):
    w = DatasetWriter.open(tmp_path / "cam", fmt.webcam_features(SIZE), fps=15, robot_type="webcam")
    rec = EpisodeRecorder(w)
    for i in range(4):
        f = frame(i)
        del f["observation.state"], f["executed_action"]
        rec.add_frame(f)
    rec.finish(source="teleop")
    r = DatasetReader(w.root)
    assert r.info["robot_type"] == "webcam" and r.fps == 15 and "observation.state" not in r.features
    assert edit.check(w.root) == []
    w.close()


def test_reader_handles_lerobot_style_files_holding_several_episodes(writer, tmp_path):
    """lerobot packs many episodes per parquet and per mp4; rows and frames are then located
    through dataset_from/to_index and from/to_timestamp. Repack our two episodes that way."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from vla_demo.data import video

    record(writer, 5)
    record(writer, 4, episode=1)
    src, root = writer.root, tmp_path / "packed"
    shutil.copytree(src / "meta", root / "meta")
    shutil.rmtree(root / "meta/episodes")
    r = DatasetReader(src)
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.concat_tables([pq.read_table(src / f"data/chunk-000/file-00{e}.parquet") for e in (0, 1)]),
                   root / "data/chunk-000/file-000.parquet")
    key = "observation.images.front"
    (root / f"videos/{key}/chunk-000").mkdir(parents=True)
    both = np.concatenate([r.frames(key, 0), r.frames(key, 1)])
    video.encode(root / f"videos/{key}/chunk-000/file-000.mp4", both, 10)
    rows = []
    for e, ep in enumerate(r.episodes):
        row = dict(ep)
        row.update({"data/file_index": 0, f"videos/{key}/file_index": 0, "meta/episodes/file_index": 0,
                    f"videos/{key}/from_timestamp": 0.5 * e, f"videos/{key}/to_timestamp": 0.5 * e + ep["length"] / 10})
        rows.append(row)
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    packed = DatasetReader(root)
    np.testing.assert_array_equal(packed.episode_columns(1)["observation.state"], r.episode_columns(1)["observation.state"])
    frames = packed.frames(key, 1)
    assert len(frames) == 4 and np.abs(frames.astype(int) - r.frames(key, 1)).mean() < 3
    assert edit.check(root) == []


def test_episode_rows_without_stats_are_the_other_columns_of_every_episode(writer):
    from vla_demo.data.reader import read_episode_rows

    for e, length in enumerate((5, 4, 6)):
        record(writer, length, episode=e)
    full, lean = read_episode_rows(writer.root), read_episode_rows(writer.root, stats=False)
    assert [r["episode_index"] for r in lean] == [0, 1, 2] and [r["length"] for r in lean] == [5, 4, 6]
    assert any(c.startswith("stats/") for c in full[0]) and not any(c.startswith("stats/") for c in lean[0])
    assert lean == [{k: v for k, v in r.items() if not k.startswith("stats/")} for r in full]
    assert DatasetReader(writer.root).episodes == lean  # the reader needs no stats columns
    assert read_episode_rows(writer.root, 2, stats=False) == lean[:2]
