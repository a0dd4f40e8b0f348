"""Background fine-tune and evaluation jobs, one at a time, each in its own child process.

The app submits jobs to a :class:`JobManager`; they queue (FIFO) and run one at a time in a
``spawn``-ed child process, so a crash (or a native fault in torch/pybullet) fails only that job
while the app keeps streaming. Nothing is pickled but plain dicts of paths and numbers: the child
loads datasets and checkpoints itself.

Files of a job, in ``<data_root>/runs/<job-id>/``:

- ``spec.json``: what was asked (paths resolved from validated names, never raw user strings);
- ``progress.jsonl``: one line per step, ``{"phase", "step", "total", "loss", ...}``, tailed by the
  manager (phases ``eval-before``, ``train``, ``eval-after`` for a fine-tune, ``eval`` otherwise);
- ``job.log``: the child's stdout/stderr (the error tail of a crash comes from here);
- ``STOP``: created by :meth:`JobManager.cancel`; the child polls it into the ``stop`` event that
  :func:`vla_demo.train.train` honours (it checkpoints and returns), and stops between phases;
- ``result.json`` / ``error.json`` written by the child; ``status.json`` by the manager;
- ``train/`` (the trainer's run folder: ``log.jsonl``, ``last/``, ``policy/``), ``eval*.json`` and
  ``clips/`` (failure clips).

A fine-tune starts from the chosen (default: active) version on the picked datasets plus a replay
share of the default demonstrations when they are in the data root, evaluates the parent and the
new checkpoint on the task families named by the datasets' instructions (the same seeds for both),
registers the new version with both numbers, and hot-swaps to it when it is at least as good.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import secrets
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_demo.constants import FAMILIES, SPLITS
from vla_demo.recipes import DEFAULT_DEMOS, FINETUNE_LR

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed", "cancelled")
PROGRESS_FILE, STOP_FILE, RESULT_FILE, ERROR_FILE = "progress.jsonl", "STOP", "result.json", "error.json"
LOG_FILE, SPEC_FILE, STATUS_FILE = "job.log", "spec.json", "status.json"
REPLAY_DATASET = DEFAULT_DEMOS
MAX_STEPS = 100_000


@dataclass
class Job:
    """The manager's view of one job (only the monitor thread changes a running job)."""

    id: str
    kind: str
    spec: dict[str, Any]
    folder: Path
    state: str = "queued"
    phase: str = ""
    step: int = 0
    total: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    message: str = ""
    result: dict[str, Any] | None = None
    created: float = field(default_factory=time.time)
    process: Any = None
    offset: int = 0
    cancel_requested: float | None = None

    def summary(self, max_points: int = 500) -> dict[str, Any]:
        """The status dict handed to the UI (a copy; loss history decimated)."""
        return {"id": self.id, "kind": self.kind, "state": self.state, "phase": self.phase, "step": self.step,
                "total": self.total, "loss": decimate(self.losses, max_points), "message": self.message,
                "result": self.result, "created": self.created, "label": self.spec.get("label", "")}


def decimate(points: list, max_points: int) -> list:
    """Every k-th point (and always the last) so at most about ``max_points`` remain."""
    if max_points <= 0:
        return []
    if len(points) <= max_points:
        return list(points)
    stride = math.ceil(len(points) / max_points)
    kept = points[::stride]
    return kept if kept[-1] == points[-1] else [*kept, points[-1]]


_KINDS = ("finetune", "eval", "replay")
_JOB_ID = re.compile(r"^(ft|eval|ab)-\d{8}-\d{6}-[0-9a-f]{4}$")


