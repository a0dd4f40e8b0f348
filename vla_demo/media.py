"""Writing stills and clips: PNG through OpenCV, MP4 (H.264, yuv420p) through PyAV.

Both write to a temporary file in the destination folder and rename it into place, so a reader
never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    return frame


def _atomic_path(path: Path) -> str:
    """A temp file beside ``path`` with the permissions a plain ``open`` would give it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs are meant to be shared
    return tmp


def write_image(path: str | os.PathLike, frame: np.ndarray) -> Path:
    """Save one RGB frame as PNG (or any format OpenCV knows by extension)."""
    import cv2

    path = Path(path)
    frame = _check_frame(frame)
    tmp = _atomic_path(path)
    try:
        if not cv2.imwrite(tmp, frame[:, :, ::-1]):
            raise ValueError(f"cannot write an image with extension {path.suffix!r}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, crf: int = 20) -> Path:
    """Encode RGB frames as an H.264 MP4 playable in every browser.

    Odd frame sizes are padded by one pixel (yuv420p needs even sizes).
    """
    import av

    path = Path(path)
    tmp = _atomic_path(path)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = None
            for frame in frames:
                frame = _check_frame(frame)
                h, w = frame.shape[:2]
                if h % 2 or w % 2:
                    frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                if stream is None:
                    stream = container.add_stream("libx264", rate=round(fps), options={"crf": str(crf)})
                    stream.width, stream.height = frame.shape[1], frame.shape[0]
                    stream.pix_fmt = "yuv420p"
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            if stream is None:
                raise ValueError("no frames to write")
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
