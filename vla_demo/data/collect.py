"""Scripted demonstrations -> a LeRobot v3.0 dataset (``python -m vla_demo collect``).

Worker processes roll the scripted expert out (with DART-style action noise: executed actions are
perturbed, the recorded ``action`` is the clean expert command and ``executed_action`` what ran);
the main process is the dataset's one writer and saves episodes in a deterministic order.
Failed episodes are left out, or kept with ``success=False`` when asked.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla_demo.constants import (ACTION, EXECUTED_ACTION, FAMILIES, GOAL_POSITIONS, INTERVENTION, OBJECT_LABELS, OBS_IMAGE_FRONT, OBS_IMAGE_WRIST,
                                OBS_STATE)

# Collection seeds live far above evaluation seeds (evaluate.episode_seeds), so a policy is never
# evaluated on a scene it was trained on.
COLLECT_SEED_BASE = 1_000_000_000


@dataclass(frozen=True)
class CollectJob:
    family: str
    split: str
    seed: int
    noise: float
    image_size: tuple[int, int]
    wrist: bool
    detour: float = 0.0
    objects: bool = False  # also record ``object_labels``
    shape_rival: bool = False  # the scene holds an object of the target's colour in another shape
    shape_only: bool = False  # the target is named by its shape alone (TaskFamily.sample_shape_only)


def collection_seed(seed: int, i: int) -> int:
    return COLLECT_SEED_BASE + seed * 100_003 + i


def run_demo(job: CollectJob):
    """One scripted episode -> (Episode, success)."""
    from vla_demo.data.writer import Episode
    from vla_demo.evaluate import rollout, worker_env
    from vla_demo.sim.expert import ScriptedExpert

    env = worker_env(image_size=tuple(job.image_size), wrist_camera=job.wrist)
    expert = ScriptedExpert(env, noise=job.noise, seed=job.seed, detour=job.detour)
    keys = [OBS_IMAGE_FRONT] + ([OBS_IMAGE_WRIST] if job.wrist else [])
    rows: dict[str, list] = {k: [] for k in [*keys, OBS_STATE, ACTION, EXECUTED_ACTION, INTERVENTION, GOAL_POSITIONS]}
    if job.objects:
        expert = _LabellingExpert(expert, env, rows.setdefault(OBJECT_LABELS, []))
    tasks, success = [], False
    options = {"family": job.family, "split": job.split, "shape_rival": job.shape_rival, "shape_only": job.shape_only}
    for rec in rollout(env, expert, seed=job.seed, options=options):
        for k in keys:
            rows[k].append(rec.observation[k])
        rows[OBS_STATE].append(rec.observation[OBS_STATE])
        rows[ACTION].append(rec.label)
        rows[EXECUTED_ACTION].append(rec.action)
        rows[INTERVENTION].append(False)
        rows[GOAL_POSITIONS].append(rec.info["goal_positions"])  # after the step: targets barely move in one
        tasks.append(rec.observation["task"])
        success = bool(rec.info.get("success"))
    frames = {k: np.stack(v) for k, v in rows.items()}
    frames[INTERVENTION] = frames[INTERVENTION].astype(bool)
    return Episode(frames, tasks, success, "scripted", "scripted-expert"), success


class _LabellingExpert:
    """The scripted expert, noting the env's ``object_labels`` each time it is asked to act (when
    the env still shows the observation the action answers; the rollout's ``info`` comes after)."""

    def __init__(self, expert, env, labels: list):
        self.expert, self.env, self.labels = expert, env, labels

    def reset(self) -> None:
        self.expert.reset()

    def select_action(self, obs):
        self.labels.append(self.env.object_labels())
        return self.expert.select_action(obs)

    @property
    def label(self):
        return self.expert.label


