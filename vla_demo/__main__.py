"""Command line: ``python -m vla_demo <verb> ...``.

Verbs so far: ``sim`` (render a scripted episode), ``collect`` (scripted demonstrations into a
LeRobot dataset), ``dataset`` (info, check and edit a dataset), ``train`` (train or fine-tune a
policy), ``eval`` (success rates with 95% intervals), ``serve`` (a policy over HTTP), ``loadtest``
(simulated operators against a running app), ``bench`` (the benchmark table). Each verb's options: ``python -m vla_demo <verb> --help``.
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


def _add_collect(sub) -> None:
    p = sub.add_parser("collect", help="record scripted-expert demonstrations into a LeRobot v3 dataset")
    p.add_argument("--episodes", type=int, required=True)
    p.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=None,
                   help="default: all (all but stack with --shape-only)")
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.3, help="executed-action noise, fraction of the limits")
    p.add_argument("--detour", type=float, default=0.0,
                   help="per-step probability of a deliberate excursion with the hand low (the label stays the expert's recovery)")
    p.add_argument("--shape-rival", type=float, default=0.0,
                   help="share of scenes that also hold an object of the target's colour in another shape")
    p.add_argument("--shape-only", action="store_true",
                   help="targets named by their shape alone, in scenes with unnamed colours too (not for stack)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: up to 2 cores)")
    p.add_argument("--size", type=int, default=128, help="camera image height and width")
    p.add_argument("--wrist", action="store_true", help="also record the wrist camera")
    p.add_argument("--keep-failed", action="store_true", help="keep failed episodes (labelled success=false)")


def _add_dataset(sub) -> None:
    p = sub.add_parser("dataset", help="inspect, check and edit a LeRobot v3 dataset")
    ops = p.add_subparsers(dest="op", required=True)
    for name, text in (("info", "counts, tasks and episodes"), ("check", "verify every format invariant")):
        o = ops.add_parser(name, help=text)
        o.add_argument("path")
    o = ops.add_parser("delete-episode", help="move an episode to the trash (undo with restore-episode)")
    o.add_argument("path")
    o.add_argument("episode", type=int)
    o = ops.add_parser("restore-episode", help="append a deleted episode back (no id: list the trash)")
    o.add_argument("path")
    o.add_argument("trash_id", nargs="?")
    o = ops.add_parser("trim", help="keep frames [start, end) of an episode")
    o.add_argument("path")
    o.add_argument("episode", type=int)
    o.add_argument("start", type=int)
    o.add_argument("end", type=int)
    o = ops.add_parser("relabel", help="change an episode's instruction and/or success label")
    o.add_argument("path")
    o.add_argument("episode", type=int)
    o.add_argument("--task", default=None, help="the new instruction for every frame")
    o.add_argument("--success", choices=("true", "false", "none"), default=None)
    o = ops.add_parser("export", help="zip the dataset for sharing")
    o.add_argument("path")
    o.add_argument("--out", default=None, help="zip file (default: <path>.zip)")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a policy (torchrun-ready)")
    p.add_argument("--preset", default=None, choices=("default", "correction-loop"),
                   help="default: the shipped policy's recipe (collect its data if missing, train, write "
                        "assets/policies/default); correction-loop: the correction-loop experiment on --family")
    p.add_argument("--family", choices=FAMILIES, default="place", help="the family the correction-loop starves")
    p.add_argument("--reuse-run", default=None, help="correction-loop: take the variant of this earlier run folder as it "
                                                      "is; record the corrections, fine-tune and evaluate again")
    p.add_argument("--new-episodes", default=None, metavar="DATASET",
                   help="correction-loop: fine-tune on this dataset in place of recording corrections (a control)")
    p.add_argument("--finetune-steps", type=int, default=None, help="correction-loop: fine-tune steps "
                                                                     "(default: the app's, 400)")
    p.add_argument("--handback", type=int, default=0, help="correction-loop: the scripted operator gives control back "
                                                            "after driving this many steps (0: it drives to the end)")
    p.add_argument("--data", nargs="+", default=None, help="LeRobot dataset folders to mix")
    p.add_argument("--weights", nargs="+", type=float, default=None, help="sampling weight per dataset")
    p.add_argument("--out", default=None, help="run folder (default: <data root>/runs/train-<time>)")
    p.add_argument("--model", default="default", choices=("default", "reference"), help="model preset")
    p.add_argument("--wrist", action="store_true",
                   help="the model also sees the wrist camera (every dataset must have it: collect --wrist)")
    p.add_argument("--init-from", default=None, help="fine-tune from this checkpoint folder")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--processes", type=int, default=None,
                   help="train in N local DDP processes, each with its share of the cores (default 1; not with "
                        "--preset, whose recipe fixes it); --batch-size is split over them")
    p.add_argument("--ema-decay", type=float, default=None,
                   help="validate and ship an exponential moving average of the weights with this decay (e.g. 0.999)")
    p.add_argument("--seed", type=int, default=None,
                   help="training seed (default: the shipped policy's for --preset default, else 0); "
                        "the default demonstrations are always collected with the same seed")


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
    p.add_argument("--card", action="store_true", help="append the table to the policy folder's model card (README.md)")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="run the benchmarks (medians and ratios to a reference)")
    p.add_argument("--only", default=None, help="only rows whose name starts with this prefix, e.g. sim.")
    p.add_argument("--json", default=None, help="write the rows here")


def _add_serve(sub) -> None:
    from vla_demo import serve

    serve.add_arguments(sub.add_parser("serve", help="serve a policy over HTTP (OpenVLA-compatible POST /act)"))


def _add_loadtest(sub) -> None:
    from vla_demo import loadtest

    loadtest.add_arguments(sub.add_parser("loadtest", help="drive N simulated operators against a running app"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vla_demo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    for add in (_add_sim, _add_collect, _add_dataset, _add_train, _add_eval, _add_serve, _add_loadtest, _add_bench):
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


def cmd_collect(args) -> int:
    from vla_demo.data.collect import collect
    from vla_demo.sim.tasks import SHAPE_ONLY_FAMILIES

    families = tuple(args.families or (SHAPE_ONLY_FAMILIES if args.shape_only else FAMILIES))
    summary = collect(args.out, args.episodes, families, args.split, args.seed, args.noise,
                      args.workers, (args.size, args.size), args.wrist, args.keep_failed,
                      detour=args.detour, shape_rival=args.shape_rival, shape_only=args.shape_only)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_dataset(args) -> int:
    from vla_demo.data import edit
    from vla_demo.data.reader import DatasetReader
    from vla_demo.data.writer import DatasetWriter

    if args.op == "info":
        r = DatasetReader(args.path)
        print(json.dumps(dataset_summary(r), indent=2))
        return 0
    if args.op == "check":
        problems = edit.check(args.path)
        for p in problems:
            print(f"problem: {p}")
        print("ok: every invariant holds" if not problems else f"{len(problems)} problem(s)")
        return 0 if not problems else 1
    if args.op == "export":
        out = args.out or str(Path(args.path).resolve()) + ".zip"
        print(f"wrote {edit.export_zip(args.path, out)}")
        return 0
    if args.op == "restore-episode" and args.trash_id is None:
        print("\n".join(edit.trashed_episodes(args.path)) or "the trash is empty")
        return 0
    writer = DatasetWriter.open(args.path)
    try:
        if args.op == "delete-episode":
            print(f"moved episode {args.episode} to the trash as {edit.delete_episode(writer, args.episode)}")
        elif args.op == "restore-episode":
            print(f"restored as episode {edit.restore_episode(writer, args.trash_id)}")
        elif args.op == "trim":
            edit.trim_episode(writer, args.episode, args.start, args.end)
            print(f"episode {args.episode} now holds frames [{args.start}, {args.end})")
        elif args.op == "relabel":
            success = {"true": True, "false": False, "none": None, None: "keep"}[args.success]
            edit.relabel_episode(writer, args.episode, args.task, success)
            print(f"relabelled episode {args.episode}")
    finally:
        writer.close()
    return 0


def dataset_summary(r) -> dict:
    extras = [{k: e.get(k) for k in ("episode_index", "length", "success", "source", "operator", "tasks")}
              for e in r.episodes]
    return {"path": str(r.root), "fps": r.fps, "robot_type": r.info.get("robot_type"),
            "episodes": r.num_episodes, "frames": r.num_frames, "tasks": len(r.tasks),
            "cameras": r.video_keys, "codec": {k: r.features[k].get("info", {}).get("video.codec") for k in r.video_keys},
            "episode_list": extras[:50]}


def _command(args) -> str:
    """The command line as typed, for model cards (``main([...])`` from Python records its list)."""
    import shlex

    return "python -m vla_demo " + shlex.join(args.argv)


def cmd_train(args) -> int:
    from vla_demo import recipes

    command = _command(args)
    seed = args.seed if args.seed is not None else recipes.DEFAULT_SEED if args.preset == "default" else 0
    if args.preset and args.processes is not None:
        raise ValueError(f"--processes is for plain runs: --preset {args.preset} trains as its recipe says")
    if args.preset == "default":
        path = recipes.default_policy(command=command, steps=args.steps, seed=seed)
    elif args.preset == "correction-loop":
        path = recipes.correction_loop(args.family, command=command, steps=args.steps, seed=seed, reuse=args.reuse_run,
                                       handback=args.handback, new_episodes=args.new_episodes,
                                       finetune_steps=recipes.FINETUNE_STEPS if args.finetune_steps is None else args.finetune_steps)
        print((path / "report.md").read_text(encoding="utf-8"))
    else:
        if not args.data:
            raise ValueError("give --data DATASET [DATASET ...] (or --preset default)")
        path = recipes.train_run(args.data, out=args.out, weights=args.weights, preset=args.model, init_from=args.init_from,
                                 steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=seed, command=command,
                                 wrist=args.wrist, ema_decay=args.ema_decay, processes=args.processes)
    print(f"wrote {path}")
    return 0


def cmd_eval(args) -> int:
    import time

    from vla_demo.evaluate import append_to_card, evaluate

    if args.episodes_per_family < 1:
        raise ValueError("--episodes-per-family must be at least 1")
    if args.card and not Path(args.policy, "README.md").is_file():
        raise ValueError(f"--card needs a policy folder with a README.md model card, got {args.policy!r}")
    clips = args.clips or (str(Path(args.json).with_suffix("")) + "_clips" if args.json else None)
    t0 = time.time()
    report = evaluate(
        args.policy, split=args.split, episodes_per_family=args.episodes_per_family, seed=args.seed,
        families=tuple(args.families), workers=args.workers, clips_dir=clips, baselines=not args.no_baselines,
    )
    print(report["table_markdown"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.card:
        append_to_card(Path(args.policy), report, _command(args), time.time() - t0)
        print(f"added the table to {Path(args.policy, 'README.md')}")
    return 0


def cmd_bench(args) -> int:
    from vla_demo import bench

    bench.main(args.only, args.json)
    return 0


def cmd_loadtest(args) -> int:
    from vla_demo import loadtest

    return loadtest.run(args)


def cmd_serve(args) -> int:
    from vla_demo import serve

    return serve.run(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        verbs = {"sim": cmd_sim, "collect": cmd_collect, "dataset": cmd_dataset, "train": cmd_train, "eval": cmd_eval,
                 "serve": cmd_serve, "loadtest": cmd_loadtest, "bench": cmd_bench}
        return verbs[args.verb](args)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
