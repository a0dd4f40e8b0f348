"""The shared rollout loop and the evaluation harness.

:func:`rollout` is the one closed loop of the project: the app drives it step by step (pausing,
overriding actions with teleop, changing the instruction), while evaluation, data collection and
tests simply consume it to the end.

:func:`evaluate` runs seeded episodes per task family in worker processes and reports success
rates with Wilson 95% intervals, next to two baselines: the scripted expert (the ceiling) and a
language-blind control (the same policy given another episode's instruction; success is still
judged on the true one). A two-candidate test checks that the policy goes to the object it was
told about when a same-shape object of another colour is present.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_demo.constants import FAMILIES, OBS_IMAGE_FRONT, TASK

# ----------------------------------------------------------------------------- rollout


@dataclass
class RolloutControl:
    """Live handles on a running rollout (set from the UI thread, read by the loop).

    Attributes:
        paused: while set, the loop yields records without stepping the env.
        stop: once set, the loop ends before the next step.
        render_substeps: when not None, the in-between display frames of the next steps (the live
            view sheds them when the machine cannot keep the control rate).
    """

    paused: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    render_substeps: int | None = None
    _override: np.ndarray | None = None
    _instruction: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def override(self, action: np.ndarray | None) -> None:
        """Execute ``action`` on the next step instead of the policy's (teleop takeover)."""
        with self._lock:
            self._override = None if action is None else np.asarray(action, dtype=np.float32)

    def set_instruction(self, text: str) -> None:
        """Change the instruction before the next step (the policy's chunk queue is flushed)."""
        with self._lock:
            self._instruction = text

    def take(self) -> tuple[np.ndarray | None, str | None]:
        with self._lock:
            out = (self._override, self._instruction)
            self._override, self._instruction = None, None
            return out


@dataclass
class StepRecord:
    """One control step: the observation the action was chosen from and what happened.

    ``action`` is what the env executed; ``label`` the commanded action to learn from (the clean
    expert action when the expert's noise is on, the operator's action during an intervention).
    ``prediction`` is the learned policy's last :class:`Prediction` when it has one.
    """

    step: int
    observation: dict[str, Any]
    action: np.ndarray | None
    label: np.ndarray | None
    intervention: bool
    next_observation: dict[str, Any]
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    prediction: Any = None
    paused: bool = False

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


def rollout(
    env,
    policy,
    *,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    max_steps: int | None = None,
    render_substeps: int = 0,
    control: RolloutControl | None = None,
    policy_instruction: str | None = None,
    observation: dict[str, Any] | None = None,
) -> Iterator[StepRecord]:
    """Run ``policy`` in ``env``, yielding one :class:`StepRecord` per control step.

    Args:
        env: a :class:`~vla_demo.sim.env.TabletopEnv` (or any env with its API).
        policy: anything with ``reset()`` and ``select_action(obs) -> (7,)``.
        seed, options: passed to ``env.reset``; ignored when ``observation`` is given.
        max_steps: stop after this many steps (the env truncates on its own limit too).
        render_substeps: extra display frames per step, in ``record.info["frames"]``.
        control: pause / stop / teleop override / instruction changes from another thread.
        policy_instruction: show the policy this instruction instead of the env's (the
            language-blind control); success is still judged on the env's instruction.
        observation: continue from this observation instead of resetting the env.
    """
    obs = observation if observation is not None else env.reset(seed=seed, options=options)[0]
    policy.reset()
    step = 0
    while max_steps is None or step < max_steps:
        if control is not None:
            if control.stop.is_set():
                return
            if control.paused.is_set():
                yield StepRecord(step, obs, None, None, False, obs, paused=True)
                continue
        override, instruction = control.take() if control is not None else (None, None)
        if instruction is not None:
            env.set_instruction(instruction)
            policy.reset()  # drop any queued chunk planned for the old instruction
            obs = {**obs, TASK: env.instruction}
        seen = obs if policy_instruction is None else {**obs, TASK: policy_instruction}
        intervention = override is not None
        if intervention:
            action = label = override
        else:
            action = np.asarray(policy.select_action(seen), dtype=np.float32)
            label = np.asarray(getattr(policy, "label", action), dtype=np.float32)
        substeps = render_substeps if control is None or control.render_substeps is None else control.render_substeps
        next_obs, reward, terminated, truncated, info = env.step(action, render_substeps=substeps)
        yield StepRecord(
            step, obs, action, label, intervention, next_obs, reward, terminated, truncated, info,
            getattr(policy, "last_prediction", None),
        )
        obs = next_obs
        step += 1
        if terminated or truncated:
            return


