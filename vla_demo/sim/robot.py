"""The Franka Panda from ``pybullet_data``: loading, end-effector control and proprioception.

The arm is driven in Cartesian space: the env integrates action deltas into a target pose, and
:meth:`Panda.command` solves inverse kinematics once per control step and hands the joint targets
to PyBullet's position motors, which track them over the physics substeps.

Orientation convention: a rotation is expressed *relative to the gripper-down home orientation*
and applied in the world frame (``R = R_rel @ R_home``). At home all three angles are zero, so a
downward-pointing gripper never hits the ±pi wrap of raw Euler angles.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile

import numpy as np

ARM_JOINTS = tuple(range(7))
FINGER_JOINTS = (9, 10)
GRASP_LINK = 11  # panda_grasptarget: the point between the fingertips
HAND_LINK = 8
FINGER_MAX = 0.04  # per finger, m
ARM_FORCES = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)
FINGER_FORCE = 40.0
# A comfortable elbow-up configuration with the gripper pointing down; also the IK rest pose.
HOME_JOINTS = (0.0, -0.186, 0.0, -2.491, 0.0, 2.304, 0.785)  # grasp point at (0.45, 0, 0.25)
LOWER = (-2.9, -1.76, -2.9, -3.07, -2.9, -0.02, -2.9)
UPPER = (2.9, 1.76, 2.9, -0.07, 2.9, 3.75, 2.9)
# Gripper-down home orientation: the hand's z axis points at the table, fingers open along y.
HOME_QUAT = (1.0, 0.0, 0.0, 0.0)  # (x, y, z, w): 180 deg about x

LINK_COLOURS = {  # simple visuals: white links, dark joints and hand (as the real robot)
    "white": (0.93, 0.93, 0.93, 1.0),
    "dark": (0.22, 0.22, 0.24, 1.0),
}
DARK_LINKS = (-1, 8, 9, 10)


@functools.cache
def panda_urdf(visuals: str) -> str:
    """Path of the Panda URDF to load.

    ``"full"`` is pybullet_data's file as shipped. ``"simple"`` is the same robot with each
    link's detailed visual mesh (about 100k triangles in all) swapped for its collision mesh
    (about 3.4k): the CPU renderer then draws a frame in ~4 ms instead of ~30 ms. The variant is
    written once per process to a private temp dir; kinematics and collisions are unchanged.
    """
    import pybullet_data

    root = os.path.join(pybullet_data.getDataPath(), "franka_panda")
    original = os.path.join(root, "panda.urdf")
    if visuals == "full":
        return original
    with open(original, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"package://meshes/(visual|collision)/", os.path.join(root, "meshes", "collision") + os.sep, text)
    out_dir = tempfile.mkdtemp(prefix="vla_demo_panda_")
    path = os.path.join(out_dir, "panda_simple.urdf")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def quat_mul(a, b) -> np.ndarray:
    """Hamilton product of (x, y, z, w) quaternions."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def quat_conj(q) -> np.ndarray:
    return np.array([-q[0], -q[1], -q[2], q[3]])


def euler_to_quat(rpy) -> np.ndarray:
    """Extrinsic x-y-z (roll, pitch, yaw) angles to an (x, y, z, w) quaternion (PyBullet's convention)."""
    r, p, y = (a / 2 for a in rpy)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array(
        [
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
            cr * cp * cy + sr * sp * sy,
        ]
    )


def quat_to_euler(q) -> np.ndarray:
    x, y, z, w = q
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.array([roll, pitch, yaw])


def relative_rpy(quat) -> np.ndarray:
    """World-frame rotation from the home orientation to ``quat``, as (roll, pitch, yaw)."""
    return quat_to_euler(quat_mul(quat, quat_conj(HOME_QUAT)))


def quat_from_relative(rpy) -> np.ndarray:
    return quat_mul(euler_to_quat(rpy), HOME_QUAT)


