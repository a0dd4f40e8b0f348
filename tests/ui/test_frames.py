"""Live-view frame files: one write per new frame, atomic, bounded on disk, removed on close."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vla_demo.ui.frames import FrameFiles, stream_folder


def frame(value: int) -> np.ndarray:
    f = np.zeros((24, 32, 3), np.uint8)
    f[:, :, 0] = value  # red only: a channel swap would show
    return f


def test_unchanged_frames_reuse_the_file_and_new_ones_decode_to_the_frame(tmp_path):
    files = FrameFiles(tmp_path / "s")
    a = files.publish(frame(200))
    assert files.publish(frame(200)) == a  # same pixels: same path, nothing rewritten
    b = files.publish(frame(50))
    assert b != a
    rgb = cv2.imread(b)[:, :, ::-1]
    assert rgb.shape == (24, 32, 3) and abs(int(rgb[..., 0].mean()) - 50) <= 3 and rgb[..., 1:].max() <= 8
    assert not list((tmp_path / "s").glob("*.part"))  # written under a temporary name, then renamed


def test_only_the_newest_files_stay_and_deleted_ones_are_reported(tmp_path):
    deleted = []
    files = FrameFiles(tmp_path / "s", keep=3, on_delete=deleted.append)
    paths = [files.publish(frame(v)) for v in range(10, 80, 10)]  # 7 distinct frames
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [p.rsplit("/", 1)[1] for p in paths[-3:]]
    assert deleted == paths[:4]
    files.close()
    assert not (tmp_path / "s").exists() and deleted == paths


def test_bad_settings_and_frames_are_refused(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        FrameFiles(tmp_path, keep=1)
    with pytest.raises(ValueError, match="quality"):
        FrameFiles(tmp_path, quality=0)
    with pytest.raises(Exception):  # noqa: B017 - OpenCV refuses a 4-D array
        FrameFiles(tmp_path / "x").publish(np.zeros((2, 2, 2, 3), np.uint8))


def test_each_stream_gets_its_own_folder(tmp_path):
    assert stream_folder(tmp_path) != stream_folder(tmp_path)
    assert stream_folder(tmp_path).parent == tmp_path / "vla-live"
