"""Helpers for tests that run the app on a real loopback server."""

from __future__ import annotations

import time

from vla_demo.workers import free_port


def wait_for(pred, timeout: float = 60.0, period: float = 0.05) -> bool:
    """Poll ``pred`` until it holds or ``timeout`` seconds pass (tests wait on state, never on sleeps)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(period)
    return False


def newest(job, width: int):
    """The newest update of a streaming gradio_client ``job`` with all ``width`` outputs, or None.

    gradio_client records ``[exception]`` in place of an update whose files it could not download: a
    client that fetches every live frame can fall behind a busy server, which deletes a frame file 64
    frames after writing it (``vla_demo/ui/frames.py``), and gets a 404."""
    for output in reversed(job.outputs()):
        if isinstance(output, (tuple, list)) and len(output) == width and not isinstance(output[0], Exception):
            return output
    return None


def serve(ctx):
    """Build and launch the page for ``ctx`` on a free loopback port; returns (demo, url)."""
    from vla_demo.ui.layout import build_demo, launch_kwargs

    demo = build_demo(ctx)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs(ctx))
    return demo, f"http://127.0.0.1:{port}/"
