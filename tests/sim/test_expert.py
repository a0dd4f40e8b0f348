"""Scripted expert: succeeds per family, follows the instruction, noise and detours perturb execution only."""

from __future__ import annotations

import numpy as np
import pytest

from vla_demo.constants import FAMILIES, OBS_STATE
from vla_demo.evaluate import rollout
from vla_demo.sim.expert import DETOUR_BELOW_Z, NO_DETOUR_PHASES, ScriptedExpert


def run(env, expert, seed, **options):
    records = list(rollout(env, expert, seed=seed, options=options))
    return records, bool(records[-1].info["success"])


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_expert_succeeds_on_a_sample_of_each_family(env, family):
    expert = ScriptedExpert(env)
    wins = sum(run(env, expert, seed, family=family)[1] for seed in range(6))
    assert wins >= 5, f"{family}: {wins}/6"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["pick", "place"])
def test_noisy_expert_still_succeeds_and_labels_stay_clean(env, family):
    expert = ScriptedExpert(env, noise=0.3, seed=0)
    wins, gaps = 0, []
    for seed in range(4):
        records, ok = run(env, expert, seed, family=family)
        wins += ok
        gaps += [np.abs(r.action[:6] - r.label[:6]).max() for r in records]
        for r in records:
            np.testing.assert_array_equal(r.action[6], r.label[6])  # the gripper is never perturbed
            assert np.all(np.abs(r.label[:3]) <= 0.02 + 1e-6)  # labels respect the limits
    assert wins >= 3 and max(gaps) > 0.004


def test_expert_follows_the_instruction_not_the_sampled_task(env):
    obs, _ = env.reset(seed=4, options={"family": "pick", "n_objects": 3})
    other = env.scene.objects[2]
    env.set_instruction(f"touch the {other.name}")
    records = list(rollout(env, ScriptedExpert(env), observation={**obs, "task": env.instruction}))
    assert records[-1].info["success"] and records[-1].info["target"]["index"] == 2


def test_expert_holds_still_on_an_instruction_it_cannot_ground(env):
    obs, _ = env.reset(seed=0, options={"family": "reach"})
    expert = ScriptedExpert(env)
    start = obs[OBS_STATE][:3].copy()
    obs = {**obs, "task": "wave hello"}
    for _ in range(5):
        a = expert.select_action(obs)
        obs = {**env.step(a)[0], "task": "wave hello"}
    assert np.linalg.norm(obs[OBS_STATE][:3] - start) < 0.01


def test_negative_noise_is_rejected(env):
    with pytest.raises(ValueError, match="noise"):
        ScriptedExpert(env, noise=-1)


def test_detours_are_full_speed_horizontal_moves_near_the_table_with_clean_labels(env):
    obs, _ = env.reset(seed=3, options={"family": "pick"})
    expert = ScriptedExpert(env, detour=0.5, seed=1)
    detour_steps = []
    for _ in range(60):
        z, phase = obs[OBS_STATE][2], expert.phase
        a = expert.select_action(obs)
        off = not np.allclose(a[:2], expert.label[:2])
        if off:
            detour_steps.append((z, phase))
            assert np.hypot(*a[:2]) == pytest.approx(0.02, rel=1e-4)  # full speed, horizontal
            np.testing.assert_array_equal(a[2:], expert.label[2:])  # height, rotation, gripper untouched
        obs = env.step(a)[0]
    assert detour_steps, "p=0.5 near the table must start excursions"
    assert all(z <= DETOUR_BELOW_Z + 0.021 for z, _ in detour_steps)  # the hand was low (one step of slack)
    assert not any(phase in NO_DETOUR_PHASES for _, phase in detour_steps)


def test_no_detour_keeps_the_executed_action_equal_to_the_label(env):
    obs, _ = env.reset(seed=3, options={"family": "pick"})
    expert = ScriptedExpert(env, seed=1)
    for _ in range(30):
        a = expert.select_action(obs)
        np.testing.assert_array_equal(a, expert.label)
        obs = env.step(a)[0]


@pytest.mark.slow
def test_expert_recovers_from_detours(env):
    expert = ScriptedExpert(env, noise=0.3, detour=0.15, seed=0)
    wins = sum(run(env, expert, seed, family="pick")[1] for seed in range(4))
    assert wins >= 3, f"{wins}/4"


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_detour_outside_0_1_is_rejected(env, p):
    with pytest.raises(ValueError, match="detour"):
        ScriptedExpert(env, detour=p)


def hand_at(env, seed: int, offset_xy: tuple[float, float], height: float):
    """Reset a pick scene and drive the open hand to ``offset_xy`` (m) beside the target, ``height`` above it."""
    obs, _ = env.reset(seed=seed, options={"family": "pick"})
    target = env.world_view().positions[env.goal.target]
    goal = target + np.array([*offset_xy, height])
    for _ in range(40):
        delta = np.clip(goal - obs[OBS_STATE][:3], -0.02, 0.02)
        obs = env.step(np.array([*delta, 0, 0, 0, 1], np.float32))[0]
    assert np.linalg.norm(obs[OBS_STATE][:3] - goal) < 0.005
    return obs


@pytest.mark.parametrize("offset, follow_descends", [((0.015, 0.0), True), ((0.0, 0.05), False)])
def test_a_following_expert_takes_a_low_hand_from_where_it_is(env, offset, follow_descends):
    obs = hand_at(env, seed=2, offset_xy=offset, height=0.06)  # below the 0.10 m hover point
    demo = ScriptedExpert(env).select_action({**obs, "task": env.instruction})
    follower = ScriptedExpert(env, follow=0.02)
    a = follower.select_action({**obs, "task": env.instruction})
    assert demo[2] > 0.01  # the demonstrator goes back up to its hover point first
    if follow_descends:  # 1.5 cm off its line: lowering, re-centring on the way down
        assert follower.phase == "descend" and a[2] < -0.01 and a[0] < 0
    else:  # 5 cm off: sideways at this height, neither up nor down into the object
        assert follower.phase == "approach" and abs(a[2]) < 1e-3 and a[1] < -0.01


def test_negative_follow_is_rejected(env):
    with pytest.raises(ValueError, match="follow"):
        ScriptedExpert(env, follow=-0.01)
