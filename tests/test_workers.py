"""Worker processes end with their parent (vla_demo/workers.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.app_process import REPO
from tests.serving import wait_for

# Starts a one-process pool, prints the worker's pid once the worker is busy, then blocks: the test
# kills it the way the app's job manager (terminate) or the OOM killer (SIGKILL) would.
OWNER = textwrap.dedent("""
    import os, sys, time
    from vla_demo.workers import process_pool

    if __name__ == "__main__":
        pool = process_pool(1)
        worker = pool.submit(os.getpid).result()
        pool.submit(time.sleep, 600)
        print(worker, flush=True)
        sys.stdin.read()
""")


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (a container's init may not reap re-parented children)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_pool_workers_end_when_their_owner_is_killed(tmp_path):
    script = tmp_path / "owner.py"
    script.write_text(OWNER, encoding="utf-8")
    for sig in (signal.SIGKILL, signal.SIGTERM):
        owner = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, env=_env(), cwd=tmp_path)
        try:
            worker = int(owner.stdout.readline())
            assert worker != owner.pid and not _gone(worker), "the pool's worker runs beside its owner"
            owner.send_signal(sig)
            owner.wait(timeout=30)
            assert wait_for(lambda w=worker: _gone(w), timeout=30), f"worker {worker} outlived its owner ({sig.name})"
        finally:
            owner.kill()
            owner.wait()


def test_exit_with_parent_ends_a_process_whose_parent_already_changed():
    code = "from vla_demo.workers import exit_with_parent; exit_with_parent(1); print('still here')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    assert done.returncode == 1 and "still here" not in done.stdout


def test_exit_with_parent_keeps_a_process_whose_parent_lives():
    code = "import os; from vla_demo.workers import exit_with_parent; exit_with_parent(os.getppid()); print('still here')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    assert done.returncode == 0 and "still here" in done.stdout
