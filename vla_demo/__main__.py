"""Command line: ``python -m vla_demo <verb> ...``.

Verbs so far: ``sim`` (render a scripted episode), ``eval`` (success rates with 95% intervals),
``bench`` (the benchmark table). Each verb's options: ``python -m vla_demo <verb> --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vla_demo.constants import FAMILIES, SPLITS


def _add_sim(sub) -> None:
    p = sub.add_parser("sim", help="render a scripted-expert episode to an .mp4 or a .png strip")
    p.add_argument("--family", choices=FAMILIES, default="pick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--instruction", default=None, help="type your own instruction instead of a sampled one")
    p.add_argument("--n-objects", type=int, default=None, choices=range(2, 6), metavar="2..5")
    p.add_argument("--size", type=int, default=256, help="image height and width in pixels")
    p.add_argument("--visuals", choices=("simple", "full"), default="full", help="robot meshes (full = detailed)")
    p.add_argument("--wrist", action="store_true", help="put the wrist camera beside the front camera")
    p.add_argument("--substeps", type=int, default=2, help="extra frames per control step in videos")
    p.add_argument("--noise", type=float, default=0.0, help="expert action noise (fraction of the limits)")
    p.add_argument("--out", default="episode.mp4", help="output .mp4 (video) or .png (strip of key frames)")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a policy per task family")
    p.add_argument("--policy", required=True, help="checkpoint folder, policy-server URL or 'expert'")
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--episodes-per-family", type=int, default=50)
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: up to 2 cores)")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--clips", default=None, help="folder for failure clips (default: beside --json)")
    p.add_argument("--no-baselines", action="store_true", help="skip the expert and language-blind runs")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="run the benchmarks (medians and ratios to a reference)")
    p.add_argument("--only", default=None, help="only rows whose name starts with this prefix, e.g. sim.")
    p.add_argument("--json", default=None, help="write the rows here")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vla_demo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    for add in (_add_sim, _add_eval, _add_bench):
        add(sub)
    return parser


def cmd_sim(args) -> int:
    from vla_demo.render import render_episode

    path, summary = render_episode(
        family=args.family, seed=args.seed, split=args.split, instruction=args.instruction,
        n_objects=args.n_objects, size=args.size, visuals=args.visuals, wrist=args.wrist,
        substeps=args.substeps, noise=args.noise, out=args.out,
    )
    print(f"{summary}\nwrote {path}")
    return 0


def cmd_eval(args) -> int:
    from vla_demo.evaluate import evaluate

    if args.episodes_per_family < 1:
        raise ValueError("--episodes-per-family must be at least 1")
    clips = args.clips or (str(Path(args.json).with_suffix("")) + "_clips" if args.json else None)
    report = evaluate(
        args.policy, split=args.split, episodes_per_family=args.episodes_per_family, seed=args.seed,
        families=tuple(args.families), workers=args.workers, clips_dir=clips, baselines=not args.no_baselines,
    )
    print(report["table_markdown"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def cmd_bench(args) -> int:
    from vla_demo import bench

    bench.main(args.only, args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"sim": cmd_sim, "eval": cmd_eval, "bench": cmd_bench}[args.verb](args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
