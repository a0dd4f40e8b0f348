"""Run the real ``python app.py`` in a child process on a free loopback port (health, auth and
fault tests): the same entry point, flags and launch settings a user gets, killable with any signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.serving import free_port, wait_for

REPO = Path(__file__).resolve().parents[1]


class AppProcess:
    """``python app.py --host 127.0.0.1 --port <free> --data-root <root> ...``; output goes to a log file.

    Args:
        data_root: the app's ``--data-root``.
        policy: ``--policy`` (a checkpoint folder or ``expert``).
        auth: ``user:password`` for ``VLA_DEMO_AUTH`` (None: unset).
        log: where the app's stdout and stderr go.
    """

    def __init__(self, data_root: Path, log: Path, policy: str = "expert", auth: str | None = None,
                 camera_size: int = 64):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = Path(log)
        env = {k: v for k, v in os.environ.items() if k != "VLA_DEMO_AUTH"}
        if auth is not None:
            env["VLA_DEMO_AUTH"] = auth
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        args = [sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(self.port),
                "--policy", str(policy), "--data-root", str(data_root), "--camera-size", str(camera_size)]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def health(self):
        """The ``/health`` response, or None while nothing listens."""
        import httpx

        try:
            return httpx.get(self.url + "health", timeout=5)
        except httpx.HTTPError:
            return None

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Wait until ``/health`` answers 200 (fails at once, with the log, if the process exits)."""
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"app.py exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            r = self.health()
            return r is not None and r.status_code == 200

        assert wait_for(up, timeout=timeout, period=0.25), f"app.py not ready after {timeout} s:\n{self.log()[-3000:]}"

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` and wait for the exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def stop(self) -> None:
        """Ctrl-C (app.py closes its sessions and jobs), then SIGKILL if it does not go within 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> AppProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
