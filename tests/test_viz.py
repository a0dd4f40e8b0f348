"""Overlays: they draw where asked, keep the frame's shape and dtype, and never mutate the input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vla_demo import viz
from vla_demo.policy import Attention


@pytest.fixture
def frame():
    return np.full((64, 64, 3), 100, np.uint8)


def test_heatmap_is_hot_where_attention_is(frame):
    grid = np.zeros((4, 4), np.float32)
    grid[0, 3] = 1.0  # top-right cell
    out = viz.heatmap(frame, grid, alpha=0.8)
    assert out.shape == frame.shape and out.dtype == np.uint8 and (frame == 100).all()
    top_right, bottom_left = out[:16, 48:].astype(int), out[48:, :16].astype(int)
    assert np.abs(top_right - 100).sum() > 10 * np.abs(bottom_left - 100).sum()
    assert viz.heatmap(frame, np.full((4, 4), np.nan)).shape == frame.shape  # NaN maps do not crash


def test_heatmap_matches_a_plain_float_blend_and_its_cache_does_not_alias():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 40, 3), np.uint8)
    grid_a, grid_b = rng.random((4, 5)).astype(np.float32), rng.random((4, 5)).astype(np.float32)
    for grid in (grid_a, grid_b, grid_a):  # the second grid_a call comes from the cache
        g = (grid - grid.min()) / (grid.max() - grid.min())
        up = cv2.resize(g, (40, 48), interpolation=cv2.INTER_CUBIC).clip(0, 1)
        colour = cv2.applyColorMap((up * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
        w = (0.45 * up)[:, :, None]
        expected = frame * (1 - w) + colour * w
        out = viz.heatmap(frame, grid)
        assert np.abs(out - expected).max() <= 1.0  # rounding, not truncation
    assert not np.array_equal(viz.heatmap(frame, grid_a), viz.heatmap(frame, grid_b))
    assert viz.heatmap(frame.copy(order="F")[::1], grid_a).flags.c_contiguous


def test_attention_grid_picks_rollout_layer_or_head():
    image = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    att = Attention(image=image, image_rollout=np.eye(2, dtype=np.float32), words=[], word_layers=np.zeros((2, 0)))
    assert np.array_equal(viz.attention_grid(att), np.eye(2))
    assert np.allclose(viz.attention_grid(att, layer=1), image[1].mean(0))
    assert np.array_equal(viz.attention_grid(att, layer=9, head=2), image[1, 2])  # clipped to the last layer


def test_arrow_path_and_badges_draw_pixels(frame):
    a = viz.arrow(frame, (32, 32), (33, 32))  # a tiny step is lengthened so it shows
    assert (a != frame).any(axis=2)[32, 32:40].sum() >= 5
    p = viz.path(frame, [[5, 5], [30, 30], [60, 5]])
    assert (p != frame).any() and viz.path(frame, [[1, 1]]).tolist() == frame.tolist()
    opened, closed = viz.gripper_badge(frame, 1.0), viz.gripper_badge(frame, 0.0)
    assert not np.array_equal(opened, closed)
    assert (viz.banner(frame, "STOP")[-3:] != 100).any() and (frame == 100).all()


def test_chunk_points_integrate_the_chunk():
    chunk = np.zeros((3, 7))
    chunk[:, 0] = 0.01
    pts = viz.chunk_points(np.array([0.5, 0.0, 0.2]), chunk)
    assert pts.shape == (4, 3) and np.allclose(pts[:, 0], [0.5, 0.51, 0.52, 0.53])


def test_goal_marks_draw_at_the_target_and_a_distinct_destination(frame):
    out = viz.goal_marks(frame, (16, 16), (48, 48))
    assert out.shape == frame.shape and (frame == 100).all()
    changed = (out != 100).any(-1)
    assert changed[10:22, 10:22].any() and changed[40:56, 40:56].any() and not changed[:6, 58:].any()
    same = viz.goal_marks(frame, (16, 16), (16, 16))  # pick / reach: no ring, no line
    assert not (same != 100).any(-1)[40:56, 40:56].any()