# ----------------------------------------------------------------------------- statistics


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval for a binomial proportion (well-behaved at 0% and 100%)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)  # exact bounds, not 0.9999...
    return (lo, hi)


def difference_interval(k1: int, n1: int, k2: int, n2: int, z: float = 1.959964) -> tuple[float, float]:
    """95% interval of p2 - p1 for two independent proportions (Newcombe's hybrid score method,
    built from the two Wilson intervals; good coverage near 0% and 100%)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p2 - p1
    return (d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2))


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-family success table from per-episode results."""
    out = {}
    for fam in FAMILIES:
        rows = [r for r in results if r["family"] == fam]
        if not rows:
            continue
        k = sum(bool(r["success"]) for r in rows)
        lo, hi = wilson_interval(k, len(rows))
        out[fam] = {
            "episodes": len(rows),
            "successes": k,
            "success_rate": k / len(rows),
            "ci95": [round(lo, 4), round(hi, 4)],
            "mean_length": float(np.mean([r["length"] for r in rows])),
        }
    return out


# ----------------------------------------------------------------------------- episodes


@dataclass(frozen=True)
class EpisodeJob:
    policy: str
    family: str
    split: str
    seed: int
    mode: str = "policy"  # policy | expert | language_blind | two_candidates
    keep_frames: bool = False


_WORKER_CACHE: dict[str, Any] = {}


def worker_env(**overrides: Any):
    """This process's env for the given SimConfig overrides (worker processes reuse one per config)."""
    key = ("env", tuple(sorted(overrides.items())))
    if key not in _WORKER_CACHE:
        from vla_demo.sim.env import TabletopEnv

        _WORKER_CACHE[key] = TabletopEnv(**overrides)
    return _WORKER_CACHE[key]


def uses_wrist(policy) -> bool:
    """Does ``policy`` also read the wrist camera? (False for the expert, remote and front-only policies.)"""
    return bool(getattr(policy, "needs_wrist", False))


def policy_env(policy):
    """This process's env with the cameras ``policy`` needs (the wrist camera only when asked for:
    it costs a second render per step)."""
    return worker_env(wrist_camera=True) if uses_wrist(policy) else worker_env()


def load_policy(spec: str, env):
    """Build the policy named by ``--policy``: ``expert``, a policy-server URL or a checkpoint folder."""
    if spec == "expert":
        from vla_demo.sim.expert import ScriptedExpert

        return ScriptedExpert(env)
    if spec.startswith(("http://", "https://")):
        from vla_demo.remote_policy import RemotePolicy

        policy = RemotePolicy(spec)
        policy.health()  # fail now, with the reason, if the server is unreachable
        return policy
    if os.path.isdir(spec):
        import multiprocessing as mp

        import torch

        from vla_demo.policy import LanguageConditionedPolicy

        if mp.parent_process() is not None:  # one thread per worker: the workers share the cores
            torch.set_num_threads(1)
        return LanguageConditionedPolicy.from_pretrained(spec)
    raise ValueError(f"unknown policy {spec!r}: give a checkpoint folder, a policy-server URL or 'expert'")


