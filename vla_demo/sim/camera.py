"""Cameras: a fixed front camera facing the robot and an optional wrist camera on the hand.

Both render with PyBullet's CPU TinyRenderer (headless, deterministic) and skip the segmentation
mask. The front camera's matrices are computed once; the wrist camera follows the hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The front camera sits across the table from the robot, so image-left is world -y and
# "forward" (away from the robot) is toward the viewer. Directions in instructions use this view.
FRONT_EYE = (0.98, 0.0, 0.58)
FRONT_TARGET = (0.42, 0.0, 0.06)
FRONT_FOV = 52.0
WRIST_FOV = 75.0
LIGHT_DIRECTION = (0.6, -0.4, 1.0)


@dataclass
class CameraMatrices:
    view: list[float]
    projection: list[float]


def front_matrices(client, size: tuple[int, int]) -> CameraMatrices:
    h, w = size
    view = client.computeViewMatrix(FRONT_EYE, FRONT_TARGET, [0, 0, 1])
    proj = client.computeProjectionMatrixFOV(FRONT_FOV, w / h, 0.05, 3.0)
    return CameraMatrices(list(view), list(proj))


def wrist_matrices(client, hand_pos, hand_quat, size: tuple[int, int]) -> CameraMatrices:
    """A camera on the hand, behind the fingers, looking along the gripper axis."""
    h, w = size
    rot = np.asarray(client.getMatrixFromQuaternion(hand_quat)).reshape(3, 3)
    forward, up = rot[:, 2], -rot[:, 0]  # hand z points out of the fingers
    eye = np.asarray(hand_pos) + 0.05 * forward - 0.06 * up
    view = client.computeViewMatrix(eye.tolist(), (eye + forward).tolist(), up.tolist())
    proj = client.computeProjectionMatrixFOV(WRIST_FOV, w / h, 0.01, 2.0)
    return CameraMatrices(list(view), list(proj))


def render(client, cam: CameraMatrices, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB image."""
    import pybullet as p

    h, w = size
    _, _, rgba, _, _ = client.getCameraImage(
        w,
        h,
        cam.view,
        cam.projection,
        lightDirection=LIGHT_DIRECTION,
        shadow=0,
        renderer=p.ER_TINY_RENDERER,
        flags=p.ER_NO_SEGMENTATION_MASK,
    )
    return np.ascontiguousarray(np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)[:, :, :3])


def image_coordinates(points: np.ndarray, cam: CameraMatrices) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) -> image coordinates (N, 2) as (u, v) in [-1, 1] over the image (u to
    the right, v down), and (N,) whether each point is in front of the camera and inside the image."""
    view = np.asarray(cam.view).reshape(4, 4).T  # PyBullet matrices are column-major
    proj = np.asarray(cam.projection).reshape(4, 4).T
    pts = np.concatenate([np.asarray(points, dtype=np.float64).reshape(-1, 3), np.ones((len(points), 1))], axis=1)
    clip = (proj @ view @ pts.T).T
    ahead = clip[:, 3] > 1e-9
    ndc = clip[:, :2] / np.where(ahead, clip[:, 3], 1.0)[:, None]
    uv = np.stack([ndc[:, 0], -ndc[:, 1]], axis=1)
    return uv, ahead & np.all(np.abs(uv) <= 1.0, axis=1)


def project_points(points: np.ndarray, cam: CameraMatrices, size: tuple[int, int]) -> np.ndarray:
    """World points (N, 3) -> pixel coordinates (N, 2) as (u, v) floats, for drawing overlays."""
    h, w = size
    uv, _ = image_coordinates(points, cam)
    return np.stack([(uv[:, 0] + 1) / 2 * w, (uv[:, 1] + 1) / 2 * h], axis=1)
