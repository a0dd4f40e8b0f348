"""A scripted corrective operator: shared-autonomy data without a human (HG-DAgger style).

The learned policy drives. The scripted expert watches every step (its phase machine follows the
scene as the policy moves it) and takes over once the policy strays:

* its translation points away from the expert's (cosine below ``min_cosine`` while the expert
  wants to move at least ``min_speed``), or its gripper command disagrees, for ``patience``
  consecutive steps; or
* the episode is ``stall_steps`` long without success.

By default it then drives to the end of the episode. With ``handback`` > 0 it gives control back
after driving that many steps (HG-DAgger's operator returns control once the state is safe again),
the policy replans from there and may stray and be corrected again, so one episode can hold
corrections at several of the policy's failure states; after ``stall_steps`` it keeps control.

The expert follows the policy's hand (``ScriptedExpert(follow=...)``): a policy lowering a
centimetre or two off the expert's own line is not taken over for it. Without that, the expert's
phase machine still wanted the hand at the hover point it would itself have passed: in 10
corrected pick episodes of the 2026-12-03 variant, 2 of the 5 takeovers were of descents on target
(76 operator frames; 42 with ``follow=0.02``, every takeover a real miss of 3-7 cm).

Frames the expert drove are flagged ``intervention`` and labelled with the expert's action. The
policy's own frames keep its action as the label, as in a Shared-mode recording from the app (a
fine-tune does not draw those: ``TrainConfig.own_action_weight``); ``relabel`` labels them with the
expert's action for the same observation instead (DAgger), which a human operator could not do.
Measured on 100 pick scenes (2026-12-01), relabelling made the fine-tuned variant far worse (11%
against 38% without): the expert's phase machine answers a policy's low, off-target approach with
"lift first", opposite to the demonstrations' descent from similar-looking states, and the
regression averages the two. Episodes go through the one dataset writer, so they train like any
recorded data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla_demo.config import require
from vla_demo.constants import ACTION, EXECUTED_ACTION, GOAL_POSITIONS, INTERVENTION, OBS_IMAGE_FRONT, OBS_IMAGE_WRIST, OBS_STATE, TASK


@dataclass
class CorrectorConfig:
    """When the scripted operator takes over (see the module docstring)."""

    # A later takeover (patience 6, min_cosine -0.3) moved the operator's frames to the last
    # centimetres above the object and left the fine-tuned variant at 11% pick against 36-38% with
    # these values (100 scenes, 2026-12-01): there the expert re-centres where demonstrations descend.
    patience: int = 3
    min_cosine: float = 0.0
    min_speed: float = 0.005
    stall_steps: int = 60
    relabel: bool = False  # DAgger labels on the policy's own frames (see the module docstring)
    handback: int = 0  # steps the operator drives before giving control back (0: to the end)
    follow: float = 0.02  # m: a policy lowering this close to the expert's line is lowering (ScriptedExpert)

    def __post_init__(self) -> None:
        require(self.patience >= 1 and self.stall_steps >= 1, "patience and stall_steps must be >= 1")
        require(self.handback >= 0, f"handback must be >= 0 steps, got {self.handback}")
        require(-1 <= self.min_cosine <= 1 and self.min_speed >= 0, "min_cosine in [-1, 1] and min_speed >= 0")
        require(self.follow >= 0, f"follow must be >= 0 m, got {self.follow}")


class ScriptedCorrector:
    """Watches a policy step by step and decides when the scripted expert takes over."""

    def __init__(self, env, config: CorrectorConfig | None = None):
        from vla_demo.sim.expert import ScriptedExpert

        self.config = config or CorrectorConfig()
        self.expert = ScriptedExpert(env, follow=self.config.follow)
        self.reset()

    def reset(self) -> None:
        self.expert.reset()
        self.streak = 0
        self.driven = 0  # steps the operator has driven since it last took over
        self.engaged = False
        self.advice: np.ndarray | None = None  # the expert's action for the last watched observation

    def strays(self, policy_action: np.ndarray, expert_action: np.ndarray) -> bool:
        """Does this one step of the policy disagree with the expert?"""
        c = self.config
        p, e = np.asarray(policy_action[:3], np.float64), np.asarray(expert_action[:3], np.float64)
        wrong_way = np.linalg.norm(e) >= c.min_speed and float(p @ e) < c.min_cosine * np.linalg.norm(p) * np.linalg.norm(e)
        wrong_grip = (policy_action[6] >= 0.5) != (expert_action[6] >= 0.5)
        return bool(wrong_way or wrong_grip)

    def watch(self, obs: dict[str, Any], policy_action: np.ndarray, step: int) -> None:
        """Feed the step the policy just took from ``obs``; may engage the takeover."""
        expert_action = self.advice = self.expert.select_action(obs)
        self.streak = self.streak + 1 if self.strays(policy_action, expert_action) else 0
        self.engaged = self.streak >= self.config.patience or self.stalled(step)

    def stalled(self, step: int) -> bool:
        """Is the episode ``stall_steps`` long after ``step`` (the operator then keeps control)?"""
        return step + 1 >= self.config.stall_steps

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """The expert's action for ``obs`` (call once per observation while engaged)."""
        return self.expert.select_action(obs)

    def drove(self, step: int) -> bool:
        """Count one step the operator drove; True when it hands control back to the policy now."""
        self.driven += 1
        c = self.config
        if not c.handback or self.driven < c.handback or self.stalled(step):
            return False
        self.engaged, self.streak, self.driven = False, 0, 0
        return True


