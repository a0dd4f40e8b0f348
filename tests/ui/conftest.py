"""App fixtures: a context on a temp data root with the scripted expert or a tiny untrained policy."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory):
    from vla_demo.policy import LanguageConditionedPolicy

    path = tmp_path_factory.mktemp("tiny") / "policy"
    LanguageConditionedPolicy.build("default", image_size=32, d_model=32, n_heads=2, n_layers=1, head_hidden=32,
                                    keypoints=4).save_pretrained(path)
    return path


@pytest.fixture
def make_ctx(tmp_path):
    from vla_demo.ui.app import make_context

    made = []

    def make(policy="expert", jobs=False):
        ctx = make_context(str(policy), tmp_path / "data", camera_size=64, display_size=128, jobs=jobs)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()