def new_job_id(kind: str) -> str:
    """``ft-20260101-120000-ab12`` / ``eval-...``: sortable and unique, safe as a folder name."""
    prefix = {"finetune": "ft", "eval": "eval", "replay": "ab"}[kind]
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class JobManager:
    """Queue and run fine-tune / evaluation jobs in child processes, one at a time.

    Args:
        data_root: the app's data root (datasets are read from ``datasets/``, runs go to ``runs/``).
        registry: the :class:`~vla_demo.ui.registry.PolicyRegistry` versions come from and go to.
        eval_episodes: default episodes per family of a fine-tune's before/after evaluation
            (0 skips it; then the new version is registered but not activated).
        eval_workers: evaluation worker processes inside a job (1 leaves a core to the live app).
        replay_share: sampling share of the default demonstrations mixed into a fine-tune.
        threads: torch threads in the child.
        cancel_grace_s: after a cancel, how long the child may take to stop before it is terminated.
        poll_s: how often the monitor thread tails progress.
    """

    def __init__(self, data_root: Path, registry, eval_episodes: int = 5, eval_workers: int = 1,
                 replay_share: float = 0.3, threads: int = 1, cancel_grace_s: float = 60.0, poll_s: float = 0.25):
        self.data_root = Path(data_root)
        self.runs = self.data_root / "runs"
        self.registry = registry
        self.eval_episodes = eval_episodes
        self.eval_workers = eval_workers
        self.replay_share = replay_share
        self.threads = threads
        self.cancel_grace_s = cancel_grace_s
        self.poll_s = poll_s
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._running: Job | None = None
        self._thread: threading.Thread | None = None
        self._restore_history()

    def _restore_history(self, keep: int = 50) -> None:
        """List the newest finished jobs of earlier app runs (from their status.json). A job the
        previous run left queued or running is shown as interrupted; its files stay in runs/."""
        if not self.runs.is_dir():
            return
        folders = sorted((p for p in self.runs.iterdir() if _JOB_ID.match(p.name)), key=lambda p: p.name)[-keep:]
        for folder in folders:
            status, spec = _read_json(folder / STATUS_FILE), _read_json(folder / SPEC_FILE)
            if not isinstance(status, dict) or not isinstance(spec, dict) or status.get("kind") not in _KINDS:
                continue
            job = Job(folder.name, status["kind"], spec, folder, created=float(status.get("created") or 0.0))
            job.state, job.phase = str(status.get("state", "failed")), str(status.get("phase", ""))
            job.step, job.total = int(status.get("step") or 0), int(status.get("total") or 0)
            job.message, job.result = str(status.get("message", "")), status.get("result")
            job.losses = [tuple(p) for p in status.get("loss") or [] if isinstance(p, list) and len(p) == 2]
            if job.state in ("queued", "running"):
                job.state = "interrupted"
                job.message = f"the app stopped while this job was {status['state']}; its files stay in runs/{folder.name}"
            self._jobs[job.id] = job

    # ------------------------------------------------------------------ submitting
    def dataset_names(self) -> list[str]:
        """Datasets in ``<data_root>/datasets`` (folders with ``meta/info.json``)."""
        folder = self.data_root / "datasets"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / "meta" / "info.json").is_file())

    def submit_finetune(self, datasets: list[str], steps: int = 300, base: str | None = None,
                        eval_episodes: int | None = None, batch_size: int = 32, lr: float | None = None, seed: int = 0) -> str:
        """Queue a fine-tune of version ``base`` (default: the active one) on the named datasets.

        Returns the job id; bad input raises ValueError with a message for the operator.
        """
        names = self._check_datasets(datasets)
        steps = _check_int("steps", steps, 1, MAX_STEPS)
        episodes = _check_int("evaluation episodes", self.eval_episodes if eval_episodes is None else eval_episodes, 0, 200)
        _check_int("batch size", batch_size, 1, 1024)
        lr = FINETUNE_LR if lr is None else lr
        if not 0 < float(lr) < 1:
            raise ValueError(f"learning rate must be in (0, 1), got {lr}")
        base = base or self.registry.active
        base_path = self.registry.path_of(base)  # ValueError for unknown versions
        replay = self.data_root / "datasets" / REPLAY_DATASET
        use_replay = REPLAY_DATASET not in names and (replay / "meta" / "info.json").is_file() and self.replay_share > 0
        spec = {
            "kind": "finetune", "label": f"fine-tune {base} on {', '.join(names)} ({steps} steps)",
            "names": names, "datasets": [str(self.data_root / "datasets" / n) for n in names],
            "replay": str(replay) if use_replay else None, "replay_share": self.replay_share,
            "base": base, "init_from": str(base_path) if base_path else None,
            "steps": steps, "batch_size": int(batch_size), "lr": float(lr), "seed": int(seed),
            "eval_episodes": episodes, "eval_workers": self.eval_workers, "threads": self.threads, "split": "train",
        }
        return self._submit("finetune", spec)

    def submit_eval(self, version: str, split: str = "train", families: list[str] | None = None,
                    episodes_per_family: int = 10, seed: int = 0, baselines: bool = True) -> str:
        """Queue an evaluation of a version; the result is the eval JSON (ARCHITECTURE section 4)."""
        path = self.registry.path_of(version)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
        families = list(families or FAMILIES)
        bad = [f for f in families if f not in FAMILIES]
        if bad:
            raise ValueError(f"unknown task families {bad} (choose from {', '.join(FAMILIES)})")
        episodes = _check_int("episodes per family", episodes_per_family, 1, 500)
        spec = {
            "kind": "eval", "label": f"evaluate {version} on {split} ({episodes}/family)", "version": version,
            "policy": str(path) if path else "expert", "split": split, "families": families,
            "episodes": episodes, "seed": _check_int("seed", seed, 0, 2**31 - 1), "baselines": bool(baselines),
            "eval_workers": self.eval_workers, "threads": self.threads,
        }
        return self._submit("eval", spec)

    def submit_replay(self, version_a: str, version_b: str, family: str = "pick", seed: int = 0,
                      split: str = "train", size: int = 192) -> str:
        """Queue an A/B replay: both versions run the same seeded episode; the result holds one
        side-by-side clip (``ab.mp4``) and each side's success and length."""
        paths = [self.registry.path_of(v) for v in (version_a, version_b)]
        if family not in FAMILIES:
            raise ValueError(f"unknown task family {family!r} (choose from {', '.join(FAMILIES)})")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
        spec = {
            "kind": "replay", "label": f"A/B replay {version_a} vs {version_b} ({family}, seed {seed})",
            "versions": [version_a, version_b], "policies": [str(p) if p else "expert" for p in paths],
            "family": family, "split": split, "seed": _check_int("seed", seed, 0, 2**31 - 1),
            "size": _check_int("image size", size, 64, 512), "threads": self.threads,
        }
        return self._submit("replay", spec)

    def _submit(self, kind: str, spec: dict[str, Any]) -> str:
        if self._closed.is_set():
            raise ValueError("the job manager is closed")
        job = Job(new_job_id(kind), kind, spec, Path())
        job.folder = self.runs / job.id
        job.message = "waiting for the running job to finish" if self._running else "starting"
        with self._lock:
            self._jobs[job.id] = job
            self._queue.append(job)
            self._ensure_thread()
        self._wake.set()
        return job.id

    def _check_datasets(self, datasets: list[str]) -> list[str]:
        if isinstance(datasets, str):
            datasets = [datasets]
        if not datasets:
            raise ValueError("pick at least one dataset to fine-tune on")
        known = set(self.dataset_names())
        unknown = [d for d in datasets if d not in known]
        if unknown:
            raise ValueError(f"no dataset named {unknown[0]!r} in {self.data_root / 'datasets'}")
        return list(dict.fromkeys(datasets))

    # ------------------------------------------------------------------ queries and control
    def status(self, job_id: str, max_points: int = 500) -> dict[str, Any]:
        """``{"id", "kind", "state", "phase", "step", "total", "loss": [(step, loss)], "message", "result", ...}``."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise ValueError(f"unknown job {job_id!r}")
            out = job.summary(max_points)
            if job.state == "queued":
                ahead = [j.id for j in self._queue].index(job.id) + (self._running is not None)
                out["message"] = f"queued ({ahead} job{'s' if ahead != 1 else ''} ahead)"
            return out

    def jobs(self) -> list[dict[str, Any]]:
        """Status of every job of this app run, oldest first (loss histories left out)."""
        with self._lock:
            return [j.summary(0) for j in sorted(self._jobs.values(), key=lambda j: j.created)]

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job at once, or ask a running one to stop (it checkpoints and exits).

        Returns False when the job had already ended.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise ValueError(f"unknown job {job_id!r}")
            if job.state == "queued":
                self._queue.remove(job)
                job.state, job.message = "cancelled", "cancelled before it started"
                return True
            if job.state != "running":
                return False
            job.folder.mkdir(parents=True, exist_ok=True)
            (job.folder / STOP_FILE).touch()
            job.cancel_requested = job.cancel_requested or time.time()
            job.message = "cancelling: the job checkpoints and stops"
        self._wake.set()
        return True

    def close(self, timeout: float = 15.0) -> None:
        """Cancel everything, stop the child (terminated after ``timeout``) and the monitor thread."""
        with self._lock:
            for job in list(self._queue):
                self.cancel(job.id)
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        job = self._running
        if job is None:
            return
        self.cancel(job.id)
        if job.process is not None:
            job.process.join(timeout)
            if job.process.is_alive():
                job.process.terminate()
                job.process.join(5)
        self._read_progress(job)
        self._finish(job)

    # ------------------------------------------------------------------ the monitor thread
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="vla-demo-jobs", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                self._tick()
            except Exception:  # the monitor must survive anything a job does
                log.exception("job monitor error")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _tick(self) -> None:
        with self._lock:
            if self._running is None and self._queue:
                self._running = self._queue.popleft()
                self._start(self._running)
            job = self._running
        if job is None:
            return
        self._read_progress(job)
        if job.process is not None and job.process.is_alive():
            if job.cancel_requested and time.time() - job.cancel_requested > self.cancel_grace_s:
                job.process.terminate()
            return
        if job.process is not None:
            job.process.join(5)
        self._read_progress(job)
        self._finish(job)

    def _start(self, job: Job) -> None:
        import multiprocessing as mp

        job.folder.mkdir(parents=True, exist_ok=True)
        _write_json(job.folder / SPEC_FILE, {"id": job.id, **job.spec})
        job.state, job.message, job.phase = "running", "starting the job process", "starting"
        try:
            job.process = mp.get_context("spawn").Process(target=child_main, args=(job.spec, str(job.folder), os.getpid()),
                                                          name=f"job-{job.id}", daemon=False)
            job.process.start()
        except Exception as e:  # e.g. out of processes: the job fails, the app goes on
            job.process = None
            job.message = f"could not start the job process: {e}"
        self._write_status(job)

    def _read_progress(self, job: Job) -> None:
        path = job.folder / PROGRESS_FILE
        if not path.is_file():
            return
        with open(path, "rb") as f:
            f.seek(job.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # only complete lines
        job.offset += end
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                self._apply(job, json.loads(line))

    def _apply(self, job: Job, rec: dict[str, Any]) -> None:
        if rec.get("phase") != job.phase:
            job.phase = str(rec.get("phase", ""))
        job.step, job.total = int(rec.get("step", job.step)), int(rec.get("total", job.total))
        if rec.get("loss") is not None:
            job.losses.append((job.step, float(rec["loss"])))
        if not job.cancel_requested:
            job.message = rec.get("message") or _phase_message(job)

    def _finish(self, job: Job) -> None:
        """Turn the child's exit into a final state, registering a fine-tuned version first, so a
        job is never seen ``done`` before its version exists."""
        result = _read_json(job.folder / RESULT_FILE)
        code = job.process.exitcode if job.process is not None else None
        if code == 0 and result is not None:
            if result.get("cancelled"):
                state, message = "cancelled", f"cancelled at step {job.step}; the checkpoint stays in runs/{job.id}/train"
            elif job.kind == "finetune":
                state, message = self._register(job, result)
            else:
                state, message = "done", f"{job.kind} finished"
        elif job.cancel_requested:
            state, message = "cancelled", "cancelled (the job process was stopped)"
        else:
            state, message = "failed", _failure_message(job.folder, code, job.message)
        with self._lock:
            job.state, job.message, job.process = state, message, None
            job.result = result if state == "done" else None
            if self._running is job:
                self._running = None
        self._write_status(job)
        self._wake.set()

    def _register(self, job: Job, result: dict[str, Any]) -> tuple[str, str]:
        """Add the new version and hot-swap when it is at least as good as its parent.

        Returns the job's final (state, message); ``result`` gets ``version`` and ``activated``.
        """
        spec = job.spec
        before, after = result.get("before_rate"), result.get("after_rate")
        metrics = {"families": result.get("families", []), "before": before, "after": after,
                   "before_table": result.get("before_table", ""), "after_table": result.get("after_table", ""),
                   "episodes_per_family": spec["eval_episodes"], "steps": spec["steps"], "datasets": spec["names"]}
        try:
            name = self.registry.add_version(Path(result["checkpoint"]), spec["base"], metrics, job.id)
        except (ValueError, OSError) as e:
            return "failed", f"training finished but the checkpoint was not registered: {e} (it stays in runs/{job.id}/train)"
        result["version"], result["activated"] = name, False
        if before is None or after is None:
            return "done", f"registered {name} without a before/after evaluation ({result.get('note') or 'skipped'}); activate it by hand"
        numbers = f"{_pct(before)} -> {_pct(after)} on {', '.join(metrics['families'])}"
        if after < before:
            return "done", f"registered {name}, not activated: worse than {spec['base']} ({numbers})"
        try:
            self.registry.activate(name)
        except ValueError as e:
            return "done", f"registered {name} but could not activate it: {e}"
        result["activated"] = True
        return "done", f"registered and activated {name} ({numbers})"

    def _write_status(self, job: Job) -> None:
        with contextlib.suppress(OSError):
            _write_json(job.folder / STATUS_FILE, {k: v for k, v in job.summary(2000).items()})


# ============================================================================ the child process


def child_main(spec: dict[str, Any], folder: str, parent_pid: int | None = None) -> None:
    """Entry point of the job process: run the job, write result.json or error.json. With
    ``parent_pid`` (the app's), the job ends itself when the app is gone (killed without closing
    its jobs): its checkpoints are atomic, and a restarted app reports the job as interrupted."""
    if parent_pid is not None:
        from vla_demo.workers import exit_with_parent

        exit_with_parent(parent_pid)
    root = Path(folder)
    _redirect_output(root / LOG_FILE)
    stop = _watch_stop_file(root / STOP_FILE)
    report = ProgressWriter(root / PROGRESS_FILE)
    try:
        import torch

        torch.set_num_threads(max(1, int(spec.get("threads", 1))))
        run = {"finetune": run_finetune, "eval": run_eval, "replay": run_replay}[spec["kind"]]
        _write_json(root / RESULT_FILE, {**run(spec, root, report, stop), "pid": os.getpid()})
    except BaseException as e:
        traceback.print_exc()
        sys.stderr.flush()
        _write_json(root / ERROR_FILE, {"error": f"{type(e).__name__}: {e}"})
        raise SystemExit(1) from None


class ProgressWriter:
    """Appends one JSON line per call to the job's progress file (flushed at once)."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, **fields: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(fields) + "\n")


