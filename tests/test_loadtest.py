"""``python -m vla_demo loadtest``: the report from a real app on loopback, the timing log and the
memory reading it is built from, and its refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vla_demo import loadtest
from vla_demo.loadtest_operator import FrameLog


def status(state: str, step: int, hz: float = 9.5) -> str:
    return f"{state} | mode policy | step {step} | control {hz:.1f} Hz (target 10) | display 30 fps | policy 1.0 ms | v1 | "


def test_frame_log_counts_steps_and_intervals_while_running_only():
    log = FrameLog()
    log.measure_from = float("-inf")
    image = {"url": "http://x/gradio_api/file=/tmp/a.jpeg"}
    for state, step in [("paused", 0), ("running", 0), ("running", 1), ("running", 3), ("running", 0),  # reset
                        ("running", 1), ("paused", 1), ("paused", 1)]:
        log.on_output(image, status(state, step), None, None)
    log.on_output(image, "not a status line", None, None)
    s = log.summary()
    assert s["frames"] == 9 and log.latest_url == image["url"] and log.new_frame.is_set()
    assert log.steps == 4  # 0->1->3, then 0->1 after the reset (3->0 is not counted)
    assert len(log.intervals_ms) == 4 and s["p95_frame_interval_ms"] is not None
    assert s["app_control_hz"] == 9.5 and s["control_hz"] > 0


def test_frame_log_ignores_frames_before_the_warm_up_ends():
    log = FrameLog()
    for step in range(5):
        log.on_output({"url": "u"}, status("running", step), None, None)
    assert log.frames == 5 and log.steps == 0 and log.summary()["control_hz"] is None


def test_rss_reads_proc_status():
    assert loadtest.rss_mb(os.getpid()) > 1
    with pytest.raises(ValueError, match="cannot read the memory"):
        loadtest.rss_mb(2**22 + 1)  # above pid_max's ceiling: no such process


@pytest.mark.parametrize("argv, message", [
    (["--sessions", "0"], "must be in 1..16"),
    (["--sessions", "17"], "must be in 1..16"),
    (["--minutes", "0.05"], "must be in 0.1..60"),
    (["--minutes", "61"], "must be in 0.1..60"),
    (["--minutes", "lots"], "expected a number"),
], ids=["no-sessions", "too-many-sessions", "too-short", "too-long", "not-a-number"])
def test_flags_out_of_range_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        loadtest.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_no_app_at_the_url_is_a_clear_error(capsys):
    from tests.serving import free_port

    url = f"http://127.0.0.1:{free_port()}/"
    assert loadtest.main(["--url", url, "--sessions", "1", "--minutes", "0.1"]) == 2
    assert f"error: cannot connect to {url}" in capsys.readouterr().err


def test_warm_up_must_end_before_the_test(capsys):
    assert loadtest.main(["--minutes", "0.1", "--warmup", "6"]) == 2
    assert "must be shorter than the test" in capsys.readouterr().err


@pytest.mark.slow
def test_two_operators_against_a_launched_app(tmp_path, tiny_policy_dir, capsys):
    out = tmp_path / "report.json"
    rc = loadtest.main(["--start-app", "--policy", str(tiny_policy_dir), "--camera-size", "64", "--sessions", "2",
                        "--minutes", "0.2", "--json", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert rc == 0, printed
    assert set(loadtest.REPORT_KEYS) <= set(report) and report["sessions"] == 2
    assert set(loadtest.TOTAL_KEYS) <= set(report["totals"]) and report["totals"]["errors"] == 0
    assert len(report["per_session"]) == 2
    for row in report["per_session"]:
        assert set(loadtest.SESSION_KEYS) <= set(row)
        assert row["errors"] == 0 and row["error_messages"] == []
        assert row["frames"] > 0 and row["frames_fetched"] > 0 and row["episodes"] >= 1
    assert any(row["control_hz"] for row in report["per_session"])  # some steps were timed while running
    memory = report["memory"]
    assert set(loadtest.MEMORY_KEYS) <= set(memory) and memory["rss_end_mb"] > 0
    assert "| session | frames |" in printed and "app RSS" in printed
    assert not Path(f"/proc/{memory['pid']}").exists()  # the launched app was stopped and reaped
    assert report["app_exit"]["killed"] is False  # it went on Ctrl-C, with its sessions closed


def test_the_launched_app_answers_ctrl_c_even_from_a_background_shell():
    """A shell's background job inherits SIGINT ignored; the app it launches must not."""
    import signal
    import subprocess
    import sys

    from vla_demo.loadtest import _default_sigint

    code = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        inherited = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
        restored = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                                  preexec_fn=_default_sigint).stdout
    finally:
        signal.signal(signal.SIGINT, old)
    assert inherited.strip() == "False" and restored.strip() == "True"
