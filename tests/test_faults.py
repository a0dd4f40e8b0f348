"""Fault suite: what the app does when things go wrong, one test per fault, driven like a user would
(gradio_client against a real server; ``python app.py`` itself where the fault kills the process).

1. ``kill -9`` of the app while recording (and in the middle of a save): every saved episode is intact
   after a restart and the dataset passes ``check``.
2. A corrupt or mismatched checkpoint picked in the Fine-tune tab: a clear message, the running policy
   goes on; a checkpoint damaged while active falls back to the default on restart.
3. A fine-tune job that dies (SIGKILL, as the OOM killer would): the tab reports it, the stream goes on.
4. A full disk while recording: the save is refused with a message, the episode stays buffered, earlier
   episodes are intact, and the same buffer saves once there is room (a real tmpfs when this process may
   mount one, else a simulated ``ENOSPC``).
5. A client that disconnects mid-stream: its session (sim, episode buffer) is freed, others go on.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.app_process import REPO, AppProcess
from tests.serving import newest, serve, wait_for
from tests.ui.conftest import assets  # noqa: F401 (fixture: a tiny base checkpoint and a 'reach' dataset)
from vla_demo.data.edit import check
from vla_demo.data.reader import DatasetReader

pytestmark = pytest.mark.slow

REC = re.compile(r"REC (\d+) frames")
SAVED = re.compile(r"saved episode (\d+) \((\d+) frames")


# ----------------------------------------------------------------------------- helpers


def connect(url: str):
    """A client that leaves the live frames on the server: these tests read the status line only, and a
    client that downloads every frame can fall behind (see ``tests.serving.newest``)."""
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


def buffered(stream) -> int:
    """Frames in the session's episode buffer, as the newest live status line shows them."""
    update = newest(stream, 3)
    found = REC.search(update[1]) if update else None
    return int(found.group(1)) if found else -1


def start_recording(client, dataset: str, family: str = "pick"):
    """New scene, recording on, the live stream open and the policy running; returns the stream job."""
    assert "new scene" in client.predict(7, family, 3, "", api_name="/reset")
    assert "recording into" in client.predict(True, dataset, "op", api_name="/record_toggle")
    stream = client.submit(api_name="/live_stream")
    assert client.predict(api_name="/run") == "running"
    return stream


def save(client, dataset: str) -> tuple[int, int]:
    """Save through the Record tab; returns (episode index, frames)."""
    msg, _, _ = client.predict("success", dataset, "op", api_name="/record_save")
    found = SAVED.search(msg)
    assert found, msg
    return int(found.group(1)), int(found.group(2))


def lengths(root: Path) -> list[int]:
    reader = DatasetReader(root)
    return [reader.episode(e)["length"] for e in range(reader.num_episodes)]


def started_saving(root: Path, e: int) -> bool:
    """Any file of episode ``e`` (a temp file of its save, or the committed one) exists."""
    return any(root.glob(f"data/*/*file-{e:03d}*")) or any(root.glob(f"videos/*/*/*file-{e:03d}*"))


# ----------------------------------------------------------------------------- 1. kill -9


