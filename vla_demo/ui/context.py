"""What the whole app shares: data root, policy versions, background jobs and the operator sessions.

Sessions are keyed by Gradio's ``session_hash`` (one per browser tab). They are created on first
use (the page's load event, or the first API call of a ``gradio_client``) and closed by the page's
unload event, so a closed tab frees its sim within the heartbeat interval.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def dataset_path(data_root: Path, name: str) -> Path:
    """``<data_root>/datasets/<name>`` for a safe name; raises ValueError for anything else."""
    name = (name or "").strip()
    if not DATASET_NAME.match(name):
        raise ValueError(f"dataset name {name[:40]!r} is not allowed: use 1-64 letters, digits, '-' or '_'")
    return Path(data_root) / "datasets" / name


@dataclass
class AppContext:
    """Process-wide state of the app (read by every tab)."""

    data_root: Path
    registry: Any  # vla_demo.ui.registry.PolicyRegistry
    jobs: Any  # vla_demo.ui.jobs.JobManager
    camera_size: int = 128
    display_size: int = 384
    max_sessions: int = 8
    sessions: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def session(self, key: str):
        """This tab's session, created on first use."""
        from vla_demo.ui.session import Session

        with self.lock:
            s = self.sessions.get(key)
            if s is None:
                if len(self.sessions) >= self.max_sessions:
                    raise RuntimeError(f"the app already serves {self.max_sessions} sessions; close a tab and retry")
                s = self.sessions[key] = Session(self)
            return s

    def close_session(self, key: str) -> bool:
        """Free a tab's sim (its unsaved episode is discarded). Returns whether one existed.

        The session is closed before it leaves ``sessions`` (closing waits for a step in flight), so
        a session that is no longer listed has always released its sim."""
        with self.lock:
            s = self.sessions.get(key)
        if s is None:
            return False
        s.close()
        with self.lock:
            if self.sessions.get(key) is s:
                del self.sessions[key]
        return True

    def close(self) -> None:
        for key in list(self.sessions):
            self.close_session(key)
        if self.jobs is not None:
            self.jobs.close()
