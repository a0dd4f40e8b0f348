"""One operator's world: a sim, its policy, teleop state, the recording, and the live frame stream.

The session drives the ONE shared :func:`vla_demo.evaluate.rollout` loop step by step: it pulls a
step only while running (or when asked for a single step), so pause and emergency stop halt the arm
at once, and an operator's command goes in through ``RolloutControl.override`` before the step that
executes it. Everything here is thread-safe: UI handlers run in Gradio's worker threads while
:meth:`Session.stream` runs in another.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla_demo.constants import (ACTION, EXECUTED_ACTION, FAMILIES, GOAL_NAMES, GOAL_POSITIONS, INTERVENTION, OBS_IMAGE_FRONT,
                                OBS_IMAGE_WRIST, OBS_STATE, SPLITS, TASK)
from vla_demo.viz import Overlays

MODES = ("policy", "teleop", "shared")
# Held keys -> (axis, sign) in the operator's view of the front camera: up/down on screen is the
# world x axis (the camera faces the robot), left/right is y, and r/f move the hand up and down.
TELEOP_KEYS: dict[str, tuple[int, float]] = {
    "w": (0, -1.0), "arrowup": (0, -1.0), "s": (0, 1.0), "arrowdown": (0, 1.0),
    "a": (1, -1.0), "arrowleft": (1, -1.0), "d": (1, 1.0), "arrowright": (1, 1.0),
    "r": (2, 1.0), "f": (2, -1.0),
}
GRIPPER_KEYS = ("g", " ")  # hold to close
HAND_BACK_KEY = "h"
KEYMAP_MARKDOWN = (
    "**Keys** (click the page outside a text box first): `W`/`S` or `↑`/`↓` away/towards the camera, "
    "`A`/`D` or `←`/`→` left/right, `R`/`F` up/down, hold `G` or `Space` to close the gripper, "
    "`H` hands control back to the policy (Shared mode), `Esc` emergency stop. A gamepad works too "
    "(left stick, triggers up/down, A closes)."
)
PAUSED_PERIOD_S = 0.2
PAD_DEAD_ZONE = 0.15
PLOT_POINTS = 100


def frame_spacing(period: float, n: int, latency: float) -> float:
    """Seconds between the ``n`` display frames of one control period whose first frame went out
    ``latency`` s into it: ``period / n``, so that the next step's first frame follows the last one
    by the same gap (a browser drops an image whose successor arrives before it has loaded; frames
    sent 10 ms apart reached the screen at a third of the rate sent), or less when the step ran long,
    so that the frames still fit in the period and pacing never delays the next control step."""
    if n <= 1:
        return 0.0
    return max(0.0, min(period / n, (period - latency) / (n - 1)))


def _wait_until(deadline: float, wake: threading.Event) -> float:
    """Sleep until ``deadline`` (``time.perf_counter`` s) or until ``wake`` is set; returns the seconds slept."""
    start = time.perf_counter()
    if deadline > start:
        wake.wait(deadline - start)
    return time.perf_counter() - start


@dataclass
class LiveFrame:
    """One display frame and the side panels that go with it."""

    image: np.ndarray
    status: str
    words: list[tuple[str, float]] | None = None


@dataclass
class Rates:
    """Smoothed control rate, display rate and policy latency for the status line."""

    control_hz: float = 0.0
    display_fps: float = 0.0
    policy_ms: float = 0.0
    _last_step: float | None = None
    _frames: deque = field(default_factory=deque)

    @staticmethod
    def _ema(old: float, new: float) -> float:
        return new if old == 0 else 0.8 * old + 0.2 * new

    def step(self, now: float) -> None:
        if self._last_step is not None and now > self._last_step:
            self.control_hz = self._ema(self.control_hz, 1.0 / (now - self._last_step))
        self._last_step = now

    def frame(self, now: float, window_s: float = 2.0) -> None:
        """Count a displayed frame; the rate is frames over the last ``window_s`` seconds."""
        self._frames.append(now)
        while self._frames and self._frames[0] < now - window_s:
            self._frames.popleft()
        span = now - self._frames[0]
        self.display_fps = (len(self._frames) - 1) / span if span > 0 else 0.0


class TimedPolicy:
    """Wraps a policy to time ``select_action`` (everything else passes through)."""

    def __init__(self, policy, rates: Rates):
        self._policy, self._rates = policy, rates

    def __getattr__(self, name: str):
        return getattr(self._policy, name)

    @property
    def inner(self):
        """The wrapped policy (attribute writes go to it, not to this wrapper)."""
        return self._policy

    def reset(self) -> None:
        self._policy.reset()

    def select_action(self, obs):
        t = time.perf_counter()
        a = self._policy.select_action(obs)
        self._rates.policy_ms = Rates._ema(self._rates.policy_ms, 1000 * (time.perf_counter() - t))
        return a


NO_GOAL = np.full(len(GOAL_NAMES), np.nan, np.float32)  # a frame whose instruction names no object in the scene


def keeps_goal_labels(root) -> bool:
    """Whether a sim recording saved to ``root`` keeps its ``goal_positions`` labels: yes for a new
    dataset; a dataset the app recorded before it kept them keeps its columns."""
    from vla_demo.data import format as fmt

    return fmt.keeps_column(root, GOAL_POSITIONS)


def _pad_direction(pad: tuple[float, float, float, bool]) -> tuple:
    """The gamepad's discrete state: each axis's sign outside the dead zone, and the gripper."""
    return (*(int(np.sign(v)) if abs(v) > PAD_DEAD_ZONE else 0 for v in pad[:3]), bool(pad[3]))


@dataclass
class Teleop:
    """Held-key and gamepad state from the browser, turned into an action each control step."""

    keys: frozenset[str] = frozenset()
    gamepad: tuple[float, float, float, bool] = (0.0, 0.0, 0.0, False)  # x, y, z in [-1, 1], gripper closed
    sensitivity: float = 0.5
    takeover: bool = False  # Shared mode: the operator has the arm until the hand-back key

    def moving(self) -> bool:
        return bool(set(self.keys) & (set(TELEOP_KEYS) | set(GRIPPER_KEYS))) or any(abs(v) > PAD_DEAD_ZONE for v in self.gamepad[:3]) or self.gamepad[3]

    def action(self, max_translation: float) -> np.ndarray:
        a = np.zeros(7, np.float32)
        for k in self.keys:
            if k in TELEOP_KEYS:
                axis, sign = TELEOP_KEYS[k]
                a[axis] += sign
        a[:3] += np.asarray(self.gamepad[:3], np.float32)
        a[:3] = np.clip(a[:3], -1, 1) * max_translation * self.sensitivity
        closed = bool(set(self.keys) & set(GRIPPER_KEYS)) or self.gamepad[3]
        a[6] = 0.0 if closed else 1.0
        return a


@dataclass
class Recording:
    """The in-progress episode of a session."""

    on: bool = False
    dataset: str = "recordings"
    operator: str = ""
    frames: list[dict[str, Any]] = field(default_factory=list)

    def sources(self) -> str:
        flags = [f[INTERVENTION] for f in self.frames]
        if all(flags):
            return "teleop"
        return "shared" if any(flags) else "policy"


class Session:
    """A browser tab's sim, policy and operator state (see the module docstring)."""

    def __init__(self, ctx):
        from vla_demo.evaluate import RolloutControl

        self.ctx = ctx
        self.lock = threading.RLock()
        self.env = self._make_env(wrist=False)
        self.control = RolloutControl()
        self.rates = Rates()
        self.teleop = Teleop()
        self.overlays = Overlays()
        self.recording = Recording()
        self.webcam_recording = Recording(dataset="webcam")  # webcam frames labelled with teleop actions
        self.mode = "policy"
        self.speed = 1.0
        self.render_substeps = 2
        self.running = False
        self.estopped = False
        self.closed = False
        self.message = ""
        self.history: deque[np.ndarray] = deque(maxlen=PLOT_POINTS)
        self._history_version = 0  # bumped on every change of ``history``: the chart is redrawn only then
        self._chart: tuple[int, np.ndarray] | None = None  # (version, drawn chart)
        self._step_requested = False
        self._wake = threading.Event()  # ends the stream's wait: operator input, Run, Step, close
        self._gen = None
        self._frames: list[np.ndarray] = []
        self._prediction, self._prediction_age = None, 0
        self._last_success: bool | None = None
        self._t = 0
        self.reset()

    # ------------------------------------------------------------------ controls (UI threads)
    def reset(self, seed: int | None = None, family: str | None = None, n_objects: int | None = None,
              instruction: str | None = None, split: str | None = None) -> str:
        """New scene and episode; an unsaved recording is discarded (the message says so).

        ``split`` samples the scene and instruction as that evaluation split does (default
        ``train``): ``heldout-combos`` is the one whose scenes hold the colour-shape combinations
        the policy never trained on (yellow cube, blue cylinder, green sphere).
        """
        from vla_demo.evaluate import RolloutControl, rollout

        if family not in (None, "", "any") and family not in FAMILIES:
            return self._say(f"unknown task family {family!r}")
        if split not in (None, "") and split not in SPLITS:
            return self._say(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
        if instruction:  # checked before anything changes: a refused text leaves the old scene running
            from vla_demo.sim.env import clean_instruction

            try:
                instruction = clean_instruction(instruction)
            except ValueError as e:
                return self._say(f"scene not reset: instruction not used: {e}")
        options: dict[str, Any] = {}
        if family not in (None, "", "any"):
            options["family"] = family
        if n_objects:
            options["n_objects"] = int(np.clip(int(n_objects), 2, 5))
        if split:
            options["split"] = split
        with self.lock:
            dropped = len(self.recording.frames)
            self.recording.frames = []
            self.control.stop.set()
            self.control = RolloutControl()
            self._match_cameras()
            obs, _ = self.env.reset(seed=None if seed is None or seed < 0 else int(seed), options=options)
            if instruction:
                self._set_instruction_now(instruction)
                obs = {**obs, TASK: self.env.instruction}
            self.version, policy = self.ctx.registry.make_policy(self.env)
            self.policy = TimedPolicy(policy, self.rates)
            self._sync_policy_attention()
            self._gen = rollout(self.env, self.policy, observation=obs, control=self.control,
                                render_substeps=self.render_substeps)
            self._obs, self._frames, self._t = obs, [obs[OBS_IMAGE_FRONT]], 0
            self._prediction, self._last_success = None, None
            self.history.clear()
            self._history_version += 1
            self.running, self.estopped, self.teleop.takeover = False, False, False
            self._refresh_prediction()
        note = f" (discarded {dropped} unsaved frames)" if dropped else ""
        return self._say(f"new scene: {self.env.instruction!r} on {self.version}{note}")

    def _make_env(self, wrist: bool):
        from vla_demo.sim.env import TabletopEnv

        return TabletopEnv(image_size=(self.ctx.camera_size, self.ctx.camera_size), wrist_camera=wrist)

    def _match_cameras(self) -> None:
        """Re-make the sim when the policies need other cameras than it renders (the wrist camera
        costs a second render per step: only a wrist-camera active or default policy asks for it)."""
        wrist = self.ctx.registry.sim_needs_wrist()
        if wrist != self.env.config.wrist_camera:
            self.env.close()
            self.env = self._make_env(wrist)

    def _set_instruction_now(self, text: str) -> None:
        self.env.set_instruction(text)

    def set_instruction(self, text: str) -> str:
        """Change the instruction; it takes effect on the next control step."""
        from vla_demo.sim.env import clean_instruction
        from vla_demo.sim.tasks import parse_instruction

        try:
            cleaned = clean_instruction(text if isinstance(text, str) else "")
        except ValueError as e:
            return self._say(f"instruction not used: {e}")
        if not cleaned:
            return self._say("instruction not used: it is empty")
        with self.lock:
            self.control.set_instruction(cleaned)
            self._obs = {**self._obs, TASK: cleaned}
            self._refresh_prediction()
        parsed = parse_instruction(cleaned)
        note = "" if parsed.ok else f" (not in the task grammar: {parsed.reason}; label success yourself)"
        cut = " (truncated)" if len(cleaned) < len(" ".join(text.split())) else ""
        return self._say(f"instruction: {cleaned!r}{cut}{note}")

    def run(self) -> str:
        with self.lock:
            if self._gen is None:
                return self._say("the episode is over: press Reset for a new one")
            self.running, self.estopped = True, False
        self._wake.set()  # from a paused stream's wait
        return self._say("running")

    def pause(self) -> str:
        with self.lock:
            self.running = False
        return self._say("paused")

    def step(self) -> str:
        with self.lock:
            self.running, self._step_requested = False, True
        self._wake.set()
        return self._say("one step")

    def estop(self) -> str:
        """Emergency stop: no further step is taken until Run or Reset."""
        with self.lock:
            self.running, self._step_requested, self.estopped = False, False, True
            self.control.override(None)
        return self._say("EMERGENCY STOP: motion halted")

    def set_mode(self, mode: str) -> str:
        if mode not in MODES:
            return self._say(f"unknown mode {mode!r}")
        with self.lock:
            self.mode, self.teleop.takeover = mode, False
        return self._say(f"mode: {mode}")

    def set_keys(self, keys: Any) -> None:
        """Held keys from the browser (a list of key names); in Shared mode any input takes over."""
        names = frozenset(str(k).lower()[:16] for k in (keys or [])[:16]) if isinstance(keys, (list, tuple)) else frozenset()
        with self.lock:
            before = (self.teleop.keys, self.teleop.takeover)
            if HAND_BACK_KEY in names and self.mode == "shared":
                self.teleop.takeover = False
            self.teleop.keys = names - {HAND_BACK_KEY}
            if self.mode == "shared" and self.teleop.moving():
                self.teleop.takeover = True
            self._input_news(before != (self.teleop.keys, self.teleop.takeover))

    def set_gamepad(self, x: float, y: float, z: float, grip: bool) -> None:
        vals = [float(np.clip(np.nan_to_num(v), -1, 1)) for v in (x, y, z)]
        with self.lock:
            before = (_pad_direction(self.teleop.gamepad), self.teleop.takeover)
            self.teleop.gamepad = (*vals, bool(grip))
            if self.mode == "shared" and self.teleop.moving():
                self.teleop.takeover = True
            # an analog stick changes all the time: only a new direction (or grip) is news
            self._input_news(before != (_pad_direction(self.teleop.gamepad), self.teleop.takeover))

    def _input_news(self, changed: bool) -> None:
        """Wake the stream for a changed input that drives the arm (Teleop mode, a Shared takeover, or a
        hand-back), so the step that executes it starts now instead of at the end of the period
        (key-to-motion latency). The policy's own steps keep the control rate."""
        if changed and self.running and self.mode != "policy":
            self._wake.set()

    def set_speed(self, speed: float) -> None:
        self.speed = float(np.clip(speed or 1.0, 0.1, 2.0))

    def set_sensitivity(self, s: float) -> None:
        self.teleop.sensitivity = float(np.clip(s or 0.5, 0.05, 1.0))

    def set_overlays(self, attention: bool, layer: str, arrow: bool, path: bool, gripper: bool, goal: bool = True) -> None:
        with self.lock:
            o = self.overlays
            o.attention, o.arrow, o.path, o.gripper, o.goal = bool(attention), bool(arrow), bool(path), bool(gripper), bool(goal)
            o.attention_layer = None if layer in (None, "", "rollout") else int(str(layer).split()[-1]) - 1
            self._sync_policy_attention()
            self._refresh_prediction()

    def _say(self, text: str) -> str:
        self.message = text
        return text

    # ------------------------------------------------------------------ recording
    def set_recording(self, on: bool, dataset: str | None = None, operator: str | None = None) -> str:
        return self._configure(self.recording, on, dataset, operator)

    def set_webcam_recording(self, on: bool, dataset: str | None = None, operator: str | None = None) -> str:
        """Label webcam frames: each one is buffered with the operator's held teleop action."""
        return self._configure(self.webcam_recording, on, dataset, operator)

    def _configure(self, rec: Recording, on: bool, dataset: str | None, operator: str | None) -> str:
        from vla_demo.ui.context import dataset_path

        with self.lock:
            if dataset is not None:
                try:
                    dataset_path(self.ctx.data_root, dataset)
                except ValueError as e:
                    rec.on = False
                    return self._say(str(e))
                rec.dataset = dataset.strip()
            if operator is not None:
                rec.operator = " ".join(str(operator).split())[:64]
            rec.on = bool(on)
        return self._say(f"recording into {rec.dataset!r}" if on else "recording off")

    def unsaved_frames(self) -> int:
        return len(self.recording.frames)

    def auto_success(self) -> bool | None:
        """The sim's verdict for the current instruction (None when it cannot be parsed)."""
        return self._last_success

    def save_episode(self, label: str = "auto") -> str:
        """Hand the buffered episode to the dataset's one writer. ``label``: auto|success|failure|unlabelled."""
        from vla_demo.data.format import sim_features

        success = {"success": True, "failure": False, "unlabelled": None}.get(label, self.auto_success())
        cfg = self.env.config
        return self._save(self.recording, lambda root: sim_features(cfg.image_size, cfg.wrist_camera, keeps_goal_labels(root)), success)

    def save_webcam_episode(self, label: str = "unlabelled") -> str:
        """Save the labelled webcam frames as one episode of the webcam dataset (no state)."""
        from vla_demo.data.format import webcam_features

        size = self.ctx.camera_size
        success = {"success": True, "failure": False}.get(label)
        return self._save(self.webcam_recording, lambda root: webcam_features((size, size)), success)

    def _save(self, rec: Recording, features_for, success: bool | None) -> str:
        """``features_for(root)``: the columns of the dataset at ``root`` (frames carry those, or more)."""
        from vla_demo.data.writer import DatasetWriter, EpisodeRecorder
        from vla_demo.ui.context import dataset_path

        with self.lock:
            frames = list(rec.frames)
        if not frames:
            return self._say("nothing to save: record some steps first")
        try:
            root = dataset_path(self.ctx.data_root, rec.dataset)
            features = features_for(root)
            writer = DatasetWriter.open(root, features, self.env.config.control_hz)
            recorder = EpisodeRecorder(writer)
            for f in frames:
                recorder.add_frame(f if GOAL_POSITIONS in features else {k: v for k, v in f.items() if k != GOAL_POSITIONS})
            index = recorder.finish(success, rec.sources(), rec.operator)
        except (OSError, ValueError, RuntimeError) as e:
            return self._say(f"episode NOT saved (it is still buffered, try again): {e}")
        with self.lock:
            head = rec.frames[: len(frames)]
            if len(head) == len(frames) and all(a is b for a, b in zip(head, frames)):  # not reset meanwhile
                rec.frames = rec.frames[len(frames):]
        return self._say(f"saved episode {index} ({len(frames)} frames, success={success}) to {rec.dataset!r}")

    def discard_episode(self) -> str:
        return self._discard(self.recording)

    def discard_webcam_episode(self) -> str:
        return self._discard(self.webcam_recording)

    def _discard(self, rec: Recording) -> str:
        with self.lock:
            n = len(rec.frames)
            rec.frames = []
        return self._say(f"discarded {n} frames")

    # ------------------------------------------------------------------ the loop
    def _operator_action(self) -> np.ndarray | None:
        if self.mode == "teleop" or (self.mode == "shared" and self.teleop.takeover):
            return self.teleop.action(self.env.config.action.max_translation)
        return None

    def advance(self) -> list[np.ndarray] | None:
        """Take one control step (operator override first); returns the display frames, or None when
        no step is due (paused, stopped, or the episode is over)."""
        with self.lock:
            if self._gen is None or self.estopped or not (self.running or self._step_requested):
                return None
            self._step_requested = False
            self.control.override(self._operator_action())
            try:
                rec = next(self._gen)
            except StopIteration:
                self._gen, self.running = None, False
                return None
            self._after_step(rec)
            return [*rec.info.get("frames", []), rec.next_observation[OBS_IMAGE_FRONT]]

    def _after_step(self, rec) -> None:
        self.rates.step(time.perf_counter())
        self._t = rec.step + 1
        self.history.append(np.asarray(rec.action, np.float32))
        self._history_version += 1
        self._last_success = rec.info.get("success")
        if self.recording.on:
            self.recording.frames.append({
                OBS_IMAGE_FRONT: rec.observation[OBS_IMAGE_FRONT], OBS_STATE: rec.observation[OBS_STATE],
                ACTION: rec.label, EXECUTED_ACTION: rec.action, INTERVENTION: bool(rec.intervention),
                TASK: rec.observation[TASK],
                **({OBS_IMAGE_WRIST: rec.observation[OBS_IMAGE_WRIST]} if OBS_IMAGE_WRIST in rec.observation else {}),
                # where the named objects are (the goal head's labels, as in a scripted demonstration)
                GOAL_POSITIONS: rec.info.get("goal_positions", NO_GOAL),
            })
        self._obs = rec.next_observation
        if rec.done:
            self._gen, self.running = None, False
            verdict = {True: "success", False: "failed", None: "unlabelled (instruction not in the grammar)"}[self._last_success]
            self._say(f"episode over after {self._t} steps: {verdict}" + (" (time limit)" if rec.truncated else ""))
        self._follow_prediction()

    def _sync_policy_attention(self) -> None:
        inner = getattr(getattr(self, "policy", None), "inner", None)
        if hasattr(inner, "attention_in_loop"):
            inner.attention_in_loop = self.overlays.attention

    def _follow_prediction(self) -> None:
        """After a step, overlay the policy's own newest prediction (made with attention when the
        overlay is on), so the display costs no extra forward pass; the drawn path drops the part
        of the chunk already executed. A fresh prediction is made only when the policy was not
        consulted for a whole chunk (the operator driving)."""
        latest = getattr(getattr(self, "policy", None), "last_prediction", None)
        if latest is not None and latest is not self._prediction:
            self._prediction, self._prediction_age = latest, 0
            return
        self._prediction_age += 1
        n_steps = getattr(getattr(self.policy, "config", None), "n_action_steps", 1)
        if self._prediction is None or self._prediction_age >= n_steps:
            self._refresh_prediction()

    def _refresh_prediction(self) -> None:
        """A fresh prediction (with attention when shown) on the current observation, for overlays."""
        predict = getattr(self.policy, "predict", None) if hasattr(self, "policy") else None
        self._prediction_age = 0
        if predict is None:
            self._prediction = None
            return
        try:
            obs = self._obs
            hand = self._wrist_input(obs[OBS_IMAGE_FRONT], sim=True)
            self._prediction = predict(obs[OBS_IMAGE_FRONT], obs[TASK], obs[OBS_STATE], return_attention=self.overlays.attention, **hand)
        except ValueError as e:
            self._prediction = None
            self._say(f"policy could not read this input: {e}")

    def compose(self, frame: np.ndarray) -> np.ndarray:
        """Overlays on a display-size copy of ``frame``."""
        from vla_demo import viz
        from vla_demo.sim.camera import project_points

        size = self.ctx.display_size
        out = viz.upscale(frame, size)
        o, pred = self.overlays, self._prediction
        if pred is not None and o.attention and pred.attention is not None:
            out = viz.heatmap(out, viz.attention_grid(pred.attention, o.attention_layer, o.attention_head), o.alpha)
        ee = np.asarray(self._obs[OBS_STATE][:3], np.float64)
        cam = self.env.front_camera()
        if pred is not None and (o.path or o.arrow):
            ahead = pred.chunk[min(self._prediction_age, len(pred.chunk) - 1):]  # not yet executed
            pts = project_points(viz.chunk_points(ee, ahead), cam, (size, size))
            if o.path:
                out = viz.path(out, pts)
            if o.arrow:
                out = viz.arrow(out, pts[0], pts[1])
        if pred is not None and o.goal and pred.goal is not None:
            target, dest = project_points(pred.goal, cam, (size, size))
            out = viz.goal_marks(out, target, dest)
        if o.gripper and len(self.history):
            out = viz.gripper_badge(out, float(self.history[-1][6]))
        if self.estopped:
            out = viz.banner(out, "EMERGENCY STOP")
        elif self.mode == "teleop" or (self.mode == "shared" and self.teleop.takeover):
            out = viz.banner(out, "OPERATOR DRIVING", (30, 110, 200))
        if self.recording.on:
            import cv2

            cv2.circle(out, (size - 14, 14), 7, (230, 30, 30), -1, cv2.LINE_AA)
        return out

    def status(self) -> str:
        r = self.rates
        target = self.env.config.control_hz * self.speed
        rec = f" | REC {len(self.recording.frames)} frames -> {self.recording.dataset}" if self.recording.on else ""
        state = "E-STOP" if self.estopped else ("running" if self.running else ("done" if self._gen is None else "paused"))
        return (f"{state} | mode {self.mode} | step {self._t} | control {r.control_hz:.1f} Hz (target {target:.0f}) | "
                f"display {r.display_fps:.0f} fps | policy {r.policy_ms:.1f} ms | {self.version}{rec} | {self.message}")

    def words(self) -> list[tuple[str, float]] | None:
        pred = self._prediction
        return None if pred is None or pred.attention is None else list(pred.attention.words)

    def action_chart(self) -> np.ndarray:
        """The executed actions of the last ``PLOT_POINTS`` steps, drawn (see ``ui/action_chart.py``); the
        previous drawing while the history is unchanged (a paused or idle session costs nothing)."""
        from vla_demo.ui import action_chart

        with self.lock:
            version, cached = self._history_version, self._chart
            if cached is not None and cached[0] == version:
                return cached[1]
            start, history = self._t - len(self.history), np.asarray(self.history, np.float32)
        chart = action_chart.draw(history, start, self.env.config.action.low_high()[1], points=PLOT_POINTS)
        with self.lock:
            self._chart = (version, chart)
        return chart

    def stream(self, max_frames: int | None = None):
        """Yield :class:`LiveFrame` s forever (or ``max_frames``), paced at the control rate times the speed,
        with the sim's in-between frames spread evenly over each control period (:func:`frame_spacing`).
        A change of the operator's input while they drive ends the wait at once: the next control
        step, which executes it, starts without waiting out the period (the rest of the current
        step's in-between frames, which show the old motion, are dropped). Run, Step and close end
        it too."""
        n, wake = 0, self._wake
        while not self.closed and (max_frames is None or n < max_frames):
            t0 = time.perf_counter()
            wake.clear()
            frames = self.advance()
            stepped = frames is not None
            if not stepped:
                frames = [self._obs[OBS_IMAGE_FRONT]]
            period = 1.0 / (self.env.config.control_hz * self.speed) if stepped else PAUSED_PERIOD_S
            first = spacing = slept = 0.0
            for i, f in enumerate(frames):
                if i:
                    slept += _wait_until(first + spacing * i, wake)
                    if wake.is_set():
                        break
                with self.lock:
                    image = self.compose(f)
                    live = LiveFrame(image, self.status(), self.words() if i == len(frames) - 1 else None)
                self.rates.frame(time.perf_counter())
                yield live
                n += 1
                if i == 0:
                    first = time.perf_counter()
                    spacing = frame_spacing(period, len(frames), first - t0)
            if stepped and not wake.is_set():  # the share of the period the step and its frames took, waits not counted
                self._shed_frames((time.perf_counter() - t0 - slept) / period - 1.0)
            _wait_until(t0 + period, wake)

    def _shed_frames(self, late: float) -> None:
        """Keep the control rate before the smoothness: while a control step (its frames included)
        overruns its period by more than 10% (``late``, a fraction of the period), the next steps
        render one in-between display frame fewer; with 40% to spare, one more (up to
        ``render_substeps``). Under load (several sessions on 2 cores) this is what holds a
        session near its control rate."""
        c = self.control
        current = self.render_substeps if c.render_substeps is None else c.render_substeps
        if late > 0.1:
            current -= 1
        elif late < -0.4:
            current += 1
        c.render_substeps = int(np.clip(current, 0, self.render_substeps))

    # ------------------------------------------------------------------ probe and webcam
    def current_frame(self) -> np.ndarray:
        with self.lock:
            return self._obs[OBS_IMAGE_FRONT].copy()

    def probe(self, image: Any, instructions: list[str]) -> tuple[list[tuple[np.ndarray, str]], list[list]]:
        """One frame, several instructions: an attention overlay and the predicted action for each.
        Uses the current sim state only when the image is the current sim frame."""
        from vla_demo import viz
        from vla_demo.constants import ACTION_NAMES
        from vla_demo.policy import to_image_array

        predict = getattr(self.policy, "predict", None)
        if predict is None:
            raise ValueError(f"{self.version} is not a learned policy: the probe needs predictions and attention")
        frame = to_image_array(image if image is not None else self.current_frame())
        texts = [t.strip()[:256] for t in instructions if isinstance(t, str) and t.strip()][:4]
        if not texts:
            raise ValueError("type at least one instruction")
        gallery, rows = [], []
        hand = self._wrist_input(frame, sim=image is None)
        for text in texts:
            pred = predict(frame, text, None, return_attention=True, **hand)
            shown = viz.heatmap(viz.upscale(frame, 256), pred.attention.image_rollout)
            gallery.append((shown, text))
            rows.append([text, *[round(float(v), 4) for v in pred.action]])
        return gallery, [["instruction", *ACTION_NAMES], *rows]

    def webcam(self, image: Any, instruction: str) -> tuple[np.ndarray | None, str]:
        """A webcam frame through the same policy (no proprioceptive state) with overlays."""
        from vla_demo import viz
        from vla_demo.policy import to_image_array

        predict = getattr(self.policy, "predict", None)
        if image is None:
            return None, "waiting for the webcam"
        if predict is None:
            return None, f"{self.version} is not a learned policy; pick one in the Fine-tune tab"
        frame = to_image_array(image)
        t = time.perf_counter()
        hand = self._wrist_input(frame, sim=False)
        pred = predict(frame, (instruction or "").strip()[:256], None, return_attention=self.overlays.attention, **hand)
        ms = 1000 * (time.perf_counter() - t)
        out = viz.upscale(frame, self.ctx.display_size) if frame.shape[0] < self.ctx.display_size else frame.copy()
        if pred.attention is not None:
            out = viz.heatmap(out, pred.attention.image_rollout)
        h, w = out.shape[:2]
        dx, dy = pred.action[0], pred.action[1]  # world x is up/down on screen, y is left/right (front camera)
        scale = 0.35 * min(h, w) / 0.02
        out = viz.arrow(out, (w / 2, h / 2), (w / 2 + dy * scale, h / 2 + dx * scale))
        out = viz.gripper_badge(out, float(pred.action[6]))
        action = ", ".join(f"{v:+.3f}" for v in pred.action)
        note = self._label_webcam_frame(frame, instruction)
        blank = " | wrist camera: none (blank input; this policy was trained with one)" if hand else ""
        return out, f"action [{action}] | policy {ms:.1f} ms | state: none (webcam){blank}{note}"

    def _wrist_input(self, frame: np.ndarray, sim: bool) -> dict[str, np.ndarray]:
        """``wrist=`` for a policy that needs the hand's view: the sim's own when ``frame`` is the
        sim's, else a blank image (a webcam has no hand camera: the policy then acts on the front view
        alone, which it never trained for; the webcam's status line says so)."""
        from vla_demo.evaluate import uses_wrist

        if not uses_wrist(self.policy):
            return {}
        if sim:
            with self.lock:
                hand = self._obs.get(OBS_IMAGE_WRIST)  # observations are replaced each step, never written to
            if hand is not None:
                return {"wrist": hand}
        return {"wrist": np.zeros_like(frame)}

    def _label_webcam_frame(self, frame: np.ndarray, instruction: str) -> str:
        """Buffer the frame, resized to the camera size the way the policy squares its input, with
        the operator's held teleop action as the label."""
        rec = self.webcam_recording
        if not rec.on:
            return ""
        import cv2

        size = self.ctx.camera_size
        label = self.teleop.action(self.env.config.action.max_translation)
        with self.lock:
            rec.frames.append({OBS_IMAGE_FRONT: cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA), ACTION: label,
                               INTERVENTION: True, TASK: (instruction or "").strip()[:256]})
            n = len(rec.frames)
        return f" | labelling: {n} frames buffered for {rec.dataset!r}"

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self._wake.set()  # the stream ends now, not after its wait
            self.control.stop.set()
            self.recording.frames = []
            self.env.close()
