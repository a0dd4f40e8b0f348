"""scripts/failure_modes.py: each failed episode of a grasping family in one class by what the hand held."""

from __future__ import annotations

import json

import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def fm():
    return load_script("failure_modes")


@pytest.mark.parametrize("args, expected", [
    ((True, True, False, False, 0.0), "success"),
    ((False, False, True, False, None), "grasped a wrong object, never the target"),
    ((False, False, False, False, None), "grasped nothing"),
    ((False, True, True, True, 0.05), "held the target, ended within 12 cm of the destination (still held)"),
    ((False, True, False, False, 0.30), "held the target, ended elsewhere"),
    ((False, True, False, False, None), "held the target, ended elsewhere"),  # pick has no destination
    ((False, True, False, False, 0.30, True), "held the target, ended in the wrong receptacle"),
])
def test_classify(fm, args, expected):
    assert fm.classify(*args) == expected


def test_the_scripted_expert_succeeds_on_every_scene(fm, tmp_path):
    out = tmp_path / "modes.json"
    results = fm.main(["--policy", "expert", "--family", "place", "--scenes", "2", "--seed", "3", "--json", str(out)])
    assert results == {"expert": {"success": 2}}
    assert json.loads(out.read_text())["results"] == {"expert": {"success": 2}}


def test_an_untrained_policy_fails_and_every_episode_gets_one_class(fm, tiny_policy_dir, capsys):
    results = fm.main(["--policy", str(tiny_policy_dir), "--family", "stack", "--scenes", "1"])
    (counts,) = results.values()
    assert sum(counts.values()) == 1 and "success" not in counts
    assert any(k.startswith(c) for k in counts for c in fm.CLASSES[1:])
    assert "| class |" in capsys.readouterr().out


def test_too_few_scenes_and_a_missing_policy_are_refused(fm, tmp_path):
    with pytest.raises(SystemExit):
        fm.main(["--policy", "expert", "--scenes", "0"])
    with pytest.raises(SystemExit):
        fm.main(["--policy", str(tmp_path / "missing"), "--scenes", "1"])


def test_the_expert_succeeds_on_shape_only_scenes_and_stack_has_none(fm, tmp_path, capsys):
    out = tmp_path / "modes.json"
    assert fm.main(["--policy", "expert", "--family", "pick", "--scenes", "2", "--shape-only", "--json", str(out)]) == {
        "expert": {"success": 2}}
    assert json.loads(out.read_text())["shape_only"] is True and "2 shape-only scenes" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        fm.main(["--policy", "expert", "--family", "stack", "--scenes", "1", "--shape-only"])
    assert "not for stack" in capsys.readouterr().err