def test_kill_9_during_recording_keeps_every_saved_episode(tmp_path, tiny_policy_dir, record_property):
    root = tmp_path / "data"
    ds = root / "datasets" / "faults"
    saved: dict[int, int] = {}
    with AppProcess(root, tmp_path / "app1.log", policy=tiny_policy_dir) as app:
        app.wait_ready()
        client = connect(app.url)
        stream = start_recording(client, "faults")
        for _ in range(2):
            assert wait_for(lambda: buffered(stream) >= 4, 120)
            index, frames = save(client, "faults")
            saved[index] = frames
        assert wait_for(lambda: buffered(stream) >= 3, 120)  # an unsaved episode in the buffer...
        assert app.kill() == -signal.SIGKILL  # ...when the process dies
        client.close()
    assert sorted(saved) == [0, 1]
    assert check(ds) == []  # a kill between saves leaves nothing to repair
    assert lengths(ds) == [saved[0], saved[1]]
    rows = [DatasetReader(ds).episode(e) for e in saved]
    assert all(r["success"] is True and r["operator"] == "op" and r["source"] == "policy" for r in rows)

    with AppProcess(root, tmp_path / "app2.log", policy=tiny_policy_dir) as app:
        app.wait_ready()
        client = connect(app.url)
        stream = start_recording(client, "faults")
        assert wait_for(lambda: buffered(stream) >= 3, 120)
        index, frames = save(client, "faults")  # the restarted app appends (the dead process's lock is gone)
        assert index == 2 and check(ds) == []
        saved[index] = frames
        assert wait_for(lambda: buffered(stream) >= 15, 120)
        client.submit("success", "faults", "op", api_name="/record_save")
        assert wait_for(lambda: started_saving(ds, 3), 60, period=0.002)
        app.kill()  # in the middle of that save (or just after it, on a fast disk)
        client.close()
    # At most what the dead save left: its files (set aside on reopen), or, if the kill hit its commit,
    # a task counted ahead of info.json (repaired on reopen).
    problems = check(ds)
    record_property("left_by_the_killed_save", {"episodes": len(lengths(ds)), "problems": problems,
                                                "files": sorted(p.name for p in ds.glob("*/*/*file-003*"))})
    assert all("orphan file" in p or p.startswith("total_tasks") for p in problems), problems
    assert lengths(ds)[:3] == [saved[0], saved[1], saved[2]]

    with AppProcess(root, tmp_path / "app3.log", policy=tiny_policy_dir) as app:
        app.wait_ready()
        client = connect(app.url)
        stream = start_recording(client, "faults")
        assert wait_for(lambda: buffered(stream) >= 2, 120)
        index, frames = save(client, "faults")
        client.close()
    assert index in (3, 4) and check(ds) == []
    assert not list(ds.glob("*/*/.*file-*")), "temp files of the killed save survive the reopen"
    assert lengths(ds)[:3] == [saved[0], saved[1], saved[2]] and lengths(ds)[-1] == frames


def test_a_commit_killed_before_info_json_is_repaired_on_reopen(tmp_path):
    """The narrowest kill window of fault 1: tasks.parquet and stats.json of a new episode written,
    info.json (the commit point) not."""
    from tests.data.test_writer import SIZE, record
    from vla_demo.data import format as fmt
    from vla_demo.data.writer import DatasetWriter, write_tasks

    root = tmp_path / "ds"
    w = DatasetWriter.open(root, fmt.sim_features(SIZE), fps=10)
    record(w, 4)
    committed_stats = (root / fmt.STATS_PATH).read_text()
    w.close()
    write_tasks(root, {"pick up the red cube": 0, "a task of the episode that never landed": 1})
    stats = json.loads(committed_stats)
    stats["frame_index"]["count"] = [9]
    (root / fmt.STATS_PATH).write_text(json.dumps(stats))
    assert any("total_tasks" in p for p in check(root))
    w = DatasetWriter.open(root)
    assert check(root) == [] and w.num_episodes == 1
    assert json.loads((root / fmt.STATS_PATH).read_text())["frame_index"]["count"] == [4]
    assert record(w, 2, episode=1) == 1 and check(root) == []
    w.close()


# ----------------------------------------------------------------------------- 2. bad checkpoints


def _version(registry, source: Path, damage) -> str:
    name = registry.add_version(source, "default", {}, "fault-test")
    damage(registry.path_of(name))
    return name


def _truncate_weights(path: Path) -> None:
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])


def _wider_config(path: Path) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg["model"]["d_model"] *= 2
    (path / "config.json").write_text(json.dumps(cfg))


