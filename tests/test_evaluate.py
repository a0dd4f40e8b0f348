"""The shared rollout loop and the evaluation harness."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from vla_demo.constants import TASK
from vla_demo.evaluate import (
    RolloutControl,
    evaluate,
    markdown_table,
    other_instruction,
    rollout,
    summarize,
    difference_interval,
    wilson_interval,
)
from vla_demo.sim.expert import ScriptedExpert


class ConstantPolicy:
    """Moves up with the gripper open; counts resets and records what it was shown."""

    def __init__(self):
        self.resets, self.seen = 0, []

    def reset(self):
        self.resets += 1

    def select_action(self, obs):
        self.seen.append(obs[TASK])
        return np.array([0, 0, 0.01, 0, 0, 0, 1], np.float32)


def test_rollout_yields_one_record_per_step_until_done(env):
    records = list(rollout(env, ScriptedExpert(env), seed=0, options={"family": "reach"}))
    assert records and records[-1].terminated and records[-1].info["success"]
    assert [r.step for r in records] == list(range(len(records)))
    for prev, nxt in zip(records, records[1:], strict=False):
        assert prev.next_observation is nxt.observation


def test_rollout_max_steps_and_stop(env):
    policy = ConstantPolicy()
    assert len(list(rollout(env, policy, seed=0, max_steps=4))) == 4
    control = RolloutControl()
    loop = rollout(env, policy, seed=0, control=control)
    next(loop)
    control.stop.set()
    assert list(loop) == []


def test_rollout_pause_override_and_instruction_change(env):
    policy = ConstantPolicy()
    control = RolloutControl()
    loop = rollout(env, policy, seed=1, options={"family": "pick", "n_objects": 2}, control=control)
    first = next(loop)
    assert not first.intervention and first.action[2] == pytest.approx(0.01)
    control.paused.set()
    paused = next(loop)
    assert paused.paused and paused.action is None and env.steps == 1
    control.paused.clear()
    teleop = np.array([0.02, 0, 0, 0, 0, 0, 0], np.float32)
    control.override(teleop)
    rec = next(loop)
    assert rec.intervention and np.array_equal(rec.action, teleop) and np.array_equal(rec.label, teleop)
    resets = policy.resets
    name = env.scene.objects[1].name
    control.set_instruction(f"touch the {name}")
    rec = next(loop)
    assert policy.resets == resets + 1  # queued chunks are flushed on a new instruction
    assert rec.observation[TASK] == f"touch the {name}" and rec.info["family"] == "reach"


def test_rollout_policy_instruction_is_shown_to_the_policy_only(env):
    policy = ConstantPolicy()
    records = list(rollout(env, policy, seed=0, options={"family": "pick"}, max_steps=3, policy_instruction="x"))
    assert set(policy.seen) == {"x"} and records[0].observation[TASK] != "x"


def test_control_is_thread_safe():
    control = RolloutControl()
    threads = [threading.Thread(target=control.override, args=(np.full(7, i, np.float32),)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    action, instruction = control.take()
    assert action is not None and instruction is None
    assert control.take() == (None, None)


def test_difference_interval_matches_newcombe():
    # Newcombe (1998), method 10, example (a): 56/70 vs 48/80 -> 0.0524 to 0.3339
    lo, hi = difference_interval(48, 80, 56, 70)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    lo, hi = difference_interval(56, 70, 48, 80)  # the other way round: the mirror image
    assert (round(lo, 4), round(hi, 4)) == (-0.3339, -0.0524)
    lo, hi = difference_interval(0, 10, 10, 10)
    assert 0 < lo < hi <= 1


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_summarize_and_table():
    rows = [{"family": "pick", "success": s, "length": 10} for s in (True, True, False, True)]
    table = summarize(rows)
    assert table["pick"]["episodes"] == 4 and table["pick"]["successes"] == 3
    assert table["pick"]["success_rate"] == 0.75 and table["pick"]["mean_length"] == 10
    report = {"policy": "p", "split": "train", "seed": 0, "families": table, "baselines": {}}
    assert "| pick | 4 | 75%" in markdown_table(report)


def test_other_instruction_is_deterministic_and_from_another_family():
    from vla_demo.sim.tasks import parse_instruction

    a = other_instruction("pick", "train", 5)
    assert a == other_instruction("pick", "train", 5)
    assert parse_instruction(a).goal.family != "pick"


@pytest.mark.slow
def test_evaluate_expert_report_has_the_contract_keys(tmp_path):
    report = evaluate("expert", split="train", episodes_per_family=2, seed=3, families=("reach", "pick"),
                      workers=1, clips_dir=tmp_path)
    assert {"policy", "split", "seed", "families", "baselines", "two_candidates", "table_markdown",
            "failure_clips"} <= set(report)
    for fam in ("reach", "pick"):
        row = report["families"][fam]
        assert {"episodes", "successes", "success_rate", "ci95", "mean_length"} <= set(row)
        assert row["episodes"] == 2 and row["ci95"][0] <= row["success_rate"] <= row["ci95"][1]
    assert set(report["baselines"]) == {"expert", "language_blind"}
    assert report["baselines"]["expert"]["families"] == report["families"]
    blind = report["baselines"]["language_blind"]["families"]
    assert sum(r["successes"] for r in blind.values()) <= sum(r["successes"] for r in report["families"].values())
    two = report["two_candidates"]
    assert two["episodes"] == 2 and 0 <= two["rate"] <= 1


def test_evaluate_can_skip_the_baselines_and_the_two_candidate_test():
    report = evaluate("expert", split="train", episodes_per_family=2, seed=3, families=("reach",), workers=1,
                      baselines=False, two_candidates=False)
    assert report["families"]["reach"]["episodes"] == 2 and report["baselines"] == {}
    assert report["two_candidates"] == {"episodes": 0, "instructed_target": 0, "rate": 0.0}


def test_evaluate_rejects_unknown_policies_and_splits(env):
    with pytest.raises(ValueError, match="unknown split"):
        evaluate("expert", split="test")
    from vla_demo.evaluate import load_policy

    with pytest.raises(ValueError, match="unknown policy"):
        load_policy("ftp://nowhere", env)


def test_evaluate_runs_a_checkpoint_folder(tmp_path):
    from vla_demo.model.tokenizer import InstructionTokenizer
    from vla_demo.policy import LanguageConditionedPolicy

    policy = LanguageConditionedPolicy.build("default", tokenizer=InstructionTokenizer.train(), image_size=32,
                                             d_model=32, n_heads=2, n_layers=1, head_hidden=32)
    path = policy.save_pretrained(tmp_path / "ckpt")
    report = evaluate(str(path), episodes_per_family=1, seed=0, families=("reach",), workers=1, baselines=False)
    row = report["families"]["reach"]
    assert row["episodes"] == 1 and 1 <= row["mean_length"] <= 120
