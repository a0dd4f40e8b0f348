"""The live view's frames as JPEG files that the page fetches: written once, atomically, and deleted
when stale, so one stream's memory and disk stay flat however long it runs.

Why the stream does not hand Gradio numpy arrays: Gradio 6 saves each yielded array into its cache
under a hash of the pixels, so an unchanged frame (a paused scene) is rewritten in place while the
page may be downloading it (a truncated image); and the way around that, sending ``gr.skip()`` for an
unchanged output, makes Gradio keep a new copy of the component (with its whole API schema) in the
session's state every time the output goes from skipped back to a value. Under the load test that
was 20-25 MB a minute for 4 sessions. Here an unchanged frame re-sends the same path (nothing is
written, nothing is skipped), and only the newest ``keep`` files of a stream exist.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import deque
from pathlib import Path
from typing import Callable

import numpy as np

JPEG_QUALITY = 75  # Gradio's own default; 85 cost the browser 3 fps on a slow 2-core VM
ENCODINGS = {".jpg": "JPEG", ".png": "PNG"}  # photographs; line art (the action chart)
KEEP = 64  # files per stream on disk (about 2 s of frames): a page fetches the newest within a frame or two


def stream_folder(cache_root: str | os.PathLike) -> Path:
    """A new folder for one stream under ``cache_root`` (Gradio serves files below its cache)."""
    return Path(cache_root) / "vla-live" / uuid.uuid4().hex


class FrameFiles:
    """Writes one stream's frames as ``<folder>/<n>.jpg``; see the module docstring.

    Args:
        folder: created on first use, removed by :meth:`close`.
        keep: how many of the newest files stay on disk.
        on_delete: called with each deleted path (the UI forgets it in Gradio's file registry).
    """

    def __init__(self, folder: str | os.PathLike, keep: int = KEEP, quality: int = JPEG_QUALITY,
                 on_delete: Callable[[str], None] | None = None, suffix: str = ".jpg"):
        if keep < 2:
            raise ValueError(f"keep must be at least 2 (the file being fetched and the next), got {keep}")
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {quality}")
        if suffix not in ENCODINGS:
            raise ValueError(f"suffix must be one of {sorted(ENCODINGS)}, got {suffix!r}")
        self.folder, self.keep, self.quality, self.on_delete = Path(folder), keep, quality, on_delete
        self.suffix = suffix
        self._paths: deque[str] = deque()
        self._last: np.ndarray | None = None
        self._n = 0

    def publish(self, image: np.ndarray) -> str:
        """The path of a JPEG (or PNG) of ``image`` (H, W, 3) uint8 RGB: the previous one when the pixels
        are unchanged, else a new file (written to a temporary name, then renamed)."""
        import cv2

        if self._last is not None and np.array_equal(self._last, image):  # also False for another shape
            return self._paths[-1]
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # 15x faster than a numpy channel flip and copy
        params = [cv2.IMWRITE_JPEG_QUALITY, self.quality] if self.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
        ok, buf = cv2.imencode(self.suffix, bgr, params)
        if not ok:
            raise ValueError(f"could not encode a frame of shape {image.shape} as {ENCODINGS[self.suffix]}")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self._n:08d}{self.suffix}"
        tmp = path.with_suffix(".part")
        tmp.write_bytes(buf.tobytes())
        os.replace(tmp, path)
        self._n += 1
        self._last = image
        self._paths.append(str(path))
        while len(self._paths) > self.keep:
            self._delete(self._paths.popleft())
        return str(path)

    def _delete(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)
        if self.on_delete is not None:
            self.on_delete(path)

    def close(self) -> None:
        """Delete every file of this stream and its folder."""
        while self._paths:
            self._delete(self._paths.popleft())
        shutil.rmtree(self.folder, ignore_errors=True)
        self._last = None
