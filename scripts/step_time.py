"""Training-step time of model variants against the default recipe's model, measured interleaved.

Each variant is the default recipe's model (``recipes.DEFAULT_MODEL``) with some config fields
changed. All of them are built in one process and stepped in turn (forward, backward, AdamW) on a
fixed random batch, so a machine that speeds up or slows down during the run moves every variant
alike; the table gives each one's median step and its ratio to the first. ``bench`` measures the
shipped recipe; this script is for choosing a cheaper one before training it.

    PYTHONPATH=. python scripts/step_time.py --variant wrist48='{"wrist_size": 48}' \\
        --variant no_wrist='{"wrist": false}' [--batch 64] [--repeats 12]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

import numpy as np
import torch

from vla_demo.bench import training_step
from vla_demo.policy import LanguageConditionedPolicy
from vla_demo.recipes import DEFAULT_MODEL


def variant(text: str) -> tuple[str, dict[str, Any]]:
    """``name={"field": value, ...}`` -> (name, overrides)."""
    name, sep, overrides = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=JSON, got {text!r}")
    try:
        parsed = json.loads(overrides)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{name}: not JSON ({e})") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"{name}: expected a JSON object of model config fields")
    return name, parsed


def stepper(overrides: dict[str, Any], batch: int, seed: int = 0) -> tuple[Callable[[], None], int]:
    """One training step of the default model with ``overrides`` on a fixed batch, and its parameter count."""
    policy = LanguageConditionedPolicy.build("default", seed=seed, **{**DEFAULT_MODEL, **overrides})
    return training_step(policy, batch, torch.Generator().manual_seed(seed), goals=True), policy.num_parameters()


def measure(variants: dict[str, dict[str, Any]], batch: int, repeats: int) -> list[dict[str, Any]]:
    """Median step time of each variant (ms), interleaved; the first variant is the reference."""
    steps = {name: stepper(over, batch) for name, over in variants.items()}
    for step, _ in steps.values():  # warm-up: allocator, oneDNN kernels
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, (step, _) in steps.items():
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    ref = float(np.median(next(iter(times.values()))))
    return [{"variant": name, "overrides": variants[name], "median_ms": 1000 * float(np.median(ts)),
             "ratio": float(np.median(ts)) / ref, "parameters": steps[name][1]} for name, ts in times.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", type=variant, action="append", default=[], metavar="NAME=JSON",
                    help="model config fields to change on the default model (repeatable)")
    ap.add_argument("--batch", type=int, default=64, help="the default recipe's batch size")
    ap.add_argument("--repeats", type=int, default=12, help="timed steps per variant")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        ap.error("--batch and --repeats must be >= 1")
    variants = {"default": {}, **dict(args.variant)}
    try:
        rows = measure(variants, args.batch, args.repeats)
    except ValueError as e:  # a config the model refuses
        ap.error(str(e))
    print(f"batch {args.batch}, {args.repeats} steps each, {torch.get_num_threads()} threads")
    print("| variant | overrides | median step | ratio | parameters |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | `{json.dumps(r['overrides'])}` | {r['median_ms']:.0f} ms | {r['ratio']:.2f} | {r['parameters']:,} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
