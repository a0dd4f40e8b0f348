"""Worker processes that end with the process that started them.

Evaluation and collection fan episodes out to a ``spawn`` process pool. When the pool's owner is
killed without running its cleanup (the app terminates a cancelled evaluation job after its grace
period; a user's ``kill``; an out-of-memory kill), the pool's workers are re-parented and wait on
their task queue for ever: measured on 2026-12-04, two evaluation workers left by a terminated
process were still alive half an hour later, ~370 MB resident each. Every worker started here runs
a watchdog thread that exits the worker once its parent has gone (its parent process id changes).
A job process of the app runs the same watchdog, so a killed app leaves no training behind either.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PARENT_POLL_S = 0.5


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A ``spawn`` pool of ``workers`` processes, each ending itself when this process is gone."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(),))


def exit_with_parent(parent_pid: int, poll_s: float = PARENT_POLL_S) -> threading.Thread:
    """Start a daemon thread that ends this process (exit code 1, no cleanup: the parent that would
    collect its results is gone) once its parent is no longer ``parent_pid``."""
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def free_port() -> int:
    """A loopback TCP port free right now, for a process this one starts to listen on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
