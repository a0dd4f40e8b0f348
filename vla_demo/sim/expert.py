"""Scripted expert: a closed-loop oracle that reads privileged state from the env.

It has the policy interface (``reset()``, ``select_action(obs)``) so the shared rollout loop,
data collection and evaluation treat it like any policy. Like a policy, it takes its orders from
``obs["task"]`` (parsed with the grammar's parser and grounded in the scene), so it can be handed
a wrong instruction for the language-blind control. Each family is a small state machine
over the live object poses, so the expert recovers when a grasp slips or noise pushes it off
course. With ``noise > 0`` the *executed* action is perturbed (DART-style) while
:attr:`ScriptedExpert.label` keeps the clean action, so recorded demonstrations contain
recoveries labelled with the correct command.

White noise alone keeps the hand within millimetres of the clean path, because the expert corrects
each step's error at the next. A policy trained on that never sees the hand *near but off* its
target, and learns the shortcut "the object is where the hand is": in closed loop it then
descends a few centimetres off the object, its goal head agreeing with its hand (measured on the
2026-11-29 default policy: in failed picks both were off by 5-6 cm at the close, in successes
1 cm). ``detour > 0`` adds deliberate excursions: with that probability per step (outside the
close and release phases, with the hand low) the executed translation is replaced for 2-4 steps by a full-speed move
in a random horizontal direction, while the recorded label stays the expert's recovery.

Grasps keep the home yaw instead of turning the hand to each cube's yaw: the closing fingers square
a turned cube up by themselves (30/30 pick, place and stack episodes succeed either way), and a cube's
yaw is a few pixels of evidence in a 96 px frame, so aligning to it made the yaw label nearly
unlearnable for the policy.

``follow > 0`` makes the phase machine follow a hand that someone else drives (the scripted
corrective operator watching a policy): a hand already lowering within ``follow`` metres (horizontally)
of where the expert would lower counts as lowering, instead of the expert first wanting it back up at
the hover (or carry) point it would itself have passed within millimetres; and a low hand further off
is moved sideways at its height (kept ``CLEAR_Z`` above the grasp point) rather than lifted to the
hover point first. Demonstrations keep 0.
"""

from __future__ import annotations

import numpy as np

from vla_demo.constants import ACTION_DIM, DIRECTIONS, GRIPPER_CLOSED, GRIPPER_OPEN, OBS_STATE, TASK
from vla_demo.sim import scene as sc, tasks

HOVER = 0.10  # m above an object's centre before descending
CARRY_Z = 0.16  # m, grasp-point height while carrying
GRASP_MIN_Z = 0.018  # keep the fingertips off the table
DETOUR_STEPS = (2, 4)  # control steps of one excursion (inclusive)
NO_DETOUR_PHASES = ("close", "release")  # moving then would drag or drop the object
DETOUR_BELOW_Z = 0.11  # m: excursions only where the hand is low, near what it is about to touch
CLOSE_STEPS = 4  # control steps to close the fingers
RELEASE_STEPS = 3
CLEAR_Z = 0.04  # m above the grasp point: a hand this high moves sideways without touching the object
XY_TOL = 0.008
Z_TOL = 0.012


