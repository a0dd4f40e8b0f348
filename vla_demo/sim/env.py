"""``TabletopEnv``: a Franka Panda on a table with coloured objects, driven by language.

Observation (dict):
    ``observation.images.front``  (H, W, 3) uint8, front camera (default 128 x 128).
    ``observation.images.wrist``  (H, W, 3) uint8, only with ``SimConfig(wrist_camera=True)``.
    ``observation.state``         (7,) float32: grasp point x, y, z (m, world frame; table top at
                                  z = 0), roll, pitch, yaw (rad, relative to the gripper-down home
                                  orientation, applied in the world frame, so ~0 and never wrapping),
                                  gripper opening (m, 0 .. 0.08).
    ``task``                      the instruction in force (printable ASCII, <= 256 chars).

Action (7,) float32, physical units per control step: dx, dy, dz (m, clipped to +-0.02 by
default), droll, dpitch, dyaw (rad, +-0.1), gripper (absolute, 1 = open, 0 = closed). Limits live
in :class:`~vla_demo.config.ActionLimits`; NaN/inf or a wrong shape raise ``ValueError``.

Control runs at ``control_hz`` (10) over ``physics_hz`` (240) physics. The env never sleeps:
pacing to wall-clock time is the app's job.

Each instance owns a private PyBullet DIRECT client, so many envs live in one process.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vla_demo.config import SimConfig
from vla_demo.constants import (
    ACTION_DIM,
    COLOURS,
    FAMILIES,
    MAX_INSTRUCTION_CHARS,
    MAX_OBJECTS,
    OBJECT_LABEL_FIELDS,
    OBS_IMAGE_FRONT,
    OBS_IMAGE_WRIST,
    OBS_STATE,
    SHAPES,
    STATE_DIM,
    TASK,
)
from vla_demo.sim import bullet, camera, robot as rb, scene as sc, tasks

INSTRUCTION_CHARSET = "".join(chr(i) for i in range(32, 127))
RESET_OPTIONS = ("family", "instruction", "split", "n_objects", "two_candidates", "shape_rival", "shape_only")
# Bounds of the state vector: position within 2 m of the base, angles within pi, opening <= 8 cm
# (a box the state can never leave; the workspace config keeps it much tighter in practice).
STATE_LOW = np.array([-2.0, -2.0, -2.0, -np.pi, -np.pi, -np.pi, -0.1], dtype=np.float32)
MAX_TARGET_LAG = 0.05  # m: the commanded pose never runs further than this ahead of the hand


def clean_instruction(text: str) -> str:
    """Collapse whitespace, check the charset and truncate to the Text space's maximum.

    Raises:
        ValueError: ``text`` is not a string or has characters outside printable ASCII (the
            grammar is ASCII; the learned policy, not the env, accepts any Unicode).
    """
    if not isinstance(text, str):
        raise ValueError(f"instruction must be a string, got {type(text).__name__}")
    text = " ".join(text.split())
    bad = sorted({ch for ch in text if ch not in INSTRUCTION_CHARSET})
    if bad:
        raise ValueError(f"instruction has characters outside printable ASCII: {''.join(bad)!r}")
    if len(text) > MAX_INSTRUCTION_CHARS:
        warnings.warn(f"instruction truncated from {len(text)} to {MAX_INSTRUCTION_CHARS} characters", stacklevel=3)
        text = text[:MAX_INSTRUCTION_CHARS]
    return text


def check_action(action: Any) -> np.ndarray:
    """Return ``action`` as a float64 (7,) array, or raise ValueError naming what is wrong."""
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"action must be a sequence of {ACTION_DIM} numbers: {e}") from None
    if a.shape != (ACTION_DIM,):
        raise ValueError(f"action must have shape ({ACTION_DIM},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action has NaN or inf entries: {a.tolist()}")
    return a


@dataclass
class EnvState:
    """A complete snapshot of an episode (plain data; see :meth:`TabletopEnv.get_state`)."""

    scene: sc.SceneSpec
    instruction: str
    goal: tasks.Goal | None
    sampled_goal: tasks.Goal | None
    family: str | None
    steps: int
    target_pos: np.ndarray
    target_rpy: np.ndarray
    gripper_cmd: float
    joint_targets: np.ndarray
    reference_positions: np.ndarray
    objects: list[tuple] = field(default_factory=list)  # per object: pos, quat, lin vel, ang vel
    joints: list[tuple[float, float]] = field(default_factory=list)  # per robot joint: pos, vel
    rng_state: dict = field(default_factory=dict)


class TabletopEnv(gym.Env):
    """Language-conditioned tabletop manipulation (see the module docstring for spaces and units).

    Args:
        config: simulator settings; keyword overrides (``image_size=(96, 96)``, ...) are applied
            on top, so ``gym.make("VLATabletop-v0", wrist_camera=True)`` works.
        render_mode: only ``"rgb_array"`` (``render()`` returns the front image).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    _closed = True  # until a physics client exists (a failing __init__ leaves nothing to close)

    def __init__(self, config: SimConfig | None = None, render_mode: str | None = "rgb_array", **overrides: Any):
        cfg = config or SimConfig()
        if overrides:
            cfg = SimConfig.from_dict({**cfg.to_dict(), **overrides})
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.config = cfg
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": cfg.control_hz}
        self._client = bullet.connect()
        self._closed = False  # from here on close() has a client to free (also when __init__ fails below)
        self._front = camera.front_matrices(self._client, cfg.image_size)
        h, w = cfg.image_size
        lo, hi = cfg.action.low_high()
        self.action_space = spaces.Box(np.array(lo, np.float32), np.array(hi, np.float32), dtype=np.float32)
        obs = {
            OBS_IMAGE_FRONT: spaces.Box(0, 255, (h, w, 3), np.uint8),
            OBS_STATE: spaces.Box(STATE_LOW, -STATE_LOW, (STATE_DIM,), np.float32),
            TASK: spaces.Text(MAX_INSTRUCTION_CHARS, min_length=0, charset=INSTRUCTION_CHARSET),
        }
        if cfg.wrist_camera:
            obs[OBS_IMAGE_WRIST] = spaces.Box(0, 255, (h, w, 3), np.uint8)
        self.observation_space = spaces.Dict(obs)
        self.scene: sc.SceneSpec | None = None
        self._robot: rb.Panda | None = None
        self._bodies: list[int] = []
        self._receptacle_bodies: list[int] = []

    # ------------------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Sample a scene and task. ``options``: family, instruction, split, n_objects, two_candidates,
        shape_rival, shape_only (see :meth:`vla_demo.sim.tasks.TaskFamily.sample`)."""
        if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        super().reset(seed=seed)
        opts = self._check_options(options or {})
        rng = self.np_random
        family = opts.get("family") or FAMILIES[int(rng.integers(len(FAMILIES)))]
        lo, hi = self.config.n_objects
        n = opts.get("n_objects") or int(rng.integers(lo, hi + 1))
        scene, goal, instruction = tasks.get_family(family).sample(
            rng, opts.get("split", "train"), n, bool(opts.get("two_candidates", False)),
            bool(opts.get("shape_rival", False)), bool(opts.get("shape_only", False)),
        )
        self._build(scene)
        self._steps = 0
        self._sampled_goal = goal
        if "instruction" in opts:
            self.set_instruction(opts["instruction"])
        else:
            self._apply_goal(instruction, goal)
        return self._observation(), self._info()

    def step(self, action, render_substeps: int = 0):
        """Advance one control step; ``render_substeps=k`` adds k in-between front frames to
        ``info["frames"]`` (for a display smoother than the control rate)."""
        a = check_action(action)
        self._require_episode()
        if not 0 <= render_substeps <= self.config.substeps - 1:
            raise ValueError(f"render_substeps must be in 0..{self.config.substeps - 1}, got {render_substeps}")
        lo, hi = self.config.action.low_high()
        a = np.clip(a, lo, hi)
        self._apply_action(a)
        frames = self._simulate(render_substeps)
        self._steps += 1
        view = self.world_view()
        success = self._success(view)
        terminated = bool(success) and self.config.terminate_on_success
        truncated = self._steps >= self.config.max_episode_steps
        info = self._info(view, success)
        if render_substeps:
            info["frames"] = frames
        return self._observation(), float(bool(success)), terminated, truncated, info

    def render(self) -> np.ndarray:
        """The front camera image, (H, W, 3) uint8."""
        self._require_episode()
        return camera.render(self._client, self._front, self.config.image_size)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._client.disconnect()
            except Exception:  # already gone (process shutting down)
                pass

    def __del__(self):
        self.close()

    # ------------------------------------------------------------------------------ extras
    @property
    def instruction(self) -> str:
        return self._instruction

    @property
    def goal(self) -> tasks.ResolvedGoal | None:
        """The instruction's goal bound to this scene, or None when it cannot be parsed/grounded."""
        return self._resolved

    @property
    def family(self) -> str | None:
        return self._resolved.goal.family if self._resolved else None

    @property
    def steps(self) -> int:
        return self._steps

    def set_instruction(self, text: str) -> tasks.ParseResult:
        """Change the instruction mid-episode. The parser re-derives family and target; when it
        cannot, ``info["success"]`` is None and ``info["parse_error"]`` says why."""
        self._require_episode()
        text = clean_instruction(text)
        parsed = tasks.parse_instruction(text)
        self._apply_goal(text, parsed.goal, parsed.reason)
        return parsed

    def object_labels(self) -> np.ndarray:
        """(MAX_OBJECTS * 7,) float32: each object's colour and shape and where the front and wrist
        cameras see its centre now, rows of ``OBJECT_LABEL_FIELDS`` (labels for the auxiliary
        object head of scripted datasets; empty slots have colour and shape -1)."""
        view = self.world_view()
        rows = np.zeros((MAX_OBJECTS, len(OBJECT_LABEL_FIELDS)), np.float32)
        rows[:, :2] = -1
        n = min(len(self.scene.objects), MAX_OBJECTS)
        centres = view.positions[:n]
        front, _ = camera.image_coordinates(centres, self._front)
        wrist, seen = camera.image_coordinates(centres, self._wrist_matrices())
        for i, obj in enumerate(self.scene.objects[:n]):
            named = obj.colour in COLOURS  # an unnamed colour is no class of the object head: unlabelled
            rows[i, :2] = (list(COLOURS).index(obj.colour), SHAPES.index(obj.shape)) if named else (-1, -1)
        rows[:n, 2:4] = front
        rows[:n, 4:6] = np.where(seen[:, None], wrist, 0.0)
        rows[:n, 6] = seen
        return rows.reshape(-1)

    def world_view(self) -> tasks.WorldView:
        """Privileged state for success checks and the scripted expert."""
        self._require_episode()
        c = self._client
        poses = [c.getBasePositionAndOrientation(b) for b in self._bodies]
        positions = np.array([p for p, _ in poses], dtype=np.float64).reshape(-1, 3)
        yaws = np.array([c.getEulerFromQuaternion(q)[2] for _, q in poses], dtype=np.float64)
        held, touched = set(), set()
        for i, b in enumerate(self._bodies):
            left, right = self._robot.finger_contacts(b)
            if left or right:
                touched.add(i)
            if left and right:
                held.add(i)
        recs = np.array([c.getBasePositionAndOrientation(b)[0] for b in self._receptacle_bodies]).reshape(-1, 3)
        ee, _ = self._robot.ee_pose()
        return tasks.WorldView(positions, yaws, self._reference_positions, recs, ee, frozenset(held), frozenset(touched))

    def gripper_opening(self) -> float:
        return self._robot.gripper_opening()

    def front_camera(self) -> camera.CameraMatrices:
        """Matrices of the front camera, to project world points for overlays."""
        return self._front

    def get_state(self) -> EnvState:
        """Snapshot everything that determines the future of the episode."""
        self._require_episode()
        c = self._client
        objects = []
        for b in self._bodies:
            pos, quat = c.getBasePositionAndOrientation(b)
            lin, ang = c.getBaseVelocity(b)
            objects.append((pos, quat, lin, ang))
        joints = [tuple(c.getJointState(self._robot.body, j)[:2]) for j in range(c.getNumJoints(self._robot.body))]
        return EnvState(
            scene=self.scene,
            instruction=self._instruction,
            goal=self._resolved.goal if self._resolved else None,
            sampled_goal=self._sampled_goal,
            family=self.family,
            steps=self._steps,
            target_pos=self._target_pos.copy(),
            target_rpy=self._target_rpy.copy(),
            gripper_cmd=self._gripper_cmd,
            joint_targets=self._joint_targets.copy(),
            reference_positions=self._reference_positions.copy(),
            objects=objects,
            joints=joints,
            rng_state=copy.deepcopy(self.np_random.bit_generator.state),
        )

    def set_state(self, state: EnvState) -> None:
        """Restore a snapshot from :meth:`get_state` (rebuilding the scene when it differs)."""
        c = self._client
        self._build(state.scene)
        for b, (pos, quat, lin, ang) in zip(self._bodies, state.objects, strict=True):
            c.resetBasePositionAndOrientation(b, pos, quat)
            c.resetBaseVelocity(b, lin, ang)
        for j, (q, qd) in enumerate(state.joints):
            c.resetJointState(self._robot.body, j, q, qd)
        self._steps = state.steps
        self._sampled_goal = state.sampled_goal
        self._target_pos = state.target_pos.copy()
        self._target_rpy = state.target_rpy.copy()
        self._gripper_cmd = state.gripper_cmd
        self._joint_targets = state.joint_targets.copy()
        self._robot.command_joints(self._joint_targets, self._gripper_cmd)
        self._instruction = state.instruction
        resolved, why = (None, "") if state.goal is None else tasks.resolve_goal(state.goal, state.scene)
        self._resolved = resolved
        self._parse_error = why if state.goal is not None else tasks.parse_instruction(state.instruction).reason
        self._reference_positions = state.reference_positions.copy()
        self.np_random.bit_generator.state = copy.deepcopy(state.rng_state)

    # ------------------------------------------------------------------------------ internals
    def _check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = set(options) - set(RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}: allowed are {list(RESET_OPTIONS)}")
        opts = {k: v for k, v in options.items() if v is not None}
        if "family" in opts and opts["family"] not in FAMILIES:
            raise ValueError(f"unknown task family {opts['family']!r}: choose from {list(FAMILIES)}")
        if "split" in opts:
            tasks.check_split(opts["split"])
        if "n_objects" in opts:
            n = opts["n_objects"]
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= 5:
                raise ValueError(f"n_objects must be an integer in 2..5, got {n!r}")
            opts["n_objects"] = int(n)
        return opts

    def _build(self, scene: sc.SceneSpec) -> None:
        """(Re)create the world from scratch: identical calls give identical physics."""
        import pybullet as p

        sc.validate_scene(scene)
        c = self._client
        c.resetSimulation()
        c.setPhysicsEngineParameter(fixedTimeStep=1.0 / self.config.physics_hz, numSolverIterations=50, deterministicOverlappingPairs=1)
        c.setGravity(0, 0, -9.81)
        c.configureDebugVisualizer(p.COV_ENABLE_GUI, 0)
        sc.build_table(c)
        self._robot = rb.Panda(c, self.config.robot_visuals)
        self._receptacle_bodies = [sc.build_receptacle(c, r) for r in scene.receptacles]
        self._bodies = [sc.build_object(c, o) for o in scene.objects]
        self.scene = scene
        pos, quat = self._robot.ee_pose()
        self._target_pos = pos.copy()
        self._target_rpy = rb.relative_rpy(quat)
        self._gripper_cmd = 1.0
        self._joint_targets = np.array(rb.HOME_JOINTS)
        self._reference_positions = self._object_positions()

    def _object_positions(self) -> np.ndarray:
        c = self._client
        return np.array([c.getBasePositionAndOrientation(b)[0] for b in self._bodies], dtype=np.float64).reshape(-1, 3)

    def _apply_goal(self, instruction: str, goal: tasks.Goal | None, reason: str = "") -> None:
        self._instruction = instruction
        self._resolved, self._parse_error = None, reason
        if goal is not None:
            self._resolved, self._parse_error = tasks.resolve_goal(goal, self.scene)
        # Displacement-based checks (push) measure from the moment the instruction was given.
        self._reference_positions = self._object_positions()

    def _apply_action(self, a: np.ndarray) -> None:
        ws = self.config.workspace
        ee, _ = self._robot.ee_pose()
        pos = self._target_pos + a[:3]
        pos = ee + np.clip(pos - ee, -MAX_TARGET_LAG, MAX_TARGET_LAG)
        lo = np.array([ws.x[0], ws.y[0], ws.z[0]])
        hi = np.array([ws.x[1], ws.y[1], ws.z[1]])
        self._target_pos = np.clip(pos, lo, hi)
        quat = rb.quat_mul(rb.euler_to_quat(a[3:6]), rb.euler_to_quat(self._target_rpy))
        rpy = rb.quat_to_euler(quat)
        lim = np.array([ws.orientation_limit, ws.orientation_limit, ws.yaw_limit])
        self._target_rpy = np.clip(rpy, -lim, lim)
        self._gripper_cmd = float(a[6])
        self._joint_targets = self._robot.solve_ik(self._target_pos, rb.quat_from_relative(self._target_rpy))
        self._robot.command_joints(self._joint_targets, self._gripper_cmd)

    def _simulate(self, render_substeps: int) -> list[np.ndarray]:
        n = self.config.substeps
        # k frames evenly spaced inside the control period; the observation is the (k+1)-th.
        marks = {round(n * (i + 1) / (render_substeps + 1)) for i in range(render_substeps)}
        frames = []
        for i in range(1, n + 1):
            self._client.stepSimulation()
            if i in marks and i != n:
                frames.append(self.render())
        return frames

    def _success(self, view: tasks.WorldView) -> bool | None:
        if self._resolved is None:
            return None
        return tasks.get_family(self._resolved.goal.family).success(self._resolved, view)

    def _observation(self) -> dict[str, Any]:
        obs = {
            OBS_IMAGE_FRONT: self.render(),
            OBS_STATE: self._robot.state(),
            TASK: self._instruction,
        }
        if self.config.wrist_camera:
            obs[OBS_IMAGE_WRIST] = camera.render(self._client, self._wrist_matrices(), self.config.image_size)
        return obs

    def _wrist_matrices(self) -> camera.CameraMatrices:
        hand = self._client.getLinkState(self._robot.body, rb.HAND_LINK, computeForwardKinematics=True)
        return camera.wrist_matrices(self._client, hand[4], hand[5], self.config.image_size)

    def _info(self, view: tasks.WorldView | None = None, success: bool | None = None) -> dict[str, Any]:
        view = view or self.world_view()
        if success is None and self._resolved is not None:
            success = self._success(view)
        info: dict[str, Any] = {
            "success": success if self._resolved is not None else None,
            "family": self.family,
            "instruction": self._instruction,
            "target": None,
            "steps": self._steps,
        }
        if self._resolved is not None:
            i = self._resolved.target
            info["target"] = {"index": i, "name": self.scene.objects[i].name, "position": view.positions[i].tolist()}
            info["goal_positions"] = tasks.get_family(self._resolved.goal.family).goal_positions(self._resolved, view)
        else:
            info["parse_error"] = self._parse_error
        return info

    def _require_episode(self) -> None:
        if self._closed:
            raise RuntimeError("the env is closed")
        if self.scene is None:
            raise RuntimeError("call reset() before using the env")
