"""Policy versions: the shipped default plus fine-tuned checkpoints under ``<data_root>/policies/``.

Each learned version is a checkpoint folder (config.json, model.safetensors, tokenizer.json,
README.md model card) with a ``version.json`` beside them: name, parent, created, source job and
metrics (before/after success of the fine-tune that produced it). Names are generated (``v1``,
``v2``, ...), never taken from user strings. The active version and the activation history (for
rollback) live in ``<data_root>/policies/active.json``, written atomically.

Sessions get their own stateful policy object from :meth:`PolicyRegistry.make_policy`; learned
versions load once and share their weights read-only across sessions (the model is only used for
inference), so a hot-swap only changes which version *new* episodes start with.

The shipped default may also be a policy server (``--policy http://host:port``): it is listed as
``"default"`` with the URL as its path, sessions get a :class:`~vla_demo.remote_policy.RemotePolicy`
each, and jobs that need a checkpoint folder (fine-tune, evaluation, A/B replay) refuse it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPERT = "expert"
DEFAULT = "default"
VERSION_FILE = "version.json"
ACTIVE_FILE = "active.json"
_NAME = re.compile(r"^v(\d{1,6})$")


def _write_json(path: Path, obj: Any) -> None:
    from vla_demo.data.format import write_json

    write_json(path, obj)


class PolicyRegistry:
    """All policy versions the app can run, the active one, and the history for rollback.

    Args:
        data_root: the app's data root; versions live in ``data_root/policies``.
        default: the shipped policy: a checkpoint folder or a policy-server URL (listed as
            ``"default"``), or ``"expert"``. The scripted expert is always listed too, as a
            read-only reference. A server is contacted once here, so an unreachable one (or a
            refused token) fails at start with the reason.
    """

    def __init__(self, data_root: Path, default: str):
        from vla_demo.remote_policy import is_policy_url

        self.root = Path(data_root) / "policies"
        default = str(default)
        self.default_url = default if is_policy_url(default) else None
        if default != EXPERT and self.default_url is None and not Path(default).is_dir():
            raise ValueError(f"default policy {default!r} is neither a checkpoint folder, a policy-server URL nor 'expert'")
        self.default_path = None if default == EXPERT or self.default_url else Path(default)
        self._lock = threading.RLock()
        self._loaded: dict[str, Any] = {}  # version name -> loaded LanguageConditionedPolicy (template)
        self.warning = ""  # set when the saved active version could not be restored
        if self.default_url:
            self._connect()  # an unreachable server or a refused token fails here, at start
        self._active, self._history = self.base_name, []  # until restored (restoring lists the versions)
        self._active, self._history = self._restore()

    # ------------------------------------------------------------------ queries
    @property
    def active(self) -> str:
        """Name of the version new episodes start with."""
        with self._lock:
            return self._active

    @property
    def base_name(self) -> str:
        """Name of the shipped default (``"default"`` or ``"expert"``)."""
        return EXPERT if self.default_path is None and self.default_url is None else DEFAULT

    def versions(self) -> list[dict]:
        """``[{"name", "path", "parent", "created", "metrics", "source", "active"}]``, newest last.

        The shipped default (and the expert) come first with ``created`` None; ``path`` is None
        for the expert.
        """
        active = self.active
        rows = [self._builtin_row(EXPERT)]
        if self.base_name == DEFAULT:
            rows.append(self._builtin_row(DEFAULT))
        rows += sorted(self._learned_rows(), key=lambda r: int(r["name"][1:]))
        for r in rows:
            r["active"] = r["name"] == active
        return rows

    def names(self) -> list[str]:
        """Version names, in the order of :meth:`versions`."""
        return [v["name"] for v in self.versions()]

    def path_of(self, name: str) -> Path | None:
        """Checkpoint folder of a version (None for the expert); ValueError for unknown names."""
        if name == EXPERT:
            return None
        if name == DEFAULT and self.default_url is not None:
            raise ValueError(f"version {DEFAULT!r} is the policy server at {self.default_url}: fine-tuning, evaluation "
                             "and A/B replays need a checkpoint folder")
        if name == DEFAULT and self.default_path is not None:
            return self.default_path
        if isinstance(name, str) and _NAME.match(name) and (self.root / name / VERSION_FILE).is_file():
            return self.root / name
        raise ValueError(f"unknown policy version {name!r} (known: {', '.join(self.names())})")

    def info(self, name: str) -> dict:
        """The :meth:`versions` row of one version."""
        for row in self.versions():
            if row["name"] == name:
                return row
        raise ValueError(f"unknown policy version {name!r}")

    # ------------------------------------------------------------------ sessions
    def make_policy(self, env, version: str | None = None) -> tuple[str, object]:
        """A fresh stateful policy for one session: ``(version name, policy)``.

        Learned versions share one loaded model per version (loaded once, thread-safe); each call
        returns a new wrapper with its own action queue. ``"expert"`` gives a ScriptedExpert bound
        to ``env``. ``version=None`` means the active version.
        """
        name = self.active if version is None else version
        if name == EXPERT:
            from vla_demo.sim.expert import ScriptedExpert

            return name, ScriptedExpert(env)
        template = self._load(name)
        if name == DEFAULT and self.default_url is not None:
            return name, template.fork()
        return name, type(template)(template.model, template.tokenizer, _copy_config(template.config))

    def needs_wrist(self, version: str | None = None) -> bool:
        """Whether the version's policy also sees the wrist camera (the session's sim must then
        render the hand's view every step). ``None`` means the active version."""
        from vla_demo.evaluate import uses_wrist

        name = self.active if version is None else version
        return name != EXPERT and uses_wrist(self._load(name))

    def sim_needs_wrist(self) -> bool:
        """Whether sessions should render the wrist camera: for the active version, and also when
        the default policy sees it, so that what the operator records (under any version, the expert
        included) can fine-tune the default."""
        return self.needs_wrist() or (self.base_name == DEFAULT and self.needs_wrist(DEFAULT))

    def _load(self, name: str):
        """The cached loaded policy of a learned version (ValueError if corrupt or mismatched;
        RemotePolicyError, a ConnectionError, if the default's server cannot be used)."""
        if name == DEFAULT and self.default_url is not None:
            return self._connect()
        path = self.path_of(name)
        with self._lock:
            if name not in self._loaded:
                from vla_demo.policy import LanguageConditionedPolicy

                try:
                    self._loaded[name] = LanguageConditionedPolicy.from_pretrained(path)
                except ValueError as e:
                    raise ValueError(f"policy version {name!r} cannot be loaded: {e}") from None
            return self._loaded[name]

    def _connect(self):
        """The default's server, contacted once (its /health) and then shared by every session."""
        with self._lock:
            if DEFAULT not in self._loaded:
                from vla_demo.remote_policy import RemotePolicy

                remote = RemotePolicy(self.default_url)
                remote.health()
                self._loaded[DEFAULT] = remote
            return self._loaded[DEFAULT]

    # ------------------------------------------------------------------ changes
    def activate(self, name: str) -> None:
        """Make ``name`` the active version (new episodes use it; running ones finish on theirs).

        The checkpoint is loaded and validated first: a corrupt or mismatched one raises
        ValueError and the previous active version stays in force.
        """
        with self._lock:
            if name != EXPERT:
                self._load(name)
            if name == self._active:
                return
            history = [*self._history, self._active][-50:]
            self._persist(name, history)
            self._active, self._history = name, history

    def rollback(self) -> str:
        """Go back to the version that was active before the current one; returns its name."""
        with self._lock:
            history = list(self._history)
            while history:
                previous = history.pop()
                try:
                    if previous != EXPERT:
                        self._load(previous)
                except ValueError as e:
                    log.warning("skipping %s on rollback: %s", previous, e)
                    continue
                self._persist(previous, history)
                self._active, self._history = previous, history
                return previous
            raise ValueError("no earlier version to roll back to")

    def add_version(self, checkpoint_dir: Path, parent: str, metrics: dict, source: str) -> str:
        """Copy a checkpoint folder in as a new version (validated first); returns its new name.

        The model card gets a "Version" section with the parent, source and metrics.
        """
        from vla_demo.policy import LanguageConditionedPolicy

        checkpoint_dir = Path(checkpoint_dir)
        LanguageConditionedPolicy.from_pretrained(checkpoint_dir)  # refuse corrupt checkpoints up front
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".new-version.", dir=self.root))
        try:
            staged = tmp / "policy"
            shutil.copytree(checkpoint_dir, staged, ignore=shutil.ignore_patterns("trainer_state.*"))
            with self._lock:
                name = f"v{self._next_number()}"
                record = {"name": name, "parent": parent, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                          "source": source, "metrics": metrics}
                _write_json(staged / VERSION_FILE, record)
                _append_card(staged / "README.md", record)
                staged.rename(self.root / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return name

    # ------------------------------------------------------------------ internals
    def _builtin_row(self, name: str) -> dict:
        path = None if name == EXPERT else self.default_url or str(self.default_path)
        note = ("scripted expert (privileged state)" if name == EXPERT else
                "policy server" if self.default_url else "shipped default policy")
        return {"name": name, "path": path, "parent": None, "created": None, "metrics": {}, "source": note}

    def _learned_rows(self) -> list[dict]:
        rows = []
        if not self.root.is_dir():
            return rows
        for folder in self.root.iterdir():
            if not _NAME.match(folder.name) or not (folder / VERSION_FILE).is_file():
                continue
            try:
                rec = json.loads((folder / VERSION_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                log.warning("unreadable %s: %s", folder / VERSION_FILE, e)
                rec = {"metrics": {}, "source": f"unreadable version.json: {e}"}
            rows.append({"name": folder.name, "path": str(folder), "parent": rec.get("parent"),
                         "created": rec.get("created"), "metrics": rec.get("metrics") or {},
                         "source": rec.get("source")})
        return rows

    def _next_number(self) -> int:
        used = [int(m.group(1)) for p in self.root.iterdir() if (m := _NAME.match(p.name))]
        return max(used, default=0) + 1

    def _known(self, name: str) -> bool:
        if name in (EXPERT, self.base_name):
            return True
        try:
            self.path_of(name)
            return True
        except ValueError:
            return False

    def _persist(self, active: str, history: list[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json(self.root / ACTIVE_FILE, {"active": active, "history": history})

    def _restore(self) -> tuple[str, list[str]]:
        """Active version and history from active.json; the default when missing or unusable."""
        path = self.root / ACTIVE_FILE
        if not path.is_file():
            return self.base_name, []
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            active, history = str(saved["active"]), [str(h) for h in saved.get("history", [])]
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.warning = f"ignored unreadable {path}: {e}; running {self.base_name}"
            return self.base_name, []
        history = [h for h in history if self._known(h)]
        if not self._known(active):
            self.warning = f"the saved active version {active!r} no longer exists; running {self.base_name}"
            return self.base_name, history
        if active not in (EXPERT, self.base_name):
            try:  # a checkpoint damaged on disk since it was activated must not take every session down
                self._load(active)
            except ValueError as e:
                self.warning = f"{e}; running {self.base_name} instead"
                return self.base_name, history
        return active, history


def _copy_config(config):
    import dataclasses

    return dataclasses.replace(config)


def _append_card(card: Path, record: dict) -> None:
    """Add the version's lineage and before/after numbers to its model card."""
    text = card.read_text(encoding="utf-8") if card.is_file() else "# vla-demo policy\n"
    lines = ["", "## Version", "", f"- name: `{record['name']}`, parent: `{record['parent']}`",
             f"- created {record['created']} by job `{record['source']}`"]
    metrics = record.get("metrics") or {}
    if "before" in metrics and "after" in metrics:
        lines.append(f"- success on {', '.join(metrics.get('families', []))}: before {_pct(metrics['before'])}, "
                     f"after {_pct(metrics['after'])}")
    if metrics.get("after_table"):
        lines += ["", metrics["after_table"]]
    card.write_text(text.rstrip("\n") + "\n" + "\n".join(lines) + "\n", encoding="utf-8")


def _pct(x) -> str:
    return "-" if x is None else f"{100 * float(x):.0f}%"