def other_instruction(family: str, split: str, seed: int) -> str:
    """An instruction from a different, deterministic episode (for the language-blind control)."""
    from vla_demo.sim import tasks

    rng = np.random.default_rng([seed, 7919])
    others = [f for f in FAMILIES if f != family]
    fam = others[int(rng.integers(len(others)))]
    return tasks.get_family(fam).sample(rng, split, 3)[2]


def run_episode(job: EpisodeJob) -> dict[str, Any]:
    """Run one evaluation episode (in a worker process or inline)."""
    spec = "expert" if job.mode == "expert" else job.policy
    key = f"policy:{spec}"
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = load_policy(spec, worker_env())
    policy = _WORKER_CACHE[key]
    env = policy_env(policy)
    options = {"family": job.family, "split": job.split, "two_candidates": job.mode == "two_candidates"}
    blind = other_instruction(job.family, job.split, job.seed) if job.mode == "language_blind" else None
    frames, first_candidate, success, length = [], None, False, 0
    obs, _ = env.reset(seed=job.seed, options=options)
    candidates = _candidates(env) if job.mode == "two_candidates" else []
    for rec in rollout(env, policy, observation=obs, policy_instruction=blind):
        if job.keep_frames:
            frames.append(rec.observation[OBS_IMAGE_FRONT])
        if candidates and first_candidate is None:
            first_candidate = _first_reached(env, candidates)
        success, length = bool(rec.info.get("success")), rec.step + 1
    return {
        "family": job.family,
        "seed": job.seed,
        "mode": job.mode,
        "success": success,
        "length": length,
        "instruction": env.instruction if blind is None else blind,
        "instructed_target": first_candidate == 0 if candidates else None,
        "frames": frames if job.keep_frames and not success else None,
    }


def _candidates(env) -> list[int]:
    """[instructed target, its same-shape rival] in a two-candidate scene."""
    goal = env.goal
    target = env.scene.objects[goal.target]
    rivals = [i for i, o in enumerate(env.scene.objects) if o.shape == target.shape and i != goal.target]
    return [goal.target, rivals[0]] if rivals else []


def _first_reached(env, candidates: list[int], radius: float = 0.06) -> int | None:
    view = env.world_view()
    for k, i in enumerate(candidates):
        near = np.linalg.norm(view.ee_pos[:2] - view.positions[i][:2]) < radius and view.ee_pos[2] < 0.08
        if i in view.touched or near:
            return k
    return None


# ----------------------------------------------------------------------------- harness


def episode_seeds(seed: int, family: str, n: int) -> list[int]:
    """Evaluation seeds: disjoint per family, reproducible from the run seed."""
    base = seed * 1_000_003 + FAMILIES.index(family) * 100_000
    return [base + i for i in range(n)]


def run_jobs(jobs: list[EpisodeJob], workers: int, desc: str = "eval") -> list[dict[str, Any]]:
    """Run episodes in ``workers`` processes (inline when 1), with a progress bar."""
    from tqdm import tqdm

    if workers <= 1:
        return [run_episode(j) for j in tqdm(jobs, desc=desc, unit="ep")]
    from vla_demo.workers import process_pool

    with process_pool(workers) as pool:
        return list(tqdm(pool.map(run_episode, jobs, chunksize=4), total=len(jobs), desc=desc, unit="ep"))