def corrected_episode(env, policy, corrector: ScriptedCorrector, seed: int, options: dict[str, Any]):
    """Roll ``policy`` out under ``corrector`` through the shared loop.

    Returns:
        (frames dict of stacked arrays, per-frame tasks, success, number of intervention frames).
    """
    from vla_demo.evaluate import RolloutControl, rollout

    control = RolloutControl()
    corrector.reset()
    cameras = [OBS_IMAGE_FRONT] + ([OBS_IMAGE_WRIST] if env.config.wrist_camera else [])
    rows: dict[str, list] = {k: [] for k in (*cameras, OBS_STATE, ACTION, EXECUTED_ACTION, INTERVENTION, GOAL_POSITIONS)}
    tasks, success = [], False
    for rec in rollout(env, policy, seed=seed, options=options, control=control):
        if not rec.intervention:
            corrector.watch(rec.observation, rec.action, rec.step)
        elif corrector.drove(rec.step):
            policy.reset()  # its queued chunk was planned before the operator moved the arm
        if corrector.engaged and not rec.done:
            control.override(corrector.act(rec.next_observation))
        for k in cameras:
            rows[k].append(rec.observation[k])
        rows[OBS_STATE].append(rec.observation[OBS_STATE])
        relabelled = corrector.config.relabel and not rec.intervention and corrector.advice is not None
        rows[ACTION].append(corrector.advice if relabelled else rec.label)
        rows[EXECUTED_ACTION].append(rec.action)
        rows[INTERVENTION].append(rec.intervention)
        rows[GOAL_POSITIONS].append(rec.info["goal_positions"])  # the same labels as a demonstration's
        tasks.append(rec.observation[TASK])
        success = bool(rec.info.get("success"))
    frames = {k: np.stack(v) for k, v in rows.items()}
    frames[INTERVENTION] = frames[INTERVENTION].astype(bool)
    return frames, tasks, success, int(frames[INTERVENTION].sum())


def record_corrections(policy_dir: str | os.PathLike, family: str, episodes: int, out: str | os.PathLike,
                       seed: int = 0, split: str = "train", config: CorrectorConfig | None = None) -> dict[str, Any]:
    """Record ``episodes`` corrected episodes of ``family`` into the dataset at ``out``.

    Seeds come from the collection range, so they never coincide with evaluation scenes.
    Returns a summary: saved, successes, intervention frames, frames.
    """
    from tqdm import tqdm

    from vla_demo.config import SimConfig
    from vla_demo.data.collect import collection_seed
    from vla_demo.data.format import sim_features
    from vla_demo.data.writer import DatasetWriter, Episode
    from vla_demo.evaluate import load_policy, uses_wrist
    from vla_demo.sim.env import TabletopEnv

    env = TabletopEnv()
    policy = load_policy(str(policy_dir), env)
    if uses_wrist(policy):  # a wrist-camera policy: render (and record) the hand's view too
        env.close()
        env = TabletopEnv(wrist_camera=True)
    corrector = ScriptedCorrector(env, config)
    note = f"Shared-autonomy corrections of `{Path(policy_dir).name}` on {family} by a scripted operator."
    with DatasetWriter.held(out, sim_features(env.config.image_size, env.config.wrist_camera, goals=True), SimConfig().control_hz, card_note=note) as writer:
        summary = {"saved": 0, "successes": 0, "intervention_frames": 0, "frames": 0, "dataset": str(writer.root)}
        start = writer.num_episodes
        for i in tqdm(range(episodes), desc=f"corrections -> {Path(out).name}", unit="ep"):
            s = collection_seed(seed + 7919, start + i)
            frames, tasks, success, n_int = corrected_episode(env, policy, corrector, s, {"family": family, "split": split})
            writer.save_episode(Episode(frames, tasks, success, "shared", "scripted-corrector"))
            summary["saved"] += 1
            summary["successes"] += success
            summary["intervention_frames"] += n_int
            summary["frames"] += len(tasks)
    env.close()
    return summary