def run_finetune(spec: dict[str, Any], folder: Path, report: ProgressWriter, stop: threading.Event) -> dict[str, Any]:
    """Before-evaluation, training, after-evaluation; returns what the manager registers."""
    from vla_demo.train import train

    families = affected_families(spec["datasets"])
    episodes = spec["eval_episodes"] if families else 0
    parent = spec["init_from"] or "expert"
    before = _eval_phase(parent, families, episodes, spec, folder / "eval_before.json", report, "eval-before", stop)
    if stop.is_set():
        return {"cancelled": True}
    cfg = finetune_config(spec, folder / "train", job_id=folder.name)
    report(phase="train", step=0, total=cfg.steps, message="loading data and model")
    checkpoint = train(cfg, progress=lambda s, t, m: report(phase="train", step=s, total=t, loss=m.get("loss"),
                                                            val_loss=m.get("val_loss")), stop=stop)
    if stop.is_set():
        return {"cancelled": True, "checkpoint": str(checkpoint)}
    after = _eval_phase(str(checkpoint), families, episodes, spec, folder / "eval_after.json", report, "eval-after", stop)
    note = "" if families else "no task family could be parsed from the datasets' instructions"
    if families and not episodes:
        note = "evaluation episodes set to 0"
    return {"cancelled": False, "checkpoint": str(checkpoint), "families": families, "note": note,
            "before_rate": overall_rate(before), "after_rate": overall_rate(after),
            "before_table": before["table_markdown"] if before else "", "after_table": after["table_markdown"] if after else "",
            "before": before["families"] if before else None, "after": after["families"] if after else None}