def test_corrupt_or_mismatched_checkpoint_keeps_the_running_policy(tmp_path, tiny_policy_dir):
    from vla_demo.ui.app import make_context

    ctx = make_context(str(tiny_policy_dir), tmp_path / "data", camera_size=64, display_size=128)
    reg = ctx.registry
    bad = {
        _version(reg, tiny_policy_dir, _truncate_weights): "corrupt weights file",
        _version(reg, tiny_policy_dir, _wider_config): "does not match its config.json",
        _version(reg, tiny_policy_dir, lambda p: (p / "config.json").write_text("{")): "corrupt",
        _version(reg, tiny_policy_dir, lambda p: (p / "tokenizer.json").unlink()): "no tokenizer file",
    }
    good = _version(reg, tiny_policy_dir, lambda p: None)
    demo, url = serve(ctx)
    client = connect(url)
    try:
        assert "on default" in client.predict(3, "reach", 2, "", api_name="/reset")
        stream = client.submit(api_name="/live_stream")
        assert wait_for(lambda: len(ctx.sessions) == 1)
        session = next(iter(ctx.sessions.values()))
        running = session.policy
        for name, why in bad.items():
            note, table = client.predict(name, api_name="/policy_activate")
            assert "Not activated" in note and why in note and "`default` keeps running" in note, note
            assert reg.active == "default" and "default (active)" in [r[0] for r in table["data"]]
            t = session._t
            assert client.predict(api_name="/step") == "one step"
            assert wait_for(lambda t=t: session._t == t + 1), "the running policy must keep stepping"
            assert session.policy is running and session.version == "default"
        n = len(stream.outputs())
        assert wait_for(lambda: len(stream.outputs()) > n + 2)  # the feed never stopped
        assert "`" + good + "` is active" in client.predict(good, api_name="/policy_activate")[0]
        assert f"on {good}" in client.predict(3, "reach", 2, "", api_name="/reset")
        stream.cancel()
    finally:
        client.close()
        ctx.close()
        demo.close()
    _truncate_weights(reg.path_of(good))  # damaged on disk while it is the active version
    again = make_context(str(tiny_policy_dir), tmp_path / "data", camera_size=64, display_size=128, jobs=False)
    try:
        assert again.registry.active == "default"
        assert f"policy version '{good}' cannot be loaded" in again.registry.warning
        assert "on default" in again.session("tab").reset(seed=1, family="reach")
    finally:
        again.close()


# ----------------------------------------------------------------------------- 3. fine-tune crash


def _job_pid(ctx, job_id: str) -> int:
    """The OS pid of a running job's child process (the manager keeps it on the job)."""
    process = ctx.jobs._jobs[job_id].process
    assert process is not None and process.pid
    return process.pid


def test_crashed_finetune_is_reported_and_the_stream_goes_on(tmp_path, assets):  # noqa: F811
    from vla_demo.ui import finetune_tab
    from vla_demo.ui.app import make_context

    base, tiny = assets
    root = tmp_path / "data"
    (root / "datasets").mkdir(parents=True)
    os.symlink(tiny, root / "datasets" / "tiny")
    ctx = make_context(str(base), root, camera_size=64, display_size=128)
    demo, url = serve(ctx)
    client = connect(url)
    try:
        assert "new scene" in client.predict(4, "reach", 2, "", api_name="/reset")
        stream = client.submit(api_name="/live_stream")
        note = client.predict(["tiny"], 50_000, finetune_tab.ACTIVE, 0, api_name="/finetune_start")
        job_id = re.search(r"Queued `([^`]+)`", note).group(1)
        def training() -> bool:
            st = ctx.jobs.status(job_id)
            return st["phase"] == "train" and st["step"] >= 1

        assert wait_for(training, 300), ctx.jobs.status(job_id)
        os.kill(_job_pid(ctx, job_id), signal.SIGKILL)
        assert wait_for(lambda: ctx.jobs.status(job_id)["state"] == "failed", 60), ctx.jobs.status(job_id)
        assert "the job process died (exit code -9)" in ctx.jobs.status(job_id)["message"]
        _, progress, _, result, _, _, _ = finetune_tab.poll(ctx, {"job": job_id})  # what the tab's timer shows
        assert ">failed<" in progress and "exit code -9" in progress and result == ""
        assert "has already ended (failed)" in client.predict(api_name="/finetune_cancel")
        assert ctx.registry.names() == ["expert", "default"] and ctx.registry.active == "default"
        n = len(stream.outputs())
        assert wait_for(lambda: len(stream.outputs()) > n + 2)  # the feed kept going through the crash
        session = next(iter(ctx.sessions.values()))
        assert client.predict(api_name="/run") == "running"
        t = session._t
        assert wait_for(lambda: session._t >= t + 3)
        stream.cancel()
    finally:
        client.close()
        ctx.close()
        demo.close()


