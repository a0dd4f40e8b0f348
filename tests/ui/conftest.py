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