def run_eval(spec: dict[str, Any], folder: Path, report: ProgressWriter, stop: threading.Event) -> dict[str, Any]:
    """One evaluation with failure clips; returns the eval JSON."""
    from vla_demo.evaluate import evaluate

    with eval_progress(report, "eval"):
        out = evaluate(spec["policy"], split=spec["split"], episodes_per_family=spec["episodes"], seed=spec["seed"],
                       families=tuple(spec["families"]), workers=spec["eval_workers"], clips_dir=folder / "clips",
                       baselines=spec["baselines"])
    out["version"] = spec["version"]
    _write_json(folder / "eval.json", out)
    return out


def run_replay(spec: dict[str, Any], folder: Path, report: ProgressWriter, stop: threading.Event) -> dict[str, Any]:
    """Both versions on the same seeded episode, rendered side by side into ``ab.mp4``."""
    import numpy as np

    from vla_demo.evaluate import load_policy, rollout, uses_wrist
    from vla_demo.media import write_video
    from vla_demo.render import caption
    from vla_demo.sim.env import TabletopEnv

    size = spec["size"]
    envs = {False: TabletopEnv(image_size=(size, size), robot_visuals="full")}  # by wrist camera on/off
    sides, clips = [], []
    try:
        for k, (name, policy_spec) in enumerate(zip(spec["versions"], spec["policies"], strict=True)):
            policy = load_policy(policy_spec, envs[False])
            wrist = uses_wrist(policy)  # the same seeded scene, with the hand's view rendered
            if wrist not in envs:
                envs[wrist] = TabletopEnv(image_size=(size, size), robot_visuals="full", wrist_camera=True)
            env = envs[wrist]
            obs, _ = env.reset(seed=spec["seed"], options={"family": spec["family"], "split": spec["split"]})
            frames, info, steps = [obs["observation.images.front"]], {}, 0
            for rec in rollout(env, policy, observation=obs):
                if stop.is_set():
                    return {"cancelled": True}
                frames.append(rec.next_observation["observation.images.front"])
                info, steps = rec.info, rec.step + 1
                report(phase=f"replay {'AB'[k]}", step=steps, total=env.config.max_episode_steps)
            success = bool(info.get("success"))
            label = f"{'AB'[k]}: {name}  {'success' if success else 'failed'} ({steps} steps)"
            clips.append([caption(f, label) for f in frames])
            sides.append({"version": name, "success": success, "steps": steps})
        instruction = env.instruction
    finally:
        for e in envs.values():
            e.close()
    n = max(len(c) for c in clips)
    padded = [c + [c[-1]] * (n - len(c)) for c in clips]
    gap = np.full((padded[0][0].shape[0], 6, 3), 255, np.uint8)
    path = write_video(folder / "ab.mp4", (np.concatenate([a, gap, b], axis=1) for a, b in zip(*padded, strict=True)), fps=10)
    return {"clip": str(path), "instruction": instruction, "family": spec["family"], "seed": spec["seed"], "sides": sides}


