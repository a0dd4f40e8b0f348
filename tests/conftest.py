"""Shared fixtures: small, fast sim configs (CPU only)."""

from __future__ import annotations

import pytest

from vla_demo.config import SimConfig


@pytest.fixture
def small_config() -> SimConfig:
    """64 px images: the physics is the same as the default, rendering is cheaper."""
    return SimConfig(image_size=(64, 64))


@pytest.fixture
def env(small_config):
    from vla_demo.sim.env import TabletopEnv

    e = TabletopEnv(small_config)
    yield e
    e.close()


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory):
    from vla_demo.policy import LanguageConditionedPolicy

    path = tmp_path_factory.mktemp("tiny") / "policy"
    LanguageConditionedPolicy.build("default", image_size=32, d_model=32, n_heads=2, n_layers=1, head_hidden=32,
                                    keypoints=4, goal_head=True, word_roles=True).save_pretrained(path)  # the shipped heads
    return path
