"""First-frame grounding: does a policy's goal head point at the named object, per family and split?

A failed episode is either a failure of *which object* (language grounding) or of *how*
(manipulation). On the evaluation scenes of ``eval --split S --seed K`` (the same seeds), this reads
the goal head's first-frame estimate of the target's position and counts the scenes where the
object nearest to it (on the table plane) is the instructed one, with the estimate's error. A miss
is named by how the object it points at relates to the named one (the stacking base, the same
colour, the same shape, or neither), and the scenes are split by whether another object of the
target's colour stands in them (where only its shape tells the target apart). A policy without a
goal head is refused. No rollouts: a few seconds per 100 scenes. ``--shape-only`` probes
shape-only scenes instead (the target named by its shape alone beside an object of its colour, with
unnamed colours too; not stack): where colour cannot help, does the policy find the shape?

    PYTHONPATH=. python scripts/grounding_probe.py --policy assets/policies/default OTHER_DIR \\
        --split heldout-combos --scenes 50 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vla_demo.constants import FAMILIES, OBS_IMAGE_FRONT, OBS_IMAGE_WRIST, OBS_STATE, SPLITS, TASK
from vla_demo.evaluate import episode_seeds, policy_env
from vla_demo.policy import LanguageConditionedPolicy
from vla_demo.sim.tasks import SHAPE_ONLY_FAMILIES


MISSES = ("base", "same colour", "same shape", "other")


def miss_kind(objects, target: int, chosen: int, base: int | None) -> str:
    """How the object the estimate points at relates to the named one (one of ``MISSES``)."""
    if chosen == base:
        return "base"
    o, t = objects[chosen], objects[target]
    return "same colour" if o.colour == t.colour else "same shape" if o.shape == t.shape else "other"


def probe(policy: LanguageConditionedPolicy, split: str, family: str, scenes: int, seed: int,
          shape_only: bool = False) -> dict:
    """Share of scenes whose first-frame target estimate is nearest the instructed object, the
    median / 90th-percentile distance of the estimate from it (cm), the misses by kind, and the
    hit rate with and without another object of the target's colour in the scene."""
    env = policy_env(policy)  # this process's cached env, as the evaluation workers use
    errors, misses = [], Counter()
    by_colour = {True: [0, 0], False: [0, 0]}  # same-colour distractor present -> [scenes, hits]
    for s in episode_seeds(seed, family, scenes):
        obs, _ = env.reset(seed=s, options={"family": family, "split": split, "shape_only": shape_only})
        pred = policy.predict(obs[OBS_IMAGE_FRONT], obs[TASK], obs[OBS_STATE], wrist=obs.get(OBS_IMAGE_WRIST))
        guess = pred.goal[0, :2]
        positions = env.world_view().positions[:, :2]
        goal, objects = env.goal, env.scene.objects
        chosen = int(np.argmin(np.linalg.norm(positions - guess, axis=1)))
        twin = any(o.colour == objects[goal.target].colour for i, o in enumerate(objects) if i != goal.target)
        by_colour[twin][0] += 1
        by_colour[twin][1] += int(chosen == goal.target)
        if chosen != goal.target:
            misses[miss_kind(objects, goal.target, chosen, goal.destination if family == "stack" else None)] += 1
        errors.append(float(np.linalg.norm(positions[goal.target] - guess)) * 100)
    hits = by_colour[True][1] + by_colour[False][1]
    return {"scenes": scenes, "nearest_is_target": hits / scenes, "median_cm": float(np.median(errors)),
            "p90_cm": float(np.percentile(errors, 90)), "misses": {k: misses[k] for k in MISSES},
            "same_colour_present": {"scenes": by_colour[True][0], "hits": by_colour[True][1]},
            "same_colour_absent": {"scenes": by_colour[False][0], "hits": by_colour[False][1]}}


def _rate(parts: list[dict]) -> str:
    n, k = sum(p["scenes"] for p in parts), sum(p["hits"] for p in parts)
    return f"{k / n:.0%} of {n}" if n else "-"


def print_tables(results: dict[str, dict], families: list[str], split: str, seed: int, scenes: int,
                 shape_only: bool = False) -> None:
    print(f"split `{split}`{', shape-only scenes' if shape_only else ''}, evaluation seed {seed}, {scenes} scenes per family: first-frame "
          "target estimate nearest the named object (median / p90 error, cm)\n")
    print("| policy | " + " | ".join(families) + " |")
    print("|---|" + "---|" * len(families))
    for path, per in results.items():
        cells = [f"{r['nearest_is_target']:.0%} ({r['median_cm']:.1f} / {r['p90_cm']:.1f})" for r in per.values()]
        print(f"| `{path}` | " + " | ".join(cells) + " |")
    print("\nAll families together: hits with / without another object of the target's colour in the scene, "
          "and what the misses pointed at\n")
    print("| policy | same colour present | absent | " + " | ".join(f"miss: {m}" for m in MISSES) + " |")
    print("|---|---|---|" + "---|" * len(MISSES))
    for path, per in results.items():
        rows = list(per.values())
        misses = [str(sum(r["misses"][m] for r in rows)) for m in MISSES]
        print(f"| `{path}` | {_rate([r['same_colour_present'] for r in rows])} | "
              f"{_rate([r['same_colour_absent'] for r in rows])} | " + " | ".join(misses) + " |")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", nargs="+", required=True, help="policy folders (with a goal head)")
    ap.add_argument("--split", choices=SPLITS, default="heldout-combos")
    ap.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    ap.add_argument("--scenes", type=int, default=50, help="scenes per family (evaluation seeds of --seed)")
    ap.add_argument("--seed", type=int, default=0, help="evaluation seed, as in eval --seed")
    ap.add_argument("--shape-only", action="store_true", help="shape-only scenes (targets named by shape alone; not stack)")
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args(argv)
    if args.scenes < 1:
        ap.error(f"--scenes must be at least 1, got {args.scenes}")
    if args.shape_only and not set(args.families) <= set(SHAPE_ONLY_FAMILIES):
        ap.error("--shape-only scenes are not for stack (it names two objects): pass --families without it")
    results: dict[str, dict] = {}
    for path in args.policy:
        try:
            policy = LanguageConditionedPolicy.from_pretrained(path)
        except (OSError, ValueError) as e:
            ap.error(f"cannot load the policy {path}: {e}")
        if not policy.model.config.goal_head:
            raise SystemExit(f"{path}: this policy has no goal head to probe")
        results[path] = {f: probe(policy, args.split, f, args.scenes, args.seed, args.shape_only)
                         for f in tqdm(args.families, desc=Path(path).name, unit="family")}
    print_tables(results, args.families, args.split, args.seed, args.scenes, args.shape_only)
    if args.json:
        Path(args.json).write_text(json.dumps({"split": args.split, "seed": args.seed, "shape_only": args.shape_only,
                                               "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
