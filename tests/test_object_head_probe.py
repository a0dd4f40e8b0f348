"""scripts/object_head_probe.py: the object head's shape calls per colour-shape combination."""

from __future__ import annotations

import pytest
import torch

from tests.scripts import load_script
from vla_demo.constants import COLOURS, HELDOUT_COMBOS, SHAPES


@pytest.fixture(scope="module")
def script():
    return load_script("object_head_probe")


@pytest.fixture(scope="module")
def object_head_policy(tmp_path_factory):
    from vla_demo.policy import LanguageConditionedPolicy

    path = tmp_path_factory.mktemp("objects") / "policy"
    LanguageConditionedPolicy.build("default", image_size=32, d_model=32, n_heads=2, n_layers=1, head_hidden=32, keypoints=2,
                                    wrist=True, wrist_size=16, object_head=True).save_pretrained(path)  # wrist smaller than the front
    return path


@pytest.mark.parametrize("answer", ["right", "cube"])
def test_the_probe_counts_what_the_head_calls_every_labelled_object(script, object_head_policy, monkeypatch, answer):
    from vla_demo.model.vla import VLAModel

    def object_logits(self, maps, labels):  # a head that is always right, or always says "cube"
        rows = labels.view(labels.size(0), 5, 7)
        logits = torch.zeros(*rows.shape[:2], len(COLOURS) + len(SHAPES))
        shape = rows[..., 1].long().clamp(min=0) if answer == "right" else torch.zeros_like(rows[..., 1]).long()
        logits.scatter_(2, (len(COLOURS) + shape).unsqueeze(-1), 1.0)
        return [(logits, rows[..., 0] >= 0)]

    monkeypatch.setattr(VLAModel, "object_logits", object_logits)
    results = script.main(["--policy", str(object_head_policy), "--split", "heldout-combos", "--families", "pick", "stack",
                           "--scenes", "3"])["heldout-combos"]
    assert sum(r["objects"] for r in results.values()) >= 6 * 2  # every scene holds at least two objects
    assert any(not r["trained"] for r in results.values())  # the split's targets are held-out combinations
    for combo, r in results.items():
        colour, shape = combo.split()
        assert r["trained"] == ((colour, shape) not in HELDOUT_COMBOS)
        assert sum(r["called"].values()) == r["objects"]
        expected = r["objects"] if answer == "right" or shape == "cube" else 0
        assert r["right"] == expected, (combo, r)


def test_a_policy_without_an_object_head_is_refused(script, tiny_policy_dir):
    with pytest.raises(SystemExit, match="no object head"):
        script.main(["--policy", str(tiny_policy_dir), "--scenes", "1"])
