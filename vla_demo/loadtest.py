"""``python -m vla_demo loadtest``: N simulated operators against a running app for M minutes.

Each operator is its own ``gradio_client`` session driving the page's events (see
:mod:`vla_demo.loadtest_operator`). The report gives, per session, the control rate achieved while
running (control steps per second, from the step counter in the status line streamed with every
frame), the rate the app itself reports, the 95th percentile of the time between streamed frames
while running, and the errors; and the app process's resident memory (``VmRSS`` of
``/proc/<pid>/status``) after a warm-up and at the end. ``--start-app`` launches ``python app.py``
on a free loopback port with a temporary data root (and knows its pid); otherwise give ``--url``
and, for the memory numbers, ``--pid``. ``VLA_DEMO_AUTH=user:password`` (or a file holding it) is
used to log in when set. The exit code is 0 when no operator saw an error, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from vla_demo.workers import free_port

MAX_SESSIONS = 16  # the app itself serves 8 sessions (AppContext.max_sessions); more are refused
MINUTES = (0.1, 60.0)
TARGET_CONTROL_HZ = 10.0  # the sim's control rate at speed 1 (the operators never change the speed)
REPORT_KEYS = ("url", "sessions", "minutes", "warmup_s", "target_control_hz", "per_session", "totals", "memory")
SESSION_KEYS = ("session", "frames", "frames_fetched", "control_hz", "app_control_hz", "p95_frame_interval_ms",
                "running_seconds", "episodes", "takeovers", "errors", "error_messages")
TOTAL_KEYS = ("frames", "errors", "min_control_hz", "median_control_hz", "max_p95_frame_interval_ms")
MEMORY_KEYS = ("pid", "rss_start_mb", "rss_after_warmup_mb", "rss_end_mb", "rss_peak_mb", "rss_growth_pct")
APP_PY = Path(__file__).resolve().parents[1] / "app.py"


# ----------------------------------------------------------------------------- arguments


def _bounded(kind, lo, hi):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {text}")
        return value
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``loadtest`` flags (shared by ``python -m vla_demo loadtest`` and :func:`main`)."""
    p.add_argument("--url", default="http://127.0.0.1:7860", help="the running app (ignored with --start-app)")
    p.add_argument("--sessions", type=_bounded(int, 1, MAX_SESSIONS), default=4,
                   help=f"simulated operators, 1..{MAX_SESSIONS} (the app serves at most 8)")
    p.add_argument("--minutes", type=_bounded(float, *MINUTES), default=1.0, help="test duration, 0.1..60")
    p.add_argument("--warmup", type=_bounded(float, 0.0, 600.0), default=None,
                   help="seconds before measuring (default: 20%% of the duration, at most 60)")
    p.add_argument("--start-app", action="store_true",
                   help="launch `python app.py` on a free loopback port with a temporary data root")
    p.add_argument("--policy", default="expert", help="with --start-app: the app's --policy (folder or expert)")
    p.add_argument("--camera-size", type=_bounded(int, 16, 512), default=128, help="with --start-app: the sim camera")
    p.add_argument("--pid", type=int, default=None, help="the app's process id, for its memory (--start-app knows it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the operators' choices")
    p.add_argument("--json", default=None, help="also write the report here")


# ----------------------------------------------------------------------------- the app's memory


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (``VmRSS`` of ``/proc/<pid>/status``)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read the memory of process {pid}: {e}") from None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"process {pid} reports no VmRSS")


class MemoryProbe:
    """Samples the app's RSS once a second in a thread; marks the value at the end of the warm-up."""

    def __init__(self, pid: int | None):
        self.pid, self.samples, self.after_warmup = pid, [], None
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="loadtest-rss", daemon=True)

    def start(self) -> MemoryProbe:
        if self.pid is not None:
            self.samples.append((0.0, rss_mb(self.pid)))
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.samples.append((time.monotonic() - self._t0, rss_mb(self.pid)))
            except ValueError:
                return

    def mark_warm(self) -> None:
        if self.pid is not None:
            self.after_warmup = rss_mb(self.pid)

    def stop(self) -> dict[str, Any] | None:
        if self.pid is None:
            return None
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            end = rss_mb(self.pid)
        except ValueError:  # the app is gone: the operators' errors say why
            end = None
        base = self.after_warmup or self.samples[0][1]
        values = [v for _, v in self.samples] + ([end] if end is not None else [])
        return {"pid": self.pid, "rss_start_mb": round(self.samples[0][1], 1),
                "rss_after_warmup_mb": round(base, 1), "rss_end_mb": None if end is None else round(end, 1),
                "rss_peak_mb": round(max(values), 1),
                "rss_growth_pct": None if end is None else round(100 * (end - base) / base, 2),
                "samples": [[round(t, 1), round(v, 1)] for t, v in self.samples[::10]]}


