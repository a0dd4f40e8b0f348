"""Building the app's shared context (used by ``app.py``, the tests and the bench)."""

from __future__ import annotations

from pathlib import Path

from vla_demo.ui.context import AppContext


def make_context(policy: str, data_root: str | Path | None = None, camera_size: int = 128,
                 display_size: int = 384, jobs: bool = True) -> AppContext:
    """Registry of policy versions (``policy`` is the shipped default: a folder, a policy-server URL
    or ``expert``), the background job manager, and an empty session table."""
    from vla_demo.recipes import data_root as default_root
    from vla_demo.ui.jobs import JobManager
    from vla_demo.ui.registry import PolicyRegistry

    root = Path(data_root) if data_root else default_root()
    root.mkdir(parents=True, exist_ok=True)
    registry = PolicyRegistry(root, policy)
    manager = JobManager(root, registry) if jobs else None
    return AppContext(root, registry, manager, camera_size=camera_size, display_size=display_size)
