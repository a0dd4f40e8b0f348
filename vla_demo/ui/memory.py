"""Keep the app's resident memory flat while many sessions stream for hours (glibc malloc settings).

Gradio runs every handler and frame of every session in a pool of worker threads, and glibc gives
threads their own malloc arenas (up to 8 per core). Frames and observations are large, short-lived
numpy buffers allocated in one thread and freed in another, so freed memory stays scattered over
many arenas and the process's RSS kept growing under the load test (4 sessions: +24% in the 96 s
after a 24 s warm-up, still rising). With two arenas it stayed within about 5%. This is what
``MALLOC_ARENA_MAX=2`` does, applied from inside the process so every way of starting the app gets it.

For long runs, :class:`MallocTrimmer` calls ``malloc_trim(0)`` every 30 s, which returns the
heap's free pages to the system (25-60 MB each time in a 4-session load test). A fixed mmap
threshold (so that 442 KB frames always come from ``mmap`` and go back on free) was tried and
dropped: it made a live-loop step 35% slower (ten times the page faults).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading

M_ARENA_MAX = -8  # mallopt parameter number in glibc's malloc.h
DEFAULT_ARENAS = 2
TRIM_INTERVAL_S = 30.0


@functools.lru_cache(maxsize=1)  # loaded once, shared by the arena cap and the trimmer
def _libc():
    """glibc's ``libc.so.6`` on Linux, else None (musl and other C libraries have no mallopt)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads created from now on; returns whether it applied.

    A no-op (False) off Linux/glibc and when ``MALLOC_ARENA_MAX`` is set (the operator's choice wins).
    """
    libc = _libc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return libc.mallopt(M_ARENA_MAX, int(arenas)) == 1


class MallocTrimmer:
    """A daemon thread calling ``malloc_trim(0)`` every ``interval_s`` seconds until :meth:`stop`.

    :meth:`start` returns False (and starts nothing) where there is no glibc.
    """

    def __init__(self, interval_s: float = TRIM_INTERVAL_S):
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = interval_s
        self.trims = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._libc = _libc()

    def start(self) -> bool:
        if self._libc is None:
            return False
        self._thread = threading.Thread(target=self._run, name="malloc-trim", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._libc.malloc_trim(0)
            self.trims += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
