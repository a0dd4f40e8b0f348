"""First-frame grounding: does a policy's goal head point at the named object, per family and split?

A failed episode is either a failure of *which object* (language grounding) or of *how*
(manipulation). On the evaluation scenes of ``eval --split S --seed K`` (the same seeds), this reads
the goal head's first-frame estimate of the target's position and counts the scenes where the
object nearest to it (on the table plane) is the instructed one, with the estimate's error. A policy
without a goal head is refused. No rollouts: a few seconds per 100 scenes.

    PYTHONPATH=. python scripts/grounding_probe.py --policy assets/policies/default OTHER_DIR \\
        --split heldout-combos --scenes 50 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vla_demo.constants import FAMILIES, OBS_IMAGE_FRONT, OBS_IMAGE_WRIST, OBS_STATE, SPLITS, TASK
from vla_demo.evaluate import episode_seeds, policy_env
from vla_demo.policy import LanguageConditionedPolicy


def probe(policy: LanguageConditionedPolicy, split: str, family: str, scenes: int, seed: int) -> dict:
    """Share of scenes whose first-frame target estimate is nearest the instructed object, and the
    median / 90th-percentile distance of the estimate from it (cm)."""
    env = policy_env(policy)  # this process's cached env, as the evaluation workers use
    hits, errors = 0, []
    for s in episode_seeds(seed, family, scenes):
        obs, _ = env.reset(seed=s, options={"family": family, "split": split})
        pred = policy.predict(obs[OBS_IMAGE_FRONT], obs[TASK], obs[OBS_STATE], wrist=obs.get(OBS_IMAGE_WRIST))
        guess = pred.goal[0, :2]
        positions = env.world_view().positions[:, :2]
        target = env.goal.target
        hits += int(np.argmin(np.linalg.norm(positions - guess, axis=1)) == target)
        errors.append(float(np.linalg.norm(positions[target] - guess)) * 100)
    return {"scenes": scenes, "nearest_is_target": hits / scenes, "median_cm": float(np.median(errors)),
            "p90_cm": float(np.percentile(errors, 90))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", nargs="+", required=True, help="policy folders (with a goal head)")
    ap.add_argument("--split", choices=SPLITS, default="heldout-combos")
    ap.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    ap.add_argument("--scenes", type=int, default=50, help="scenes per family (evaluation seeds of --seed)")
    ap.add_argument("--seed", type=int, default=0, help="evaluation seed, as in eval --seed")
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args(argv)
    if args.scenes < 1:
        ap.error(f"--scenes must be at least 1, got {args.scenes}")
    results: dict[str, dict] = {}
    for path in args.policy:
        try:
            policy = LanguageConditionedPolicy.from_pretrained(path)
        except (OSError, ValueError) as e:
            ap.error(f"cannot load the policy {path}: {e}")
        if not policy.model.config.goal_head:
            raise SystemExit(f"{path}: this policy has no goal head to probe")
        results[path] = {f: probe(policy, args.split, f, args.scenes, args.seed)
                         for f in tqdm(args.families, desc=Path(path).name, unit="family")}
    print(f"split `{args.split}`, evaluation seed {args.seed}, {args.scenes} scenes per family: first-frame "
          "target estimate nearest the named object (median / p90 error, cm)\n")
    print("| policy | " + " | ".join(args.families) + " |")
    print("|---|" + "---|" * len(args.families))
    for path, per in results.items():
        cells = [f"{r['nearest_is_target']:.0%} ({r['median_cm']:.1f} / {r['p90_cm']:.1f})" for r in per.values()]
        print(f"| `{path}` | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"split": args.split, "seed": args.seed, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
