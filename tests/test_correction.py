"""The scripted corrective operator: takes over only when the policy strays, flags what it drove."""

from __future__ import annotations

import numpy as np
import pytest

from vla_demo.correction import CorrectorConfig, ScriptedCorrector, corrected_episode, record_corrections
from vla_demo.data.reader import DatasetReader
from vla_demo.sim.env import TabletopEnv
from vla_demo.sim.expert import ScriptedExpert


class GoUp:
    """A policy that lifts the open gripper whatever it is told: it strays at once."""

    def reset(self):
        pass

    def select_action(self, obs):
        return np.array([0, 0, 0.02, 0, 0, 0, 1], np.float32)


@pytest.fixture(scope="module")
def env():
    e = TabletopEnv(image_size=(32, 32))
    yield e
    e.close()


def test_stray_test_looks_at_direction_and_gripper(env):
    c = ScriptedCorrector(env)
    expert = np.array([0.02, 0, 0, 0, 0, 0, 1.0])
    assert not c.strays(np.array([0.01, 0.005, 0, 0, 0, 0, 1.0]), expert)
    assert c.strays(np.array([-0.01, 0, 0, 0, 0, 0, 1.0]), expert)  # wrong way
    assert c.strays(np.array([0.02, 0, 0, 0, 0, 0, 0.0]), expert)  # wrong gripper
    assert not c.strays(np.array([-0.01, 0, 0, 0, 0, 0, 1.0]), np.array([0.001, 0, 0, 0, 0, 0, 1.0]))  # expert ~still
    with pytest.raises(ValueError):
        CorrectorConfig(patience=0)


@pytest.mark.parametrize("relabel", [False, True])
def test_expert_takes_over_a_straying_policy_and_finishes_the_task(env, relabel):
    c = ScriptedCorrector(env, CorrectorConfig(patience=3, relabel=relabel))
    frames, tasks, success, n_int = corrected_episode(env, GoUp(), c, seed=5, options={"family": "reach"})
    flags = frames["intervention"]
    assert success and n_int == flags.sum() > 0
    assert not flags[:3].any() and flags[3:].all()  # three straying steps, then the operator drives to the end
    went_up = np.array([0, 0, 0.02, 0, 0, 0, 1], np.float32)
    assert np.allclose(frames["executed_action"][:3], went_up)  # what the policy did is kept either way
    if relabel:  # DAgger: the policy's frames carry the expert's answer for the same observation
        env.reset(seed=5, options={"family": "reach"})
        advice = ScriptedExpert(env).select_action(env._observation())
        assert np.allclose(frames["action"][0], advice) and not np.allclose(frames["action"][:3], went_up)
    else:  # as in a Shared-mode recording: the policy's own frames keep its label
        assert np.allclose(frames["action"][:3], went_up)
    assert len(tasks) == len(flags) and frames["observation.images.front"].shape[1:] == (32, 32, 3)


class Counting(GoUp):
    """GoUp that counts its resets (the corrected episode replans it at every hand-back)."""

    resets = 0

    def reset(self):
        self.resets += 1


def test_the_operator_hands_back_control_and_corrects_again(env):
    c = ScriptedCorrector(env, CorrectorConfig(patience=3, handback=5, stall_steps=30))
    policy = Counting()
    frames, _, success, n_int = corrected_episode(env, policy, c, seed=5, options={"family": "reach"})
    flags = frames["intervention"]
    # three straying steps, five steps of the operator, control back, three more straying steps ...
    assert flags[:24].tolist() == ([False] * 3 + [True] * 5) * 3
    assert policy.resets == 1 + 3  # the rollout's reset, then one per hand-back
    assert flags[30:].all() and success  # ... until stall_steps: then the operator keeps control
    assert np.allclose(frames["action"][~flags], GoUp().select_action(None))  # the policy's own frames keep its label
    with pytest.raises(ValueError, match="handback"):
        CorrectorConfig(handback=-1)


def test_a_policy_that_agrees_is_never_corrected(env):
    frames, _, success, n_int = corrected_episode(env, ScriptedExpert(env), ScriptedCorrector(env), seed=6,
                                                  options={"family": "pick"})
    assert success and n_int == 0 and not frames["intervention"].any()


def test_record_corrections_writes_flagged_shared_episodes(tmp_path):
    from vla_demo.policy import LanguageConditionedPolicy

    untrained = LanguageConditionedPolicy.build("default", image_size=32, d_model=32, n_heads=2, n_layers=1, head_hidden=32)
    untrained.save_pretrained(tmp_path / "policy")
    summary = record_corrections(tmp_path / "policy", "reach", 2, tmp_path / "ds", seed=1)
    reader = DatasetReader(tmp_path / "ds")
    assert summary["saved"] == reader.num_episodes == 2
    flags = np.concatenate([reader.episode_columns(e)["intervention"] for e in range(2)])
    assert flags.sum() == summary["intervention_frames"] > 0
    assert {reader.episode(e)["source"] for e in range(2)} == {"shared"}
    goals = reader.episode_columns(0)["goal_positions"]  # the goal head's labels, as in a demonstration
    assert goals.shape == (len(reader.episode_columns(0)["intervention"]), 6) and np.isfinite(goals).all()
    assert np.abs(goals[:, :2]).max() > 0.05  # real table coordinates, not a filler


def test_corrections_of_a_wrist_camera_policy_record_the_wrist_camera(tmp_path):
    from vla_demo.constants import OBS_IMAGE_WRIST
    from vla_demo.policy import LanguageConditionedPolicy

    LanguageConditionedPolicy.build("default", image_size=32, d_model=32, n_heads=2, n_layers=1, head_hidden=32,
                                    wrist=True).save_pretrained(tmp_path / "policy")
    record_corrections(tmp_path / "policy", "reach", 1, tmp_path / "ds", seed=1)
    reader = DatasetReader(tmp_path / "ds")
    assert OBS_IMAGE_WRIST in reader.features
    wrist = reader.frames(OBS_IMAGE_WRIST, 0)
    assert len(wrist) == len(reader.episode_columns(0)["intervention"]) and wrist.std() > 0