# ----------------------------------------------------------------------------- a launched app


def _default_sigint() -> None:
    """In the launched app, before exec: SIGINT back to its default. A load test started in the
    background of a shell (``... &``) inherits SIGINT ignored, and so would the app, which then
    never saw the Ctrl-C that :meth:`LaunchedApp.close` sends and was killed after the grace period."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class LaunchedApp:
    """``python app.py`` on a free loopback port with a temporary data root and Gradio cache."""

    def __init__(self, policy: str, camera_size: int):
        if not APP_PY.is_file():
            raise ValueError(f"--start-app needs {APP_PY} (run from a checkout of vla-demo)")
        self.root = Path(tempfile.mkdtemp(prefix="vla-loadtest-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "GRADIO_TEMP_DIR": str(self.root / "gradio-cache"), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(APP_PY.parent), os.environ.get("PYTHONPATH")]))}
        self.log_path = self.root / "app.log"
        args = [sys.executable, str(APP_PY), "--host", "127.0.0.1", "--port", str(self.port), "--policy", policy,
                "--data-root", str(self.root / "data"), "--camera-size", str(camera_size)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=APP_PY.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True,  # its own process group: our Ctrl-C is ours
                                         preexec_fn=_default_sigint)
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Until ``/health`` answers 200; RuntimeError with the app's log when it exits or hangs."""
        import httpx

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"app.py did not answer /health within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def cache_mb(self) -> float:
        """Size of the Gradio cache (one JPEG per streamed frame until ``delete_cache`` prunes it)."""
        files = (self.root / "gradio-cache").rglob("*")
        return round(sum(f.stat().st_size for f in files if f.is_file()) / 2**20, 1)

    def close(self, grace_s: float = 30.0) -> dict[str, Any]:
        """Ctrl-C (the app closes its sessions and exits), SIGKILL to its process group after ``grace_s``;
        the temporary root goes. Returns ``{"exit_s", "killed"}``: how the app went."""
        t0, killed = time.monotonic(), False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        out = {"exit_s": round(time.monotonic() - t0, 1), "killed": killed}
        if killed:  # what the app printed last says where it was stuck (the folder goes next)
            out["log_tail"] = self.log_tail(2000)
        shutil.rmtree(self.root, ignore_errors=True)
        return out


# ----------------------------------------------------------------------------- the run


def read_auth() -> tuple[str, str] | None:
    """``VLA_DEMO_AUTH=user:password`` or a file holding it (as ``app.py`` reads it)."""
    raw = os.environ.get("VLA_DEMO_AUTH", "").strip()
    if raw and os.path.isfile(raw):
        raw = Path(raw).read_text(encoding="utf-8").strip()
    if not raw:
        return None
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise ValueError("VLA_DEMO_AUTH must be 'user:password' (or a file holding that)")
    return user, password


