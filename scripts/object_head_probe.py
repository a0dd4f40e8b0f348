"""What a policy's object head calls each object's shape, per colour-shape combination.

On the first frame of the evaluation scenes of ``eval --split S --seed K`` (the same seeds), this
reads the object head (``ModelConfig.object_head``) under every object's centre in the front
camera and counts, per colour-shape combination, how often it names the shape right and what it
calls it. Combinations never trained on (``tasks.HELDOUT_COMBOS``) are marked: a head that learnt
shape from colour is right on the trained ones and wrong on those. No rollouts: seconds per 100
scenes. A policy without an object head is refused.

    PYTHONPATH=. python scripts/object_head_probe.py --policy DIR --split train heldout-combos \\
        --scenes 40 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from vla_demo.constants import (COLOURS, FAMILIES, HELDOUT_COMBOS, OBJECT_LABEL_FIELDS, OBS_IMAGE_FRONT, OBS_IMAGE_WRIST, OBS_STATE, SHAPES,
                                SPLITS, TASK)
from vla_demo.evaluate import episode_seeds, policy_env
from vla_demo.policy import LanguageConditionedPolicy, prepare_images, prepare_state


def first_frame_calls(policy: LanguageConditionedPolicy, obs: dict, labels) -> list[tuple[str, str, str]]:
    """(colour, shape, shape the head calls it) for every labelled object of one observation."""
    m = policy.model
    size = m.config.image_size
    images = prepare_images([obs[OBS_IMAGE_FRONT]], size)  # (1, 3, S, S), as predict() feeds the model
    wrist = prepare_images([obs[OBS_IMAGE_WRIST]], m.config.wrist_image_size) if policy.needs_wrist else None
    enc = policy.tokenizer([obs[TASK]])
    rows = torch.as_tensor(labels).unsqueeze(0)  # (1, MAX_OBJECTS * 7)
    with torch.no_grad():
        maps = m(images, enc.input_ids, enc.attention_mask, prepare_state(obs[OBS_STATE], m.config.state_dim), wrist=wrist)["feature_maps"]
        logits, seen = m.object_logits(maps, rows)[0]  # the front camera: (1, M, colours + shapes), (1, M)
    slots = rows.view(-1, len(OBJECT_LABEL_FIELDS))
    calls = logits[0, :, len(COLOURS):].argmax(-1)
    names = list(COLOURS)
    return [(names[int(slots[i, 0])], SHAPES[int(slots[i, 1])], SHAPES[int(calls[i])]) for i in range(len(slots)) if seen[0, i]]


def probe(policy: LanguageConditionedPolicy, split: str, families: list[str], scenes: int, seed: int) -> dict[str, dict]:
    """``{"colour shape": {"objects": n, "right": k, "called": {shape: count}, "trained": bool}}``."""
    env = policy_env(policy)
    called: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for family in families:
        for s in episode_seeds(seed, family, scenes):
            obs, _ = env.reset(seed=s, options={"family": family, "split": split})
            for colour, shape, call in first_frame_calls(policy, obs, env.object_labels()):
                called[(colour, shape)][call] += 1
    return {f"{c} {s}": {"objects": sum(n.values()), "right": n[s], "called": dict(n), "trained": (c, s) not in HELDOUT_COMBOS}
            for (c, s), n in sorted(called.items())}


def print_table(results: dict[str, dict], seed: int, scenes: int) -> None:
    for split, per in results.items():
        print(f"\nsplit `{split}`, evaluation seed {seed}, {scenes} scenes per family, front camera, first frames\n")
        print("| objects | trained | shape told right | called |\n|---|---|---|---|")
        for combo, r in per.items():
            calls = ", ".join(f"{k} {v}" for k, v in sorted(r["called"].items(), key=lambda kv: -kv[1]))
            print(f"| {combo} | {'yes' if r['trained'] else 'no'} | {r['right']} of {r['objects']} | {calls} |")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True, help="a policy folder with an object head")
    ap.add_argument("--split", nargs="+", choices=SPLITS, default=["train", "heldout-combos"])
    ap.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    ap.add_argument("--scenes", type=int, default=40, help="scenes per family (evaluation seeds of --seed)")
    ap.add_argument("--seed", type=int, default=0, help="evaluation seed, as in eval --seed")
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args(argv)
    if args.scenes < 1:
        ap.error(f"--scenes must be at least 1, got {args.scenes}")
    try:
        policy = LanguageConditionedPolicy.from_pretrained(args.policy)
    except (OSError, ValueError) as e:
        ap.error(f"cannot load the policy {args.policy}: {e}")
    if not policy.model.config.object_head:
        raise SystemExit(f"{args.policy}: this policy has no object head to probe")
    policy.model.eval()
    results = {split: probe(policy, split, args.families, args.scenes, args.seed) for split in tqdm(args.split, desc="splits")}
    print_table(results, args.seed, args.scenes)
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": args.seed, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
