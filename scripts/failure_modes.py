"""What a policy does when it fails a grasping family (pick, place, stack), counted by what its hand held.

Rolls the policy out on the evaluation scenes of ``eval --split S --seed K`` (the same seeds) through
the shared ``rollout()`` loop, watches the privileged world state after every step, and puts each
episode in one class: success; grasped a wrong object (never the target); grasped nothing; or held
the target and then ended short of the goal: in the wrong receptacle (place), within 12 cm of the
destination, or elsewhere, with "still held" when the episode ended before a release. The grounding
probe (``grounding_probe.py``) asks the same question of the first frame only, without rollouts.
``--shape-only`` rolls out on shape-only scenes instead (the target named by its shape alone; pick
and place), where only shape tells the target from the object of its colour beside it.

    PYTHONPATH=. python scripts/failure_modes.py --policy assets/policies/default OTHER_DIR \\
        --family place --scenes 50 --seed 1 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vla_demo.constants import SPLITS
from vla_demo.evaluate import episode_seeds, load_policy, policy_env, rollout, worker_env
from vla_demo.sim.tasks import SHAPE_ONLY_FAMILIES

GRASP_FAMILIES = ("pick", "place", "stack")
NEAR_M = 0.12  # "within 12 cm of the destination" (a receptacle's centre, or the base object)
IN_RECEPTACLE_M = 0.08  # the target's centre this close to a receptacle's: it is in that one

SUCCESS = "success"
WRONG_OBJECT = "grasped a wrong object, never the target"
NOTHING = "grasped nothing"
CLASSES = (SUCCESS, WRONG_OBJECT, NOTHING, "held the target, ended in the wrong receptacle",
           "held the target, ended within 12 cm of the destination", "held the target, ended elsewhere")


def classify(success: bool, held_target: bool, held_other: bool, still_held: bool,
             dest_m: float | None, wrong_receptacle: bool = False) -> str:
    """One episode's class from what the hand held during it and where the target ended.

    ``dest_m``: the target's final distance (table plane) from its destination (None for pick,
    which has none); ``wrong_receptacle``: it ended in a receptacle other than the named one.
    """
    if success:
        return SUCCESS
    if not held_target:
        return WRONG_OBJECT if held_other else NOTHING
    if wrong_receptacle:
        where = CLASSES[3]
    elif dest_m is not None and dest_m <= NEAR_M:
        where = CLASSES[4]
    else:
        where = CLASSES[5]
    return where + (" (still held)" if still_held else "")


def episode_class(env, policy, family: str, split: str, seed: int, shape_only: bool = False) -> str:
    """Roll ``policy`` out on one scene and classify the episode (:func:`classify`)."""
    held_target = held_other = success = False
    for rec in rollout(env, policy, seed=seed, options={"family": family, "split": split, "shape_only": shape_only}):
        view, target = env.world_view(), env.goal.target
        held_target |= target in view.held
        held_other |= bool(set(view.held) - {target})
        success = bool(rec.info.get("success"))
    view, goal = env.world_view(), env.goal
    at = view.positions[goal.target][:2]
    dest_m, wrong_receptacle = None, False
    if family == "place":
        d = np.linalg.norm(view.receptacles[:, :2] - at, axis=1)  # (R,)
        dest_m = float(d[goal.destination])
        nearest = int(np.argmin(d))
        wrong_receptacle = nearest != goal.destination and d[nearest] <= IN_RECEPTACLE_M
    elif family == "stack":
        dest_m = float(np.linalg.norm(view.positions[goal.destination][:2] - at))
    return classify(success, held_target, held_other, goal.target in view.held, dest_m, wrong_receptacle)


def failure_modes(spec: str, family: str, split: str, scenes: int, seed: int, shape_only: bool = False) -> dict[str, int]:
    """Counts of each class over ``scenes`` evaluation scenes of ``family`` (``spec`` as ``eval --policy``)."""
    policy = load_policy(spec, worker_env())  # as the evaluation workers do
    env = policy_env(policy)  # with the wrist camera when the policy reads it
    counts = Counter(episode_class(env, policy, family, split, s, shape_only)
                     for s in tqdm(episode_seeds(seed, family, scenes), desc=Path(spec).name, unit="ep"))
    return dict(counts.most_common())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", nargs="+", required=True, help="policy folders (or `expert`)")
    ap.add_argument("--family", choices=GRASP_FAMILIES, default="place")
    ap.add_argument("--split", choices=SPLITS, default="train")
    ap.add_argument("--scenes", type=int, default=50, help="scenes (evaluation seeds of --seed)")
    ap.add_argument("--seed", type=int, default=0, help="evaluation seed, as in eval --seed")
    ap.add_argument("--shape-only", action="store_true", help="shape-only scenes (the target named by its shape alone)")
    ap.add_argument("--json", default=None, help="write the counts here too")
    args = ap.parse_args(argv)
    if args.scenes < 1:
        ap.error(f"--scenes must be at least 1, got {args.scenes}")
    if args.shape_only and args.family not in SHAPE_ONLY_FAMILIES:
        ap.error("--shape-only scenes are not for stack (it names two objects)")
    results = {}
    for spec in args.policy:
        try:
            results[spec] = failure_modes(spec, args.family, args.split, args.scenes, args.seed, args.shape_only)
        except (OSError, ValueError) as e:
            ap.error(f"cannot load the policy {spec}: {e}")
    scenes = "shape-only scenes" if args.shape_only else "scenes"
    print(f"{args.family}, split `{args.split}`, evaluation seed {args.seed}, {args.scenes} {scenes}: episodes per class\n")
    classes = [c for c in CLASSES if any(k.startswith(c) for r in results.values() for k in r)]
    print("| class | " + " | ".join(f"`{s}`" for s in results) + " |")
    print("|---|" + "---|" * len(results))
    for c in classes:
        cells = [f"{sum(v for k, v in r.items() if k.startswith(c))}"
                 + (f" ({r[c + ' (still held)']} still held)" if c + " (still held)" in r else "") for r in results.values()]
        print(f"| {c} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"family": args.family, "split": args.split, "seed": args.seed,
                                               "scenes": args.scenes, "shape_only": args.shape_only,
                                               "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