def drive(url: str, sessions: int, seconds: float, warmup: float, pid: int | None, seed: int) -> dict[str, Any]:
    """Run the operators for ``seconds`` (statistics after ``warmup``) and return the report."""
    from tqdm import tqdm

    from vla_demo.loadtest_operator import Operator, percentile

    auth = read_auth()
    memory = MemoryProbe(pid).start()
    operators = []
    try:
        for i in range(sessions):
            try:
                operators.append(Operator(i, url, auth, seed * 1000 + i))
            except Exception as e:  # noqa: BLE001 - httpx, gradio_client and auth errors alike
                raise RuntimeError(f"cannot connect to {url}: {type(e).__name__}: {e}") from None
        start = time.monotonic()
        for op in operators:
            op.start()
        warm = False
        with tqdm(total=round(seconds), desc=f"loadtest x{sessions}",
                  bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]") as bar:
            while (elapsed := time.monotonic() - start) < seconds:
                if not warm and elapsed >= warmup:
                    warm = True
                    memory.mark_warm()
                    for op in operators:
                        op.log.measure_from = time.perf_counter()
                time.sleep(min(1.0, seconds - elapsed))
                bar.n = min(round(time.monotonic() - start), bar.total)
                bar.set_postfix(frames=sum(op.log.frames for op in operators),
                                errors=sum(op.error_count for op in operators), refresh=False)
                bar.refresh()
        mem = memory.stop()
    finally:
        for op in operators:
            op.stop()
    rows = [op.report() for op in operators]
    hz = [r["control_hz"] for r in rows if r["control_hz"] is not None]
    p95 = [r["p95_frame_interval_ms"] for r in rows if r["p95_frame_interval_ms"] is not None]
    totals = {"frames": sum(r["frames"] for r in rows), "errors": sum(r["errors"] for r in rows),
              "min_control_hz": min(hz) if hz else None, "median_control_hz": percentile(hz, 50),
              "max_p95_frame_interval_ms": max(p95) if p95 else None}
    return {"url": url, "sessions": sessions, "minutes": round(seconds / 60, 3), "warmup_s": warmup,
            "target_control_hz": TARGET_CONTROL_HZ, "per_session": rows, "totals": totals, "memory": mem}


def _f(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(report: dict[str, Any]) -> str:
    """The report as a markdown table plus a totals and a memory line."""
    lines = ["| session | frames | fetched | control Hz | app Hz | p95 frame interval ms | episodes | takeovers "
             "| errors |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["per_session"]:
        lines.append(f"| {r['session']} | {r['frames']} | {r['frames_fetched']} | {_f(r['control_hz'])} | "
                     f"{_f(r['app_control_hz'])} | {_f(r['p95_frame_interval_ms'], 0)} | {r['episodes']} | "
                     f"{r['takeovers']} | {r['errors']} |")
    t = report["totals"]
    lines.append(f"\n{report['sessions']} sessions x {report['minutes']} min (warm-up {report['warmup_s']:.0f} s, "
                 f"target {report['target_control_hz']:.0f} Hz): control Hz min {_f(t['min_control_hz'])} / median "
                 f"{_f(t['median_control_hz'])}, worst p95 frame interval {_f(t['max_p95_frame_interval_ms'], 0)} ms, "
                 f"{t['errors']} errors")
    m = report["memory"]
    if m:
        lines.append(f"app RSS (pid {m['pid']}): {m['rss_start_mb']} MB at start, {m['rss_after_warmup_mb']} MB after "
                     f"warm-up, {_f(m['rss_end_mb'])} MB at the end (peak {m['rss_peak_mb']} MB): "
                     f"{_f(m['rss_growth_pct'], 2)}% growth after warm-up")
    if report.get("cache_mb") is not None:
        lines.append(f"Gradio frame cache at the end: {report['cache_mb']} MB")
    if report.get("app_exit"):
        e = report["app_exit"]
        lines.append(f"the launched app {'had to be killed' if e['killed'] else 'exited on Ctrl-C'} "
                     f"after {e['exit_s']} s")
    for r in report["per_session"]:
        for msg in r["error_messages"]:
            lines.append(f"session {r['session']} error: {msg}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the load test from parsed arguments; prints the table, writes ``--json``; 0 if no errors."""
    seconds = 60 * args.minutes
    warmup = min(60.0, 0.2 * seconds) if args.warmup is None else args.warmup
    if warmup >= seconds:
        raise ValueError(f"--warmup ({warmup:.0f} s) must be shorter than the test ({seconds:.0f} s)")
    app = None
    try:
        if args.start_app:
            app = LaunchedApp(args.policy, args.camera_size)
            app.wait_ready()
        url, pid = (app.url, app.pid) if app else (args.url, args.pid)
        report = drive(url, args.sessions, seconds, warmup, pid, args.seed)
        if app:
            report["cache_mb"] = app.cache_mb()
            report["policy"] = args.policy
            report["app_exit"] = app.close()
            app = None
    finally:
        if app:
            app.close()
    print(table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if report["totals"]["errors"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m vla_demo.loadtest ...`` (the same flags as the ``loadtest`` verb)."""
    parser = argparse.ArgumentParser(prog="python -m vla_demo loadtest", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
