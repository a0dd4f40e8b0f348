"""The live tab's executed-action chart, drawn on the server as one small image.

Seven strips, one per action dimension, each on its own scale (the env's limit for that dimension,
so a translation of 2 cm and a rotation of 0.1 rad both fill their strip), scrolling over the last
``points`` control steps. Why an image and not ``gr.LinePlot``: the browser re-renders a Vega plot
on every update, on the page's main thread, and on a slow 2-core machine each re-render held back the
live view's frames for 100-170 ms; the frames that arrived meanwhile were never shown (17.5 fps
reached the screen without the plot updates, 9-12 with them). Drawing here costs about a
millisecond with OpenCV, and the page only swaps a picture.
"""

from __future__ import annotations

import numpy as np

from vla_demo.constants import ACTION_DIM, ACTION_NAMES

TITLE_PX = 18
STRIP_PX = 28
AXIS_PX = 18
TITLE = "Executed actions: each strip spans -limit..+limit (gripper: up = open)"
LABEL_PX = 86
WIDTH_PX = 520
BACKGROUND = (255, 255, 255)
BAND = (244, 246, 250)
GRID = (200, 205, 215)
INK = (60, 64, 72)
# one colour per dimension: translation blue-green, rotation purple-orange, gripper red
COLOURS = ((31, 119, 180), (23, 190, 207), (44, 160, 44), (148, 103, 189), (227, 119, 194), (255, 127, 14),
           (214, 39, 40))


def scale_labels(high: np.ndarray) -> list[str]:
    """Each strip's label: the dimension and its limit (a strip spans -limit..+limit; the gripper 0..1)."""
    out = []
    for d, name in enumerate(ACTION_NAMES):
        if d < 3:
            out.append(f"{name} {100 * high[d]:.1f}cm")
        elif d < 6:
            out.append(f"{name} {np.degrees(high[d]):.0f}deg")
        else:
            out.append(name)
    return out


def draw(history: np.ndarray, first_step: int, high, points: int = 100, width: int = WIDTH_PX) -> np.ndarray:
    """The chart as an (H, W, 3) uint8 RGB image.

    Args:
        history: (T, 7) executed actions, oldest first (T may be 0; only the last ``points`` are drawn).
        first_step: the control step of ``history[0]`` (the x axis labels).
        high: (7,) the env's per-dimension limits (``ActionLimits.low_high()[1]``); the gripper's is 1.
        points: steps across the chart; it scrolls once more have been taken.
    """
    import cv2

    history = np.asarray(history, np.float32).reshape(-1, ACTION_DIM)
    if len(history) > points:
        first_step, history = first_step + len(history) - points, history[-points:]
    high = np.maximum(np.asarray(high, np.float32), 1e-6)
    h = TITLE_PX + STRIP_PX * ACTION_DIM + AXIS_PX
    img = np.full((h, width, 3), BACKGROUND, np.uint8)
    cv2.putText(img, TITLE, (4, TITLE_PX - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.38, INK, 1, cv2.LINE_AA)
    x0, plot_w = LABEL_PX, width - LABEL_PX - 6
    xs = x0 + np.arange(len(history)) * plot_w / max(points - 1, 1)
    for d, label in enumerate(scale_labels(high)):
        top = TITLE_PX + d * STRIP_PX
        if d % 2 == 0:
            cv2.rectangle(img, (x0, top), (x0 + plot_w, top + STRIP_PX - 1), BAND, -1)
        cv2.putText(img, label, (4, top + STRIP_PX // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.36, INK, 1, cv2.LINE_AA)
        if d < 6:  # signed: a zero line in the middle
            cv2.line(img, (x0, top + STRIP_PX // 2), (x0 + plot_w, top + STRIP_PX // 2), GRID, 1)
        if len(history):
            v = history[:, d] / high[d]
            frac = (v + 1) / 2 if d < 6 else v  # 0 at the bottom of the strip, 1 at the top
            ys = top + 3 + (1 - np.clip(frac, 0, 1)) * (STRIP_PX - 7)
            pts = np.stack([xs, ys], 1).round().astype(np.int32)
            cv2.polylines(img, [pts], False, COLOURS[d], 2 if len(pts) > 1 else 3, cv2.LINE_AA)
    _x_axis(img, first_step, points, x0, plot_w, TITLE_PX + STRIP_PX * ACTION_DIM)
    return img


def _x_axis(img: np.ndarray, first_step: int, points: int, x0: int, plot_w: int, y: int) -> None:
    """Tick marks and step numbers every 20 steps along the bottom."""
    import cv2

    cv2.line(img, (x0, y), (x0 + plot_w, y), GRID, 1)
    for step in range((first_step + 19) // 20 * 20, first_step + points, 20):
        x = int(round(x0 + (step - first_step) * plot_w / max(points - 1, 1)))
        cv2.line(img, (x, y), (x, y + 3), INK, 1)
        cv2.putText(img, str(step), (x - 8, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.34, INK, 1, cv2.LINE_AA)
    cv2.putText(img, "step", (4, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.36, INK, 1, cv2.LINE_AA)