# ----------------------------------------------------------------------------- 4. full disk


class TmpfsDisk:
    """A real, small filesystem (tmpfs) that :meth:`fill` fills to the last byte."""

    kind = "tmpfs"

    def __init__(self, mountpoint: Path, size: str = "16m"):
        mountpoint.mkdir(parents=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(done.stderr.strip() or "mount failed")
        self.root = mountpoint

    def fill(self) -> None:
        chunk = b"\0" * 65536
        fd = os.open(self.root / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while True:
                os.write(fd, chunk)  # a partial write takes the last bytes, the next one fails
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)
        st = os.statvfs(self.root)
        assert st.f_bavail * st.f_frsize < len(chunk)

    def free(self) -> None:
        (self.root / "filler").unlink()

    def close(self) -> None:
        subprocess.run(["umount", str(self.root)], capture_output=True)
        if os.path.ismount(self.root):
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True)


class SimulatedDisk:
    """No permission to mount: every durable write under the root fails with ENOSPC while "full"."""

    kind = "simulated (monkeypatched atomic_write)"

    def __init__(self, root: Path, monkeypatch):
        from vla_demo.data import format as fmt

        root.mkdir(parents=True)
        self.root, self.full = root, False
        real = fmt.atomic_write

        def atomic_write(path, write):
            if self.full and Path(path).resolve().is_relative_to(self.root.resolve()):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, write)

        monkeypatch.setattr(fmt, "atomic_write", atomic_write)

    def fill(self) -> None:
        self.full = True

    def free(self) -> None:
        self.full = False

    def close(self) -> None:
        pass


@pytest.fixture
def small_disk(tmp_path, monkeypatch, record_property):
    try:
        disk = TmpfsDisk(tmp_path / "disk")
    except OSError as e:
        print(f"cannot mount a tmpfs ({e}); simulating the full disk")
        disk = SimulatedDisk(tmp_path / "sim-disk", monkeypatch)
    record_property("disk", disk.kind)
    yield disk
    from vla_demo.data.writer import DatasetWriter

    for writer in list(DatasetWriter._registry.values()):
        if writer.root.is_relative_to(disk.root.resolve()):
            writer.close()  # its lock file keeps the mount busy
    disk.close()


