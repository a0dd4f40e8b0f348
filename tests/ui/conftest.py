"""App fixtures: a context on a temp data root with the scripted expert or a tiny untrained policy."""

from __future__ import annotations

import pytest


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


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """A tiny base checkpoint and a 2-episode 'reach' dataset (shared by the job and tab tests, read-only)."""
    from vla_demo.data.collect import collect
    from vla_demo.policy import LanguageConditionedPolicy

    root = tmp_path_factory.mktemp("assets")
    tiny = {"image_size": 32, "d_model": 32, "n_heads": 2, "n_layers": 1, "head_hidden": 32, "chunk_size": 4}
    base = LanguageConditionedPolicy.build("default", seed=0, **tiny).save_pretrained(root / "base")
    collect(root / "tiny", episodes=2, families=("reach",), seed=5, workers=1, image_size=(32, 32), progress=False)
    return base, root / "tiny"