class ScriptedExpert:
    """Oracle policy for every task family.

    Args:
        env: the :class:`~vla_demo.sim.env.TabletopEnv` it acts in (read for privileged state).
        noise: std of the executed-action perturbation, as a fraction of each action limit.
        seed: seed of the noise generator.
        detour: per-step probability of starting an excursion (see the module doc), 0..1.
        follow: horizontal tolerance (m) for taking a hand someone else lowers as lowering (module doc).
    """

    def __init__(self, env, noise: float = 0.0, seed: int | None = None, detour: float = 0.0, follow: float = 0.0):
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        if not 0.0 <= detour <= 1.0:
            raise ValueError(f"detour must be a probability in 0..1, got {detour}")
        if follow < 0:
            raise ValueError(f"follow must be >= 0 m, got {follow}")
        self.env = env
        self.follow = float(follow)
        self.noise = float(noise)
        self.detour = float(detour)
        self._rng = np.random.default_rng(seed)
        self.label = np.zeros(ACTION_DIM, np.float32)
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self._counter = 0
        self._detour_left = 0
        self._instruction: str | None = None
        self._goal: tasks.ResolvedGoal | None = None

    # ------------------------------------------------------------------------------ policy API
    def select_action(self, obs: dict) -> np.ndarray:
        """Clean action in ``self.label``; returns the (possibly noisy) action to execute."""
        goal = self._goal_for(obs[TASK])
        state = np.asarray(obs[OBS_STATE], dtype=np.float64)
        if goal is None:
            clean = self._hold(state)
        else:
            clean = getattr(self, f"_{goal.goal.family}")(state, goal, self.env.world_view())
        self.label = clean.astype(np.float32)
        if self.noise <= 0 and self.detour <= 0:
            return self.label.copy()
        lim = self.env.config.action
        scale = np.array([lim.max_translation] * 3 + [lim.max_rotation] * 3)
        noisy = clean.copy()
        if self.noise > 0:
            noisy[:6] += self._rng.normal(0.0, self.noise, 6) * scale
        if self._detouring(state):
            noisy[:2] = self._detour_dir * lim.max_translation
        return noisy.astype(np.float32)

    def _detouring(self, state) -> bool:
        """Whether this step is part of an excursion (starting one with probability ``detour``)."""
        if self.phase in NO_DETOUR_PHASES or state[2] > DETOUR_BELOW_Z:
            self._detour_left = 0
            return False
        if self._detour_left == 0 and self.detour > 0 and self._rng.random() < self.detour:
            angle = self._rng.uniform(0.0, 2 * np.pi)
            self._detour_dir = np.array([np.cos(angle), np.sin(angle)])
            self._detour_left = int(self._rng.integers(DETOUR_STEPS[0], DETOUR_STEPS[1] + 1))
        if self._detour_left == 0:
            return False
        self._detour_left -= 1
        return True

    # ------------------------------------------------------------------------------ helpers
    def _goal_for(self, instruction: str) -> tasks.ResolvedGoal | None:
        """Ground the instruction in the scene; a new instruction restarts the plan."""
        if instruction != self._instruction:
            self.reset()
            self._instruction = instruction
            if instruction == self.env.instruction:
                self._goal = self.env.goal
            else:
                parsed = tasks.parse_instruction(instruction)
                self._goal = tasks.resolve_goal(parsed.goal, self.env.scene)[0] if parsed.ok else None
        return self._goal

    def _move(self, state, goal_pos, gripper: float, yaw: float = 0.0) -> np.ndarray:
        lim = self.env.config.action
        a = np.zeros(ACTION_DIM)
        a[:3] = np.clip(np.asarray(goal_pos) - state[:3], -lim.max_translation, lim.max_translation)
        a[3:5] = np.clip(-state[3:5], -lim.max_rotation, lim.max_rotation)
        a[5] = np.clip(yaw - state[5], -lim.max_rotation, lim.max_rotation)
        a[6] = gripper
        return a

    def _hold(self, state) -> np.ndarray:
        return self._move(state, state[:3], GRIPPER_OPEN if state[6] > 0.04 else GRIPPER_CLOSED)

    @staticmethod
    def _near(state, pos, xy_tol=XY_TOL, z_tol=Z_TOL) -> bool:
        return bool(np.hypot(*(state[:2] - pos[:2])) < xy_tol and abs(state[2] - pos[2]) < z_tol)

    def _lowering(self, state, above, xy_tol: float, z_tol: float) -> bool:
        """Is the hand at ``above`` (the point the expert lowers from), or, when following, already
        below it and within ``follow`` of its vertical line?"""
        if self._near(state, above, xy_tol, z_tol):
            return True
        return bool(np.hypot(*(state[:2] - above[:2])) < self.follow and state[2] < above[2] + z_tol)

    def _grasp(self, state, view, i: int) -> np.ndarray | None:
        """Shared pick phases; returns an action, or None once the object is held and lifted."""
        obj = view.positions[i]
        yaw = 0.0  # top grasps at the home yaw: the closing fingers square a turned cube up (see module doc)
        grasp = np.array([obj[0], obj[1], max(obj[2], GRASP_MIN_Z)])
        if self.phase == "approach":
            above = grasp + [0, 0, HOVER]
            if self.follow > 0:  # re-centre a low hand where it is (clear of the object) rather than lift it first
                above[2] = np.clip(state[2], grasp[2] + CLEAR_Z, above[2])
            if self._lowering(state, above, XY_TOL, 0.03) and abs(state[5] - yaw) < 0.1:
                self.phase = "descend"
            else:
                return self._move(state, above, GRIPPER_OPEN, yaw)
        if self.phase == "descend":
            if np.hypot(*(state[:2] - obj[:2])) > 0.03:  # the object moved away: start over
                self.phase = "approach"
                return self._move(state, grasp + [0, 0, HOVER], GRIPPER_OPEN, yaw)
            if self._near(state, grasp, z_tol=0.006):
                self.phase, self._counter = "close", 0
            else:
                return self._move(state, grasp, GRIPPER_OPEN, yaw)
        if self.phase == "close":
            self._counter += 1
            if self._counter <= CLOSE_STEPS:
                return self._move(state, grasp, GRIPPER_CLOSED, yaw)
            self.phase = "lift" if i in view.held else "approach"
        if self.phase in ("lift", "carry", "lower") and i not in view.held:
            self.phase = "approach"  # dropped it
            return self._move(state, state[:3] + [0, 0, 0.02], GRIPPER_OPEN, yaw)
        return None

    # ------------------------------------------------------------------------------ families
    def _reach(self, state, goal, view) -> np.ndarray:
        obj = view.positions[goal.target]
        return self._move(state, obj + [0, 0, 0.035], GRIPPER_CLOSED)

    def _pick(self, state, goal, view) -> np.ndarray:
        a = self._grasp(state, view, goal.target)
        if a is not None:
            return a
        obj = view.positions[goal.target]
        return self._move(state, [obj[0], obj[1], CARRY_Z], GRIPPER_CLOSED, state[5])

    def _place(self, state, goal, view) -> np.ndarray:
        base = view.receptacles[goal.destination]
        rest_z = base[2] + sc.RECEPTACLE_FLOOR[goal.goal.destination] + sc.OBJECT_HALF
        return self._carry_to(state, goal, view, base, rest_z)

    def _stack(self, state, goal, view) -> np.ndarray:
        base = view.positions[goal.destination]
        return self._carry_to(state, goal, view, base, base[2] + 2 * sc.OBJECT_HALF)

    def _carry_to(self, state, goal, view, dest_xy, rest_z: float) -> np.ndarray:
        """Pick ``goal.target``, carry it over ``dest_xy`` and set it down with its centre at ``rest_z``."""
        if self.phase not in ("release", "retreat"):
            a = self._grasp(state, view, goal.target)
            if a is not None:
                return a
        obj = view.positions[goal.target]
        offset = state[:3] - obj  # keep the grip offset so the *object* lands on the spot
        above = np.array([dest_xy[0], dest_xy[1], CARRY_Z]) + [offset[0], offset[1], 0]
        drop = np.array([above[0], above[1], rest_z + offset[2] + 0.006])
        if self.phase == "lift":
            if state[2] > CARRY_Z - 0.03:
                self.phase = "carry"
            else:
                return self._move(state, [state[0], state[1], CARRY_Z], GRIPPER_CLOSED, state[5])
        if self.phase == "carry":
            if self._lowering(state, above, 0.006, 0.04):
                self.phase = "lower"
            else:
                return self._move(state, above, GRIPPER_CLOSED, state[5])
        if self.phase == "lower":
            if state[2] - drop[2] < 0.006:
                self.phase, self._counter = "release", 0
            else:
                return self._move(state, drop, GRIPPER_CLOSED, state[5])
        if self.phase == "release":
            self._counter += 1
            if self._counter <= RELEASE_STEPS:
                return self._move(state, state[:3], GRIPPER_OPEN, state[5])
            self.phase = "retreat"
        return self._move(state, [state[0], state[1], CARRY_Z], GRIPPER_OPEN, state[5])

    def _push(self, state, goal, view) -> np.ndarray:
        d = np.array(DIRECTIONS[goal.goal.direction])
        perp = np.array([-d[1], d[0]])
        obj = view.positions[goal.target]
        moved = float((obj[:2] - view.initial_positions[goal.target][:2]) @ d)
        behind = obj[:2] - d * (sc.OBJECT_HALF + 0.03)
        low_z = 0.022
        if moved >= 0.11:
            self.phase = "retreat"
        if self.phase == "retreat":
            return self._move(state, [state[0], state[1], CARRY_Z], GRIPPER_CLOSED)
        lateral = float((state[:2] - obj[:2]) @ perp)
        if self.phase == "push" and abs(lateral) > 0.02:
            self.phase = "approach"  # slipped off the object's line: line up again
        if self.phase == "approach":
            pre = np.array([behind[0], behind[1], low_z + 0.08])
            if self._near(state, pre, z_tol=0.03):
                self.phase = "down"
            else:
                return self._move(state, pre, GRIPPER_CLOSED)
        if self.phase == "down":
            target = np.array([behind[0], behind[1], low_z])
            if self._near(state, target, xy_tol=0.015, z_tol=0.008):
                self.phase = "push"
            else:
                return self._move(state, target, GRIPPER_CLOSED)
        step = d * 0.04 - perp * lateral
        return self._move(state, [state[0] + step[0], state[1] + step[1], low_z], GRIPPER_CLOSED)
