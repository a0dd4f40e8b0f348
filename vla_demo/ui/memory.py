"""Keep the app's resident memory flat while many sessions stream (glibc malloc arenas).

Gradio runs every handler and frame of every session in a pool of worker threads, and glibc gives
threads their own malloc arenas (up to 8 per core). Frames and observations are large, short-lived
numpy buffers allocated in one thread and freed in another, so freed memory stays scattered over
many arenas and the process's RSS kept growing under the load test (4 sessions: +24% in the 96 s
after a 24 s warm-up, still rising). With two arenas it stayed within about 5%. This is what
``MALLOC_ARENA_MAX=2`` does, applied from inside the process so every way of starting the app gets it.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_ARENA_MAX = -8  # mallopt parameter number in glibc's malloc.h
DEFAULT_ARENAS = 2


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads created from now on; returns whether it applied.

    A no-op (False) off Linux/glibc and when ``MALLOC_ARENA_MAX`` is set (the operator's choice wins).
    """
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_ARENA_MAX, int(arenas)) == 1