class Panda:
    """A Panda arm on one PyBullet client."""

    def __init__(self, client, visuals: str = "simple"):
        import pybullet as p

        self.client = client
        flags = p.URDF_ENABLE_CACHED_GRAPHICS_SHAPES | p.URDF_USE_SELF_COLLISION_EXCLUDE_PARENT
        self.body = client.loadURDF(panda_urdf(visuals), [0, 0, 0], useFixedBase=True, flags=flags)
        if visuals == "simple":
            for link in range(-1, 11):
                rgba = LINK_COLOURS["dark" if link in DARK_LINKS else "white"]
                client.changeVisualShape(self.body, link, rgbaColor=rgba)
        for j in FINGER_JOINTS:
            client.changeDynamics(self.body, j, lateralFriction=1.5, spinningFriction=0.01)
        # Two independent finger motors squeezing at full force leave a held object free to drift
        # sideways (any position balances). A gear constraint makes the fingers move as a pair.
        gear = client.createConstraint(
            self.body, FINGER_JOINTS[0], self.body, FINGER_JOINTS[1], p.JOINT_GEAR, [1, 0, 0], [0, 0, 0], [0, 0, 0]
        )
        client.changeConstraint(gear, gearRatio=-1, erp=0.1, maxForce=50)
        self.reset()

    def reset(self) -> None:
        c = self.client
        for j, q in zip(ARM_JOINTS, HOME_JOINTS, strict=True):
            c.resetJointState(self.body, j, q, 0.0)
        for j in FINGER_JOINTS:
            c.resetJointState(self.body, j, FINGER_MAX, 0.0)
        self.command_joints(np.array(HOME_JOINTS), 1.0)

    # --------------------------------------------------------------------- proprioception
    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), quaternion (4,)) of the grasp point, world frame."""
        s = self.client.getLinkState(self.body, GRASP_LINK, computeForwardKinematics=True)
        return np.asarray(s[4]), np.asarray(s[5])

    def gripper_opening(self) -> float:
        return float(sum(self.client.getJointState(self.body, j)[0] for j in FINGER_JOINTS))

    def state(self) -> np.ndarray:
        """(7,) float32: grasp-point xyz (m), orientation relative to home (rad), opening (m)."""
        pos, quat = self.ee_pose()
        return np.concatenate([pos, relative_rpy(quat), [self.gripper_opening()]]).astype(np.float32)

    # --------------------------------------------------------------------- control
    def solve_ik(self, pos, quat) -> np.ndarray:
        q = self.client.calculateInverseKinematics(
            self.body,
            GRASP_LINK,
            list(pos),
            list(quat),
            lowerLimits=list(LOWER) + [0.0] * 2,
            upperLimits=list(UPPER) + [FINGER_MAX] * 2,
            jointRanges=[u - lo for lo, u in zip(LOWER, UPPER, strict=True)] + [FINGER_MAX] * 2,
            restPoses=list(HOME_JOINTS) + [FINGER_MAX] * 2,
            maxNumIterations=30,
            residualThreshold=1e-4,
        )
        return np.clip(np.asarray(q[:7]), LOWER, UPPER)

    def command_joints(self, joints: np.ndarray, gripper: float) -> None:
        import pybullet as p

        c = self.client
        c.setJointMotorControlArray(
            self.body, ARM_JOINTS, p.POSITION_CONTROL, targetPositions=list(joints), forces=list(ARM_FORCES)
        )
        width = float(np.clip(gripper, 0.0, 1.0)) * FINGER_MAX
        c.setJointMotorControlArray(
            self.body, FINGER_JOINTS, p.POSITION_CONTROL, targetPositions=[width, width], forces=[FINGER_FORCE] * 2
        )

    def command(self, pos, quat, gripper: float) -> None:
        """Move toward an end-effector pose; ``gripper`` in [0, 1] with 1 = open."""
        self.command_joints(self.solve_ik(pos, quat), gripper)

    def finger_contacts(self, body: int) -> tuple[bool, bool]:
        """Whether each finger touches ``body``."""
        c = self.client
        return tuple(bool(c.getContactPoints(self.body, body, j, -1)) for j in FINGER_JOINTS)  # type: ignore[return-value]