def finetune_config(spec: dict[str, Any], out: Path, job_id: str):
    """The TrainConfig of a fine-tune job: the recipe's (``recipes.finetune_config``), with the job's
    steps, rate and the app's replay share."""
    from vla_demo.recipes import finetune_config as recipe

    return recipe(spec["init_from"], list(spec["datasets"]), [spec["replay"]] if spec.get("replay") else [], out,
                  steps=spec["steps"], replay_share=float(spec["replay_share"]), lr=spec["lr"], batch_size=spec["batch_size"],
                  seed=spec["seed"], command=f"app fine-tune job {job_id} from {spec['base']} on {', '.join(spec['names'])}")


def affected_families(datasets: list[str]) -> list[str]:
    """Task families named by the datasets' instructions (unparseable instructions are skipped)."""
    from vla_demo.data.reader import DatasetReader
    from vla_demo.sim.tasks import parse_instruction

    found = set()
    for path in datasets:
        for task in DatasetReader(path).tasks:
            parsed = parse_instruction(task)
            if parsed.ok:
                found.add(parsed.goal.family)
    return [f for f in FAMILIES if f in found]


def overall_rate(report: dict[str, Any] | None) -> float | None:
    """Success over all evaluated families (None when there was no evaluation)."""
    if not report or not report["families"]:
        return None
    rows = report["families"].values()
    return sum(r["successes"] for r in rows) / sum(r["episodes"] for r in rows)


