"""Policy versions: persist and reload, activate / rollback, corrupt checkpoints refused, shared weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla_demo.policy import LanguageConditionedPolicy
from vla_demo.ui.registry import PolicyRegistry

TINY = {"image_size": 32, "d_model": 32, "n_heads": 2, "n_layers": 1, "head_hidden": 32, "chunk_size": 4}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two tiny checkpoints with different weights."""
    root = tmp_path_factory.mktemp("ckpt")
    a = LanguageConditionedPolicy.build("default", seed=0, **TINY).save_pretrained(root / "a")
    b = LanguageConditionedPolicy.build("default", seed=1, **TINY).save_pretrained(root / "b")
    return a, b


def test_versions_persist_and_reload(tmp_path, checkpoints):
    a, b = checkpoints
    reg = PolicyRegistry(tmp_path, str(a))
    assert reg.active == "default" and [v["name"] for v in reg.versions()] == ["expert", "default"]
    v1 = reg.add_version(b, parent="default", metrics={"before": 0.2, "after": 0.5, "families": ["pick"]}, source="ft-1")
    v2 = reg.add_version(a, parent=v1, metrics={}, source="ft-2")
    assert (v1, v2) == ("v1", "v2")
    reg.activate(v1)
    again = PolicyRegistry(tmp_path, str(a))
    rows = again.versions()
    assert [r["name"] for r in rows] == ["expert", "default", "v1", "v2"]
    assert again.active == "v1" and rows[2]["active"] and rows[2]["metrics"]["after"] == 0.5
    assert rows[3]["parent"] == "v1" and rows[3]["source"] == "ft-2" and rows[3]["created"]
    card = (tmp_path / "policies/v1/README.md").read_text()
    assert "## Version" in card and "before 20%, after 50%" in card
    assert json.loads((tmp_path / "policies/active.json").read_text())["active"] == "v1"


def test_activate_and_rollback(tmp_path, checkpoints):
    a, b = checkpoints
    reg = PolicyRegistry(tmp_path, str(a))
    v1 = reg.add_version(b, "default", {}, "t")
    reg.activate(v1)
    reg.activate("expert")
    assert reg.rollback() == "v1" and reg.active == "v1"
    assert reg.rollback() == "default"
    with pytest.raises(ValueError, match="no earlier version"):
        reg.rollback()
    with pytest.raises(ValueError, match="unknown policy version"):
        reg.activate("../../etc")


def test_corrupt_checkpoint_is_refused_and_previous_stays_active(tmp_path, checkpoints):
    a, b = checkpoints
    reg = PolicyRegistry(tmp_path, str(a))
    v1 = reg.add_version(b, "default", {}, "t")
    (tmp_path / "policies" / v1 / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot be loaded.*corrupt weights"):
        reg.activate(v1)
    assert reg.active == "default"
    assert PolicyRegistry(tmp_path, str(a)).active == "default"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt"):
        reg.add_version(broken, "default", {}, "t")
    assert reg.names() == ["expert", "default", "v1"]


def test_make_policy_shares_weights_but_not_queues(tmp_path, checkpoints, env):
    a, _ = checkpoints
    reg = PolicyRegistry(tmp_path, str(a))
    (n1, p1), (n2, p2) = reg.make_policy(env), reg.make_policy(env, "default")
    assert n1 == n2 == "default" and p1 is not p2 and p1.model is p2.model
    obs, _ = env.reset(seed=0, options={"family": "reach"})
    act = p1.select_action(obs)
    assert act.shape == (7,) and np.isfinite(act).all()
    assert len(p1._queue) == p1.config.n_action_steps - 1 and len(p2._queue) == 0
    name, expert = reg.make_policy(env, "expert")
    assert name == "expert" and type(expert).__name__ == "ScriptedExpert"


def test_expert_default_and_missing_default(tmp_path):
    reg = PolicyRegistry(tmp_path, "expert")
    assert reg.active == "expert" and reg.names() == ["expert"]
    with pytest.raises(ValueError, match="neither a checkpoint folder"):
        PolicyRegistry(tmp_path, str(tmp_path / "nope"))


def test_reopening_with_the_expert_as_default_ignores_the_old_default_in_history(tmp_path, checkpoints):
    a, b = checkpoints
    reg = PolicyRegistry(tmp_path, str(a))
    reg.activate(reg.add_version(b, "default", {}, "t"))  # history now holds "default"
    again = PolicyRegistry(tmp_path, "expert")  # "default" and v1's parent no longer exist as such
    assert again.active in again.names() and "default" not in again.names()
