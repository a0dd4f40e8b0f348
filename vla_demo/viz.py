"""Pure overlays on camera frames (numpy + OpenCV; no sim, no torch).

Everything takes an (H, W, 3) uint8 RGB frame and returns a new one; pixel coordinates are (u, v)
floats in the frame's own resolution, so callers project world points at the size they draw at.
OpenCV is imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

ARROW_RGB = (255, 64, 160)
PATH_RGB = (40, 220, 255)
OPEN_RGB = (60, 200, 90)
CLOSED_RGB = (230, 80, 60)
KEYPOINT_RGB = (255, 255, 255)
GOAL_RGB = (255, 220, 40)


@dataclass
class Overlays:
    """Which overlays to draw on the live view."""

    attention: bool = True
    attention_layer: int | None = None  # None: attention rollout; else this layer (averaged over heads or one head)
    attention_head: int | None = None
    arrow: bool = True
    path: bool = True
    gripper: bool = True
    goal: bool = True  # the goal head's guess: where the named object is and where it should go
    alpha: float = 0.45


def upscale(frame: np.ndarray, size: int) -> np.ndarray:
    """Bilinear enlargement for display (the sim renders small frames)."""
    import cv2

    if frame.shape[0] == size and frame.shape[1] == size:
        return frame.copy()
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)


def heatmap(frame: np.ndarray, grid: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a coarse (gh, gw) attention map, normalised to its max, over the frame (JET colours)."""
    import cv2

    g = np.ascontiguousarray(np.nan_to_num(np.asarray(grid, dtype=np.float32)))
    h, w = frame.shape[:2]
    colour, weight, keep = _heat_layers(g.tobytes(), g.shape, h, w, float(alpha))
    return cv2.blendLinear(np.ascontiguousarray(frame, dtype=np.uint8), colour, keep, weight)


@functools.lru_cache(maxsize=8)  # ~1.6 MB each at 384 px: a map or two per live session
def _heat_layers(grid_bytes: bytes, shape: tuple[int, int], h: int, w: int, alpha: float):
    """The colour layer and the two per-pixel blend weights of one attention map at one size.

    Cached: the live view draws the same map on every frame until the policy predicts again, and a
    float blend over the full display frame cost more than the rest of the overlays and the JPEG
    together; ``cv2.blendLinear`` over precomputed weights is one pass over the pixels."""
    import cv2

    g = np.frombuffer(grid_bytes, np.float32).reshape(shape)
    g = g - g.min()
    if g.max() > 0:
        g = g / g.max()
    up = cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    colour = cv2.applyColorMap((up * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1].copy()  # BGR -> RGB
    weight = (alpha * up).astype(np.float32)
    for a in (colour, weight):
        a.flags.writeable = False
    keep = 1.0 - weight
    keep.flags.writeable = False
    return colour, weight, keep


def attention_grid(attention, layer: int | None = None, head: int | None = None) -> np.ndarray:
    """The (gh, gw) map to draw: the rollout, one layer averaged over heads, or one head."""
    if layer is None:
        return attention.image_rollout
    maps = attention.image[int(np.clip(layer, 0, attention.image.shape[0] - 1))]  # (heads, gh, gw)
    if head is None:
        return maps.mean(0)
    return maps[int(np.clip(head, 0, maps.shape[0] - 1))]


def _px(p) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def arrow(frame: np.ndarray, start, end, rgb=ARROW_RGB, min_len: float = 10.0) -> np.ndarray:
    """An arrow from ``start`` towards ``end``, lengthened to at least ``min_len`` px so small steps show."""
    import cv2

    out = frame.copy()
    s, e = np.asarray(start, float), np.asarray(end, float)
    d = e - s
    n = float(np.linalg.norm(d))
    if not np.isfinite(n) or n < 1e-6:
        cv2.circle(out, _px(s), 3, rgb, -1, cv2.LINE_AA)
        return out
    e = s + d * max(1.0, min_len / n)
    thick = max(1, frame.shape[0] // 160)
    cv2.arrowedLine(out, _px(s), _px(e), rgb, thick + 1, cv2.LINE_AA, tipLength=0.3)
    return out


def path(frame: np.ndarray, points, rgb=PATH_RGB) -> np.ndarray:
    """A polyline with dots through ``points`` (N, 2), e.g. a projected action chunk."""
    import cv2

    out = frame.copy()
    pts = np.asarray(points, float)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) < 2:
        return out
    thick = max(1, frame.shape[0] // 200)
    cv2.polylines(out, [np.round(pts).astype(np.int32)], False, rgb, thick, cv2.LINE_AA)
    for p in pts[1:]:
        cv2.circle(out, _px(p), thick + 1, rgb, -1, cv2.LINE_AA)
    return out


def gripper_badge(frame: np.ndarray, command: float) -> np.ndarray:
    """A corner badge: OPEN (command >= 0.5) or CLOSED."""
    import cv2

    out = frame.copy()
    opened = command >= 0.5
    label, rgb = ("OPEN", OPEN_RGB) if opened else ("CLOSED", CLOSED_RGB)
    scale = max(0.35, frame.shape[0] / 900)
    (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x0, y0 = 6, 6
    cv2.rectangle(out, (x0, y0), (x0 + tw + 10, y0 + th + 10), rgb, -1)
    cv2.putText(out, label, (x0 + 5, y0 + th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def chunk_points(ee_pos: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """World positions the end effector would pass executing ``chunk`` (H, 7) from ``ee_pos``: (H + 1, 3)."""
    steps = np.asarray(chunk, dtype=np.float64)[:, :3]
    return np.concatenate([np.asarray(ee_pos, np.float64)[None], ee_pos + np.cumsum(steps, axis=0)])


def goal_marks(frame: np.ndarray, target, destination, rgb=GOAL_RGB) -> np.ndarray:
    """A cross-hair on ``target`` (u, v) and a ring on ``destination`` (skipped when they coincide,
    as for pick and reach)."""
    import cv2

    out = frame.copy()
    r = max(5, frame.shape[0] // 40)
    t = _px(target)
    cv2.circle(out, t, r, rgb, 2, cv2.LINE_AA)
    cv2.line(out, (t[0] - 2 * r, t[1]), (t[0] + 2 * r, t[1]), rgb, 1, cv2.LINE_AA)
    cv2.line(out, (t[0], t[1] - 2 * r), (t[0], t[1] + 2 * r), rgb, 1, cv2.LINE_AA)
    d = _px(destination)
    if abs(d[0] - t[0]) + abs(d[1] - t[1]) > r:
        cv2.circle(out, d, 2 * r, rgb, 2, cv2.LINE_AA)
        cv2.line(out, t, d, rgb, 1, cv2.LINE_AA)
    return out


def banner(frame: np.ndarray, text: str, rgb=(200, 30, 30)) -> np.ndarray:
    """A full-width strip along the bottom with ``text`` (e.g. EMERGENCY STOP, TELEOP)."""
    import cv2

    out = frame.copy()
    h = max(16, frame.shape[0] // 14)
    cv2.rectangle(out, (0, frame.shape[0] - h), (frame.shape[1], frame.shape[0]), rgb, -1)
    scale = h / 30
    cv2.putText(out, text, (8, frame.shape[0] - h // 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
