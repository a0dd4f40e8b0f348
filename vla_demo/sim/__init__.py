"""The tabletop simulator (no torch here). Importing this package registers ``VLATabletop-v0``."""

from gymnasium.envs.registration import register, registry

from vla_demo.constants import ENV_ID

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="vla_demo.sim.env:TabletopEnv", max_episode_steps=None)