def collect(
    out: str | os.PathLike,
    episodes: int,
    families: tuple[str, ...] = FAMILIES,
    split: str = "train",
    seed: int = 0,
    noise: float = 0.3,
    workers: int | None = None,
    image_size: tuple[int, int] = (128, 128),
    wrist: bool = False,
    keep_failed: bool = False,
    progress: bool = True,
    detour: float = 0.0,
    objects: bool = True,
    shape_rival: float = 0.0,
    shape_only: bool = False,
) -> dict[str, Any]:
    """Record ``episodes`` scripted demonstrations (families in turn) into the dataset at ``out``.

    ``noise`` and ``detour`` perturb the executed actions (see :class:`~vla_demo.sim.expert.ScriptedExpert`).
    ``objects`` also records ``object_labels`` (not into a dataset created without them).
    ``shape_rival`` is the share of episodes whose scene also holds an object of the target's
    colour in another shape (drawn per episode from its own stream, so the scenes of the others
    are the ones a collection without rivals samples). ``shape_only`` records shape-only scenes
    (:meth:`~vla_demo.sim.tasks.TaskFamily.sample_shape_only`: the target named by its shape alone,
    objects in unnamed colours too), for every family but stack.

    Returns a summary: saved, failed, frames, seconds and frames per second.
    """
    from tqdm import tqdm

    from vla_demo.config import SimConfig
    from vla_demo.data.format import keeps_column, sim_features
    from vla_demo.data.writer import DatasetWriter
    from vla_demo.sim.tasks import SHAPE_ONLY_FAMILIES, check_split, get_family

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if noise < 0 or not 0.0 <= detour <= 1.0 or not 0.0 <= shape_rival <= 1.0:  # checked before the dataset is opened
        raise ValueError(f"noise must be >= 0, detour and shape_rival probabilities in 0..1, got noise={noise}, "
                         f"detour={detour}, shape_rival={shape_rival}")
    check_split(split)
    for f in families:
        get_family(f)
    if shape_only and not set(families) <= set(SHAPE_ONLY_FAMILIES):
        raise ValueError(f"shape-only scenes are for {', '.join(SHAPE_ONLY_FAMILIES)}, not stack (it names two objects)")
    workers = workers or min(2, os.cpu_count() or 1)
    note = (f"Scripted-expert demonstrations: families {', '.join(families)}, split `{split}`, action noise {noise}, "
            f"detour probability {detour}" + (f", same-colour rival in {shape_rival:.0%} of scenes" if shape_rival else "")
            + (", shape-only scenes (targets named by shape alone, objects in unnamed colours too)." if shape_only else "."))
    objects = objects and keeps_column(Path(out), OBJECT_LABELS)
    with DatasetWriter.held(out, sim_features(image_size, wrist, goals=True, objects=objects), SimConfig().control_hz, card_note=note) as writer:
        start = writer.num_episodes
        seeds = [collection_seed(seed, start + i) for i in range(episodes)]
        jobs = [CollectJob(families[i % len(families)], split, s, noise, tuple(image_size), wrist, detour, objects,
                           _has_rival(s, shape_rival), shape_only) for i, s in enumerate(seeds)]
        saved = failed = frames = 0
        t0 = time.perf_counter()
        bar = tqdm(total=episodes, desc=f"collect -> {Path(out).name}", unit="ep", disable=not progress)
        for episode, ok in _results(jobs, workers):
            if ok or keep_failed:
                writer.save_episode(episode)
                saved += 1
                frames += len(episode)
            failed += not ok
            bar.update(1)
            bar.set_postfix(saved=saved, failed=failed)
        bar.close()
        root = writer.root
    seconds = time.perf_counter() - t0
    return {"saved": saved, "failed": failed, "frames": frames, "seconds": round(seconds, 2),
            "frames_per_s": round(frames / seconds, 1) if seconds else 0.0, "dataset": str(root)}


def _has_rival(episode_seed: int, share: float) -> bool:
    """Whether an episode's scene gets a same-colour rival: a draw of its own, keyed by the
    episode's seed, so it does not depend on the batch the episode was collected in."""
    return share > 0 and np.random.default_rng([episode_seed, 0x51AE]).random() < share


def _results(jobs: list[CollectJob], workers: int):
    if workers <= 1:
        for job in jobs:
            yield run_demo(job)
        return
    from vla_demo.workers import process_pool

    with process_pool(workers) as pool:
        yield from pool.map(run_demo, jobs, chunksize=2)
