"""scripts/grounding_probe.py: the first-frame grounding count on the evaluation scenes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def probe():
    return load_script("grounding_probe")


def aim_goal_head_at(monkeypatch, probe, pick):
    """Make the policy's goal head answer with the position of ``pick(env)``'s object."""
    from vla_demo.policy import LanguageConditionedPolicy, Prediction

    def predict(self, image, instruction, state=None, return_attention=False, wrist=None):
        env = probe.policy_env(self)  # the probe's own (cached) env
        goal = np.zeros((2, 3), np.float32)
        goal[0] = env.world_view().positions[pick(env)]
        return Prediction(np.zeros(7, np.float32), np.zeros((1, 7), np.float32), None, goal)

    monkeypatch.setattr(LanguageConditionedPolicy, "predict", predict)


@pytest.mark.parametrize("aim, share", [("target", 1.0), ("other", 0.0)])
def test_the_probe_counts_the_scenes_whose_estimate_is_nearest_the_named_object(probe, tiny_policy_dir, monkeypatch,
                                                                                 tmp_path, aim, share):
    def pick(env):
        return env.goal.target if aim == "target" else (env.goal.target + 1) % len(env.scene.objects)

    aim_goal_head_at(monkeypatch, probe, pick)
    out = tmp_path / "g.json"
    results = probe.main(["--policy", str(tiny_policy_dir), "--families", "pick", "reach", "--scenes", "3",
                          "--split", "heldout-combos", "--json", str(out)])
    for r in results[str(tiny_policy_dir)].values():
        assert r["scenes"] == 3 and r["nearest_is_target"] == share
        assert (r["median_cm"] < 1e-3) == (aim == "target")  # float32 positions
        assert sum(r["misses"].values()) == round(3 * (1 - share))
        parts = r["same_colour_present"], r["same_colour_absent"]
        assert sum(p["scenes"] for p in parts) == 3 and sum(p["hits"] for p in parts) == round(3 * share)
    assert out.read_text().count("nearest_is_target") == 2


def test_a_miss_is_named_by_how_the_chosen_object_relates_to_the_named_one(probe):
    from vla_demo.sim.scene import ObjectSpec

    objs = [ObjectSpec(c, s, 0.0, 0.0) for c, s in
            [("red", "cube"), ("red", "cylinder"), ("blue", "cube"), ("green", "sphere"), ("blue", "cylinder")]]
    assert probe.miss_kind(objs, 0, 1, None) == "same colour"
    assert probe.miss_kind(objs, 0, 2, None) == "same shape"
    assert probe.miss_kind(objs, 0, 3, None) == "other"
    assert probe.miss_kind(objs, 0, 2, base=2) == "base"  # the stacking base, whatever it looks like
    assert probe.miss_kind(objs, 4, 2, base=None) == "same colour"


def test_a_policy_without_a_goal_head_is_refused(probe, tmp_path):
    from vla_demo.policy import LanguageConditionedPolicy

    path = tmp_path / "plain"
    LanguageConditionedPolicy.build("default", image_size=32, d_model=32, n_heads=2, n_layers=1, head_hidden=32,
                                    goal_head=False).save_pretrained(path)
    with pytest.raises(SystemExit, match="no goal head"):
        probe.main(["--policy", str(path), "--scenes", "1"])


def test_a_probe_of_no_scenes_is_refused_before_any_policy_loads(probe, capsys):
    with pytest.raises(SystemExit):
        probe.main(["--policy", "does-not-exist", "--scenes", "0"])
    assert "--scenes must be at least 1" in capsys.readouterr().err


def test_a_missing_policy_is_a_usage_error_not_a_traceback(probe, tmp_path, capsys):
    with pytest.raises(SystemExit):
        probe.main(["--policy", str(tmp_path / "nowhere"), "--scenes", "1"])
    assert "cannot load the policy" in capsys.readouterr().err


def test_shape_only_scenes_always_hold_a_same_colour_object_and_refuse_stack(probe, tiny_policy_dir, monkeypatch,
                                                                            tmp_path, capsys):
    aim_goal_head_at(monkeypatch, probe, lambda env: env.goal.target)
    results = probe.main(["--policy", str(tiny_policy_dir), "--families", "pick", "--scenes", "3", "--shape-only"])
    r = results[str(tiny_policy_dir)]["pick"]
    assert r["nearest_is_target"] == 1.0 and r["same_colour_present"] == {"scenes": 3, "hits": 3}
    assert "shape-only scenes" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        probe.main(["--policy", str(tiny_policy_dir), "--families", "stack", "--scenes", "1", "--shape-only"])
    assert "not for stack" in capsys.readouterr().err
