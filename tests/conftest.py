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