def test_full_disk_during_recording_keeps_earlier_data_and_the_buffer(small_disk, tiny_policy_dir, monkeypatch):
    from vla_demo.data import format as fmt
    from vla_demo.ui.app import make_context

    ctx = make_context(str(tiny_policy_dir), small_disk.root / "data", camera_size=64, display_size=128)
    ds = small_disk.root / "data" / "datasets" / "full"
    demo, url = serve(ctx)
    client = connect(url)
    try:
        stream = start_recording(client, "full")
        assert wait_for(lambda: buffered(stream) >= 4, 120)
        first = save(client, "full")
        assert first[0] == 0
        client.predict("push the blue ball left", api_name="/set_instruction")  # a new task for the next episode
        assert wait_for(lambda: buffered(stream) >= 4, 120)
        client.predict(api_name="/pause")
        session = next(iter(ctx.sessions.values()))
        held = session.unsaved_frames()

        small_disk.fill()
        msg, summary, _ = client.predict("success", "full", "op", api_name="/record_save")
        assert "episode NOT saved (it is still buffered, try again)" in msg and "No space left on device" in msg, msg
        assert "earlier episodes are intact" in msg and "1 episodes" in summary
        assert session.unsaved_frames() == held and check(ds) == [] and lengths(ds) == [first[1]]
        n = len(stream.outputs())
        assert wait_for(lambda: len(stream.outputs()) > n + 2)  # the live feed is unaffected
        small_disk.free()
        assert save(client, "full") == (1, held) and check(ds) == []

        # The disk fills up exactly at the commit point (info.json), after a new task was written.
        client.predict("stack the red cube on the blue cube", api_name="/set_instruction")
        assert client.predict(api_name="/run") == "running"
        assert wait_for(lambda: buffered(stream) >= 3, 120)
        client.predict(api_name="/pause")
        held = session.unsaved_frames()
        real = fmt.write_json

        def info_fails(path, obj):
            if Path(path).name == "info.json":
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, obj)

        monkeypatch.setattr(fmt, "write_json", info_fails)
        msg = client.predict("success", "full", "op", api_name="/record_save")[0]
        assert "episode NOT saved" in msg and session.unsaved_frames() == held
        # (before the writer rolled tasks.parquet back: "total_tasks 2 but tasks.parquet has 3")
        assert check(ds) == [] and len(lengths(ds)) == 2
        monkeypatch.setattr(fmt, "write_json", real)
        assert save(client, "full") == (2, held) and check(ds) == []
        stream.cancel()
    finally:
        client.close()
        ctx.close()
        demo.close()


# ----------------------------------------------------------------------------- 5. disconnect


CLIENT_SCRIPT = """
import sys, threading
from gradio_client import Client
c = Client({url!r}, verbose=False)
c.predict(5, "reach", 2, "", api_name="/reset")
c.predict(True, "gone", "op", api_name="/record_toggle")
job = c.submit(api_name="/live_stream")
c.predict(api_name="/run")
while len(job.outputs()) < 3:
    threading.Event().wait(0.05)
print("streaming", c.session_hash, flush=True)
threading.Event().wait()  # until killed
"""


def test_client_that_disconnects_mid_stream_frees_its_session(tiny_policy_dir, tmp_path, monkeypatch):
    from vla_demo.ui.app import make_context

    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "1")  # as app.py sets it (5 s), shorter for the test
    ctx = make_context(str(tiny_policy_dir), tmp_path / "data", camera_size=64, display_size=128)
    demo, url = serve(ctx)
    stayer = connect(url)
    leaver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CLIENT_SCRIPT.format(url=url))], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert "new scene" in stayer.predict(6, "reach", 2, "", api_name="/reset")
        stream = stayer.submit(api_name="/live_stream")
        line = leaver.stdout.readline()  # waits on the child's event, not on time
        assert line.startswith("streaming"), line
        gone_hash = line.split()[1]
        assert wait_for(lambda: set(ctx.sessions) == {gone_hash, stayer.session_hash})
        gone = ctx.sessions[gone_hash]
        assert wait_for(lambda: gone.unsaved_frames() > 0)  # it was mid-episode, recording
        leaver.send_signal(signal.SIGKILL)
        leaver.wait(timeout=30)
        assert wait_for(lambda: gone_hash not in ctx.sessions, 60), "the dead client's session was not freed"
        assert gone.closed and gone.unsaved_frames() == 0
        assert set(ctx.sessions) == {stayer.session_hash}
        n = len(stream.outputs())
        assert wait_for(lambda: len(stream.outputs()) > n + 2)  # the other operator is unaffected
        stream.cancel()
        stayer.close()
        assert wait_for(lambda: not ctx.sessions, 60)  # a client that closes properly is freed too
    finally:
        if leaver.poll() is None:
            leaver.kill()
            leaver.wait(timeout=30)
        stayer.close()
        ctx.close()
        demo.close()
