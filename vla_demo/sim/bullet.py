"""Private PyBullet clients, created quietly.

PyBullet's C code prints its build time on import (to stderr) and ``argv[0]=`` on every
connection (to stdout), which would litter CLI output and machine-readable pipes. Both are
silenced by pointing file descriptors 1 and 2 at /dev/null for the duration of the call.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys


def _flush_c_stdio() -> None:
    """Flush C-level stdio buffers (PyBullet writes through printf, which buffers in a pipe)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def _quiet_fds(fds=(1, 2)):
    """Point the given file descriptors at /dev/null for the duration of the block."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(fd) for fd in fds]
    except (OSError, ValueError):  # no real descriptors (some embedded runners): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            for fd in fds:
                os.dup2(devnull.fileno(), fd)
            yield
            _flush_c_stdio()
    finally:
        for fd, copy in zip(fds, saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def connect():
    """A new PyBullet DIRECT client (its own physics world, independent of all others)."""
    with _quiet_fds():
        import pybullet as p
        from pybullet_utils import bullet_client

        return bullet_client.BulletClient(connection_mode=p.DIRECT)