def evaluate(
    policy: str,
    split: str = "train",
    episodes_per_family: int = 50,
    seed: int = 0,
    families: tuple[str, ...] = FAMILIES,
    workers: int | None = None,
    clips_dir: str | os.PathLike | None = None,
    clips_per_family: int = 2,
    baselines: bool = True,
    two_candidates: bool = True,
) -> dict[str, Any]:
    """Evaluate a policy and return the eval JSON of ARCHITECTURE section 4 (``two_candidates=False``
    skips the two-candidate language test: its block then reports 0 episodes)."""
    from vla_demo.sim.tasks import check_split

    check_split(split)
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")  # every episode's seed derives from it
    workers = workers or min(2, os.cpu_count() or 1)
    jobs = []
    modes = ["policy"]
    if baselines:
        modes += ["language_blind"] + (["expert"] if policy != "expert" else [])
    for fam in families:
        for s in episode_seeds(seed, fam, episodes_per_family):
            for mode in modes:
                jobs.append(EpisodeJob(policy, fam, split, s, mode, keep_frames=mode == "policy" and clips_dir is not None))
    n_two = max(len(families), episodes_per_family) if two_candidates else 0
    two_fams = [f for f in families if f != "push"] or list(families)
    for i in range(n_two):
        fam = two_fams[i % len(two_fams)]
        jobs.append(EpisodeJob(policy, fam, split, seed * 1_000_003 + 900_000 + i, "two_candidates"))
    results = run_jobs(jobs, workers)
    by_mode = {m: [r for r in results if r["mode"] == m] for m in ("policy", "expert", "language_blind", "two_candidates")}
    if policy == "expert":
        by_mode["expert"] = by_mode["policy"]
    out: dict[str, Any] = {
        "policy": policy,
        "split": split,
        "seed": seed,
        "families": summarize(by_mode["policy"]),
        "baselines": {},
    }
    if baselines:
        out["baselines"] = {m: {"families": summarize(by_mode[m])} for m in ("expert", "language_blind")}
    two = by_mode["two_candidates"]
    hits = sum(bool(r["instructed_target"]) for r in two)
    out["two_candidates"] = {"episodes": len(two), "instructed_target": hits, "rate": hits / len(two) if two else 0.0}
    out["table_markdown"] = markdown_table(out)
    out["failure_clips"] = _write_clips(by_mode["policy"], clips_dir, clips_per_family) if clips_dir else []
    return out


def _write_clips(results, clips_dir, per_family: int) -> list[str]:
    from vla_demo.media import write_video

    paths, counts = [], {}
    for r in results:
        if r["frames"] and counts.get(r["family"], 0) < per_family:
            counts[r["family"]] = counts.get(r["family"], 0) + 1
            path = Path(clips_dir) / f"fail_{r['family']}_seed{r['seed']}.mp4"
            paths.append(str(write_video(path, r["frames"], fps=10)))
    return paths


def _pct(fam: dict[str, Any] | None) -> str:
    if not fam:
        return "-"
    lo, hi = fam["ci95"]
    return f"{100 * fam['success_rate']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"


def append_to_card(policy_dir: Path, report: dict[str, Any], command: str, seconds: float) -> None:
    """Append an evaluation section (command, wall time, table) to a policy folder's model card."""
    card = Path(policy_dir) / "README.md"
    text = card.read_text(encoding="utf-8").rstrip("\n")
    section = (f"\n\n## Evaluation: split `{report['split']}`\n\n`{command}` ({seconds / 60:.1f} min, "
               f"{os.cpu_count()} CPU cores; evaluation seeds are disjoint from the training scenes' seeds)\n\n"
               f"{report['table_markdown']}\n")
    card.write_text(text + section, encoding="utf-8")


def markdown_table(report: dict[str, Any]) -> str:
    """Success per family with 95% intervals, beside the expert and language-blind baselines."""
    base = report.get("baselines", {})
    lines = [
        f"policy `{report['policy']}`, split `{report['split']}`, seed {report['seed']}",
        "",
        "| family | episodes | success [95% CI] | mean length | expert | language-blind |",
        "|---|---|---|---|---|---|",
    ]
    for fam, row in report["families"].items():
        expert = base.get("expert", {}).get("families", {}).get(fam)
        blind = base.get("language_blind", {}).get("families", {}).get(fam)
        lines.append(
            f"| {fam} | {row['episodes']} | {_pct(row)} | {row['mean_length']:.1f} | {_pct(expert)} | {_pct(blind)} |"
        )
    two = report.get("two_candidates")
    if two and two["episodes"]:
        lines += ["", f"two-candidate test: went to the instructed object in {two['instructed_target']}/{two['episodes']} episodes ({100 * two['rate']:.0f}%)"]
    return "\n".join(lines)