def _eval_phase(policy: str, families: list[str], episodes: int, spec: dict[str, Any], path: Path,
                report: ProgressWriter, phase: str, stop: threading.Event) -> dict[str, Any] | None:
    """A before/after evaluation on fixed seeds (the same for parent and child), without baselines."""
    if not families or episodes <= 0 or stop.is_set():
        return None
    from vla_demo.evaluate import evaluate

    report(phase=phase, step=0, total=0, message=f"{phase}: {episodes} episodes per family on {', '.join(families)}")
    with eval_progress(report, phase):
        out = evaluate(policy, split=spec["split"], episodes_per_family=episodes, seed=1000 + spec["seed"],
                       families=tuple(families), workers=spec["eval_workers"], baselines=False)
    _write_json(path, out)
    return out


@contextlib.contextmanager
def eval_progress(report: ProgressWriter, phase: str):
    """Report evaluation progress: ``evaluate`` counts episodes with a tqdm bar, so inside this
    (child) process that bar class is swapped for one that also writes a progress line per episode."""
    import tqdm as tqdm_module

    original = tqdm_module.tqdm

    class Reporting(original):
        def __iter__(self):
            for done, item in enumerate(super().__iter__(), 1):
                report(phase=phase, step=done, total=int(self.total or 0))
                yield item

    tqdm_module.tqdm = Reporting
    try:
        yield
    finally:
        tqdm_module.tqdm = original


