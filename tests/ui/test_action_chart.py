import numpy as np
import pytest

from vla_demo.ui import action_chart
from vla_demo.ui.action_chart import AXIS_PX, COLOURS, LABEL_PX, STRIP_PX, TITLE_PX

HIGH = [0.02, 0.02, 0.02, 0.1, 0.1, 0.1, 1.0]


def coloured_rows(img: np.ndarray, d: int) -> np.ndarray:
    """Rows (image y) where strip ``d``'s trace colour appears right of the labels."""
    hit = np.all(np.abs(img[:, LABEL_PX:].astype(int) - COLOURS[d]) < 20, axis=2)
    return np.nonzero(hit.any(axis=1))[0] - TITLE_PX  # strip coordinates: 0 is the top of the first strip


def test_each_dimension_is_drawn_in_its_own_strip_on_its_own_scale():
    history = np.zeros((30, 7), np.float32)
    history[:, 0] = 0.02  # dx at its limit: the top of the first strip
    history[:, 3] = -0.1  # droll at minus its limit: the bottom of the fourth
    history[:, 6] = 1.0  # gripper open: the top of the last
    img = action_chart.draw(history, 0, HIGH)
    assert img.shape == (TITLE_PX + 7 * STRIP_PX + AXIS_PX, action_chart.WIDTH_PX, 3) and img.dtype == np.uint8
    for d, (lo, hi) in {0: (0, STRIP_PX // 3), 3: (3 * STRIP_PX + 2 * STRIP_PX // 3, 4 * STRIP_PX),
                        6: (6 * STRIP_PX, 6 * STRIP_PX + STRIP_PX // 3)}.items():
        rows = coloured_rows(img, d)
        assert len(rows) and lo <= rows.min() and rows.max() < hi, (d, rows)
    mid = coloured_rows(img, 1)  # dy = 0: the middle of the second strip
    assert len(mid) and abs(mid.mean() - 1.5 * STRIP_PX) < 3


def test_values_beyond_the_limit_stay_inside_their_strip():
    history = np.zeros((10, 7), np.float32)
    history[:, 2] = 5.0
    rows = coloured_rows(action_chart.draw(history, 0, HIGH), 2)
    assert len(rows) and rows.min() >= 2 * STRIP_PX


def test_an_empty_history_draws_no_trace_and_a_long_one_scrolls():
    empty = action_chart.draw(np.zeros((0, 7)), 0, HIGH)
    assert all(len(coloured_rows(empty, d)) == 0 for d in range(7))
    ramp = np.zeros((150, 7), np.float32)
    ramp[:50, 0] = -0.02  # scrolled out of a 100-step window
    ramp[50:, 0] = 0.02
    img = action_chart.draw(ramp, 0, HIGH, points=100)
    rows = coloured_rows(img, 0)
    assert len(rows) and rows.max() < STRIP_PX // 3  # only the newest 100 steps (all at +limit)
    assert not np.array_equal(img, action_chart.draw(ramp[:60], 0, HIGH, points=100))


@pytest.mark.parametrize("bad", [np.zeros((5, 6)), np.zeros(8)])
def test_a_history_of_the_wrong_width_is_refused(bad):
    with pytest.raises(ValueError):
        action_chart.draw(bad, 0, HIGH)
