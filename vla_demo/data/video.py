"""Episode videos: AV1 through PyAV's bundled SVT-AV1 when available (LeRobot's default), else
H.264; yuv420p, a keyframe every 2 frames (fast random access), constant frame rate, frame k at
pts k. Decoding returns (L, H, W, 3) uint8 frames."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import numpy as np

# SVT-AV1 prints a banner and its configuration to stderr on every encoder start unless told not to.
os.environ.setdefault("SVT_LOG", "1")

CODEC_NAMES = {"libsvtav1": "av1", "libdav1d": "av1", "libaom-av1": "av1", "libx264": "h264"}  # encoder/decoder -> codec


@functools.cache
def default_codec() -> str:
    import av

    return "libsvtav1" if "libsvtav1" in av.codecs_available else "libx264"


@contextlib.contextmanager
def same_scheduling():
    """Restore the calling thread's scheduling policy afterwards.

    SVT-AV1, run as root, switches the thread that starts an encoder to real-time SCHED_FIFO at
    priority 99, and every thread and process started from it later inherits that: a recording app
    then spawned busy real-time threads (and Chromium, and child processes) that starved the machine.
    """
    try:
        policy, priority = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    except (AttributeError, OSError):  # no sched_* calls on this platform
        yield
        return
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) != (policy, priority):
            os.sched_setscheduler(0, policy, os.sched_param(priority))


def encode(path: str | Path, frames: np.ndarray, fps: int, codec: str | None = None) -> None:
    """Write (L, H, W, 3) uint8 frames to ``path`` (H and W must be even)."""
    with same_scheduling():
        _encode(path, frames, fps, codec)


def _encode(path: str | Path, frames: np.ndarray, fps: int, codec: str | None) -> None:
    import av

    codec = codec or default_codec()
    L, h, w = frames.shape[:3]
    if h % 2 or w % 2:
        raise ValueError(f"video frames need even sizes for yuv420p, got {w}x{h}")
    opts = {"g": "2", "crf": "30"}
    if codec == "libsvtav1":
        opts["preset"] = "12"
    else:
        opts["preset"] = "veryfast"
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=int(fps), options=opts)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(L):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode(path: str | Path, start_s: float = 0.0, end_s: float | None = None, fps: float | None = None) -> np.ndarray:
    """Frames of ``path`` whose presentation time is in [start_s, end_s), as (L, H, W, 3) uint8."""
    import av

    out = []
    tol = 0.5 / fps if fps else 1e-4
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else frame.time
            if t < start_s - tol:
                continue
            if end_s is not None and t >= end_s - tol:
                break
            out.append(frame.to_ndarray(format="rgb24"))
    if not out:
        raise ValueError(f"no frames in {path} between {start_s:.3f}s and {end_s}s")
    return np.stack(out)


def probe(path: str | Path, fps: int) -> dict:
    """The ``info`` block LeRobot stores for a video feature."""
    import av

    with av.open(str(path)) as container:
        s = container.streams.video[0]
        return {
            "video.height": s.codec_context.height,
            "video.width": s.codec_context.width,
            "video.codec": CODEC_NAMES.get(s.codec_context.name, s.codec_context.name),
            "video.pix_fmt": s.codec_context.pix_fmt or "yuv420p",
            "video.is_depth_map": False,
            "video.fps": int(fps),
            "video.channels": 3,
            "has_audio": False,
        }