def _redirect_output(path: Path) -> None:
    """Send this process's stdout/stderr (and its children's) to the job log."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _watch_stop_file(path: Path, period: float = 0.3) -> threading.Event:
    """An Event set when the STOP file appears or the app process goes away."""
    stop = threading.Event()
    parent = os.getppid()

    def watch() -> None:
        while not stop.is_set():
            if path.exists() or os.getppid() != parent:
                stop.set()
            time.sleep(period)

    threading.Thread(target=watch, name="stop-watch", daemon=True).start()
    return stop


# ============================================================================ helpers


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if number != value and not (isinstance(value, float) and value.is_integer()):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not lo <= number <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {number}")
    return number


def _write_json(path: Path, obj: Any) -> None:
    from vla_demo.data.format import write_json

    write_json(path, obj)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _failure_message(folder: Path, code: int | None, last: str) -> str:
    """The child's own error line, plus the tail of its log."""
    err = _read_json(folder / ERROR_FILE)
    head = err["error"] if err else (f"the job process died (exit code {code})" if code is not None else last)
    try:
        lines = (folder / LOG_FILE).read_text(encoding="utf-8", errors="replace").strip().split("\n")[-40:]
    except OSError:
        lines = []
    lines = [line.rsplit("\r", 1)[-1] for line in lines]  # keep what a terminal would show of tqdm bars
    tail = "\n".join(line for line in lines if line.strip())[-1500:]
    return f"failed: {head}" + (f"\n{tail}" if tail else "")


def _phase_message(job: Job) -> str:
    names = {"eval-before": "evaluating the parent", "replay A": "replaying A", "replay B": "replaying B", "train": "training", "eval-after": "evaluating the new version",
             "eval": "evaluating"}
    what = names.get(job.phase, job.phase)
    return f"{what}: {job.step}/{job.total}" if job.total else what


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"
