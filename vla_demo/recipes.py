"""Named training recipes: the shipped default policy, and plain runs from the command line.

``python -m vla_demo train --preset default`` is the one documented command that produces
``assets/policies/default``: it collects the scripted demonstrations into the data root when they
are missing, trains, and writes the policy with a model card recording data, command and wall time.

``python -m vla_demo train --preset correction-loop --family F`` measures the closed correction
loop: a variant trained with only 10% of F's demonstrations, 10 episodes recorded under a scripted
corrective operator, a fine-tune on them plus a replay of the variant's own data, and F's success
before and after on the same 100 evaluation scenes.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from vla_demo.constants import FAMILIES

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_POLICY = ASSETS / "policies" / "default"
DEFAULT_EPISODES_PER_FAMILY = 400
# The demonstrations: DART-style white action noise. Excursions with the hand low (the expert's
# ``detour``, 0.15) were measured on 2026-12-01: stack 4% -> 24% and place 22% -> 30%, but push
# 66% -> 52% (training phrasings, seed 0); kept out of push's contact phases, stack fell back to 4% on
# the same stack demonstrations (retraining noise of that size). Not adopted (model card, "Demonstrations
# with detours").
# The wrist camera is recorded too (and seen by the model, below): on 2026-12-02 it took the training
# phrasings from pick 58 / push 66 / place 22 / stack 4 / reach 90% to 80 / 78 / 80 / 48 / 92%
# (the front camera alone resolves the object's depth poorly). A dataset of its own: the earlier
# front-only ``default-demos`` cannot train this model. ``-v2``: the stack family's training phrasings
# gained a destination-first template ("onto the {dest}, place the {obj}"), so older collections
# differ in their language and are not topped up into this one. ``-v3`` (2026-12-06): the held-out
# colour-shape combinations no longer stand in training scenes even as distractors
# (``tasks.scene_combos``); seen only as objects never to pick, they were ones the policy learnt to
# avoid. Training seed 1 on the same evaluation scenes: new combinations 65.6 -> 86.8% family mean
# (evaluation seed 1: 62.8 -> 86.0%), training phrasings 82.8 -> 90.8%, held-out phrasings 81.6 ->
# 83.6% (model card, "What changed (2026-12-06)").
DEFAULT_DEMOS = "default-demos-wrist-v3"
DEMO_NOISE = 0.3
DEMO_DETOUR = 0.0
DEMO_WRIST = True
# Share of demonstration scenes with an object of the target's colour in another shape (collect
# ``shape_rival``). 0 in the shipped data, where such a rival stands by chance in about a third of
# scenes and the first-frame target estimate finds the named object in 67% of them (99% without).
# 0.5 (2026-12-07, seed 1) found it in 91-92% on trained combinations and took held-out stack from
# 68% to 80%, but new combinations fell from 86.8% to 66.4% family mean: every rival is a trained
# combination, so it learnt the trained pairs, not shape (experiment log, "Demonstrations with a
# same-colour rival").
DEMO_SHAPE_RIVAL = 0.0
# No shape-only scenes either (``collect --shape-only``: targets named by shape alone, objects in
# unnamed colours too): 400 of them beside the 2,000 demonstrations (2026-12-07, seed 1) gave
# 85.6 / 82.0 / 69.6% (train / held-out phrasings / new combinations), and shape-only picks still
# grasped the wrong object in 15 of 50 (experiment log, "Shape-only scenes"). In the same section:
# ``keypoint_values="embedding"`` on these scenes, 86.4 / 82.4 / 72.4%, not adopted either. Nor
# keypoints that also score a colour-blind saturation map (``keypoint_chroma``, 2026-12-08, seed 1 from
# the shipped run's own start): 78.4 / 76.4 / 65.2%; seed 0, 82.0 / 78.4 / 70.8% against 81.2 / 80.0 /
# 76.0% (experiment log, "Keypoints that also score a colour-blind map").
# 12,000 steps, not 8,000 (2026-12-04, training seed 1, the same data and evaluation scenes): family
# means 81.2 / 77.6 / 54.8% -> 86.0 / 84.8 / 65.6% (train / held-out phrasings / held-out
# combinations), the two-candidate test 42 / 39 / 32 -> 48 / 46 / 41 of 50. The cost, measured end to
# end on 2026-12-05 (empty data root, idle 2-core machine): 9.2 min collecting + 45.8 min training + 1.7
# min starting up and loading = 56.7 min, inside the 60-minute limit by 3 minutes and far from the 30-minute goal. 16,000 steps
# (2026-12-04, seed 1) fitted the training phrasings better (family means 89.6 / 91.2% on evaluation
# seeds 0 / 1) but lost on held-out combinations (61.6 / 59.2%) and the two-candidate test on every
# split: not adopted (model card, "16,000 steps").
DEFAULT_STEPS = 12000
# 16 instruction-conditioned keypoints give the fusion sub-token object positions; the sim always
# has proprioception, so the state is hidden less often than in the generic preset (the webcam
# path still works without it). The goal head learns from the collector's goal-position labels
# where the named object is: without it the action loss alone left the policy descending in place
# (it never learned the lateral move toward the instructed object).
# Word-role supervision (``word_roles``) is not in it: on 2026-12-02 it took stack on training
# phrasings from 36% to 60% but held-out phrasings and combinations fell (place on new combinations
# 78% -> 40%): it fitted the training templates' word order (model card, "Word roles").
# A three-word causal window in the text encoder (``text_window``), not absolute positions and global
# attention: a noun's token then depends on the preposition before it ("onto the blue cube"), not on
# where it stands. Over two training seeds each (2026-12-03, 50 episodes per family) the family means
# rose from 65.8 / 64.4 / 51.0% (train / held-out phrasings / held-out combinations) to
# 77.8 / 72.6 / 58.6%, stack most (model card, "A windowed text encoder").
# Nor is the object head (``object_head``; its labels are in collections made since 2026-12-06, such
# as ``default-demos-wrist-v4``, the v3 episodes plus ``object_labels``): on 2026-12-06 (seed 1) it
# told same-colour objects apart better on trained colour-shape combinations (probe 59-67% -> 78-83%)
# but new combinations fell from 86.8% to 69.2% family mean (model card, "An object head"); learning
# its shapes from hue-rotated copies (``object_hue``, 2026-12-07, seed 1) fell to 78.0% (experiment
# log, "An object head that learns shapes from recoloured images"); from the copies and the plain images
# (``object_hue_plain``) gave the best phrasings yet (92.8 / 91.2%) but new combinations 81.2%; run
# again in two training processes (2026-12-07, sixth session) 89.2 / 86.8 / 66.8%, and 61.7-62.9 min
# end to end, over the 60-minute limit (experiment log, "Shapes from copies and plain images, run
# again in two processes"). Four object-head runs, none ahead on new combinations: not adopted.
DEFAULT_MODEL = {"keypoints": 16, "state_dropout": 0.15, "goal_head": True, "wrist": DEMO_WRIST, "text_window": 3}
# The demonstrations are one fixed dataset whatever the training seed (``--seed`` changes the
# initialisation and the batch order only, so seeds are compared on the same data).
DEMO_SEED = 0
# The shipped checkpoint's training seed: the better of seeds 0 and 1 on the evaluation scenes of
# seed 0, at 8,000 steps (family means 81.2 / 77.6 / 54.8% against 74.4 / 67.6 / 62.4%) and again
# at 12,000 (86.0 / 84.8 / 65.6% against 80.0 / 72.8 / 66.0%; model card, "Seed 0 at 12,000
# steps"). Seed-to-seed spread is up to 32 points on a family, and a rerun with the same seed whose
# first loss differed in the 7th digit (a refactor's rounding) ended 3-8 points of family mean lower
# (model card, "Averaging the weights"): part of seed 1's lead is the luck of one run. On the v3
# demonstrations (2026-12-06) seed 1 led again: 90.8 / 83.6 / 86.8% against 81.2 / 80.0 / 76.0%.
DEFAULT_SEED = 1
# The rest of the default run (the correction loop's variant trains the same way). The frame cache
# holds both cameras of all 2,000 demonstrations (about 3.3 GB at 96 px), so no frame is decoded twice.
# No weight averaging (``ema_decay`` 0): on 2026-12-05 averages with decays 0.999-0.9998, kept beside
# the raw weights of one seed-1 run, evaluated level with them or behind (family means 0.4 ahead to 2.4
# behind); the cosine schedule already ends at lr 1e-5 (model card, "Averaging the weights").
DEFAULT_TRAIN = dict(batch_size=64, lr=1e-3, warmup_steps=200, val_every=500, ckpt_every=1000, shift_px=2,
                     cache_budget_mb=6000, model_overrides=DEFAULT_MODEL)


FINETUNE_STEPS = 400
# 1e-4: on the variant's own replay, 400 steps at 3e-4 cost pick 10 points (40% -> 29%), at 1e-4 6
# (-> 34%); with the corrections both ended within noise of the start (38%, 36%; 2026-12-01).
FINETUNE_LR = 1e-4
# In a Shared-mode recording the frames the policy drove are labelled with the policy's own action
# (possibly wrong: that is why the operator took over): HG-DAgger learns from the operator's frames
# only. A dataset with no other frames (a Policy-mode recording) is drawn from uniformly.
OWN_ACTION_WEIGHT = 0.0
# A fine-tune replays a fixed subset of the original data, not all of it: 400 steps x 16 replayed
# samples touch ~6,400 frames, and drawing them from all 2,000 demonstrations decoded both cameras
# of nearly every episode (10-episode fine-tune 179 s on 2026-12-02, mostly decoding); 200 episodes
# (~6,000 frames, 10% of the default data, in the proportions the checkpoint saw) decode once.
FINETUNE_REPLAY_EPISODES = 200
CORRECTION_SHARE = 0.1
CORRECTION_EPISODES = 10


def data_root() -> Path:
    """``VLA_DEMO_DATA`` or ``./data``."""
    return Path(os.environ.get("VLA_DEMO_DATA", "data"))


def train_run(datasets, out=None, weights=None, preset="default", init_from=None, steps=None, batch_size=None,
              lr=None, seed=0, command="", wrist=False, ema_decay=None, processes=None) -> Path:
    from vla_demo.config import TrainConfig
    from vla_demo.train import train

    out = out or str(data_root() / "runs" / f"train-{time.strftime('%Y%m%d-%H%M%S')}")
    kw = {k: v for k, v in dict(steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema_decay, processes=processes).items()
          if v is not None}
    if steps is not None:
        kw["warmup_steps"] = min(100, steps // 10)  # short runs (tests, quick fine-tunes) warm up briefly
    if wrist:
        kw["model_overrides"] = {"wrist": True}
    cfg = TrainConfig(datasets=[str(d) for d in datasets], out=out, weights=weights, preset=preset,
                      init_from=init_from, seed=seed, command=command, **kw)
    return train(cfg)


def default_policy(command: str, steps: int | None = None, seed: int = DEFAULT_SEED, episodes_per_family: int = DEFAULT_EPISODES_PER_FAMILY,
                   out: Path = DEFAULT_POLICY) -> Path:
    """Collect (if needed) and train the shipped policy; returns its folder."""
    from vla_demo.config import TrainConfig
    from vla_demo.train import train

    t0 = time.time()
    demos = default_demos()
    want = episodes_per_family * len(FAMILIES)
    have = collect_demos(demos, want, DEMO_SEED)
    collect_s = time.time() - t0
    run = data_root() / "runs" / f"default-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = TrainConfig(datasets=[str(demos)], out=str(run), steps=steps or DEFAULT_STEPS, seed=seed, command=command,
                      **DEFAULT_TRAIN)
    path = train(cfg)
    card = (path / "README.md").read_text(encoding="utf-8")
    card += (f"\n## Recipe\n\n- demonstrations: {want} scripted episodes ({episodes_per_family} per family, "
             f"{_demos_recipe()}); this run collected {max(0, want - have)} of them in {collect_s / 60:.1f} min"
             + (f" (the other {have} were already in `{demos}`)" if have else "")
             + f"\n- wall time of this command (collection + training): {(time.time() - t0) / 60:.1f} min on {os.cpu_count()} CPU cores\n")
    (path / "README.md").write_text(card, encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(path, out)
    return out


def _demos_recipe() -> str:
    """How the default demonstrations are collected, for the model card."""
    rival = f", a same-colour rival in {DEMO_SHAPE_RIVAL:.0%} of scenes" if DEMO_SHAPE_RIVAL else ""
    cameras = "front and wrist" if DEMO_WRIST else "front only"
    return f"action noise {DEMO_NOISE}, detour probability {DEMO_DETOUR}{rival}, cameras: {cameras}"


def default_demos() -> Path:
    """The default recipe's demonstrations in the data root (also the app's fine-tune replay)."""
    return data_root() / "datasets" / DEFAULT_DEMOS


def collect_demos(demos: Path, want: int, seed: int = 0) -> int:
    """Top ``demos`` up to ``want`` successful scripted episodes; returns how many it held before.

    The collector drops failed episodes, so one call can save fewer than asked. Each further round
    draws its scenes from a seed namespace of its own (keyed by the count reached), so a top-up
    never repeats a scene an earlier round already tried, and the result is the same on every machine.
    """
    from vla_demo.data import collect as col

    have = now = _num_episodes(demos)
    while now < want:
        round_seed = seed if now == 0 else seed + 1 + now
        saved = col.collect(demos, want - now, seed=round_seed, noise=DEMO_NOISE, detour=DEMO_DETOUR, wrist=DEMO_WRIST,
                            shape_rival=DEMO_SHAPE_RIVAL)["saved"]
        if saved == 0:
            raise RuntimeError(f"the scripted expert failed every episode of a collection round into {demos}")
        now = _num_episodes(demos)
    return have


def _num_episodes(dataset: Path) -> int:
    from vla_demo.data.reader import DatasetReader

    return DatasetReader(dataset).num_episodes if (dataset / "meta" / "info.json").exists() else 0


def finetune_config(init_from: str | Path | None, new: list[str | Path], replay: list[str | Path], out: str | Path,
                    steps: int = FINETUNE_STEPS, replay_share: float = 0.5, replay_fractions: dict[str, float] | None = None,
                    lr: float = FINETUNE_LR, batch_size: int = 32, seed: int = 0, command: str = "",
                    replay_episodes: int | None = FINETUNE_REPLAY_EPISODES):
    """The TrainConfig of a fine-tune (this recipe and the app's fine-tune jobs share it).

    Args:
        init_from: the checkpoint to start from (its chunk size is kept); None trains from scratch.
        new: datasets with the new episodes; frames the policy drove with its own action as the
            label are not drawn (``OWN_ACTION_WEIGHT``), intervention frames are up-weighted.
        replay: the data the checkpoint was trained on, ``replay_share`` of every batch (empty: none).
        replay_fractions: family shares the original run applied to ``replay`` (so the replay is
            the same data the checkpoint saw).
        replay_episodes: at most this many episodes of each replay dataset (None: all of them).
    """
    from vla_demo.config import TrainConfig

    if not new:
        raise ValueError("a fine-tune needs at least one dataset of new episodes")
    share = replay_share if replay else 0.0
    weights = [(1 - share) / len(new)] * len(new) + [share / max(len(replay), 1)] * len(replay)
    chunk = 8
    if init_from is not None:
        from vla_demo.model.checkpoint import read_config

        chunk = int(read_config(Path(init_from))["model"]["chunk_size"])
    return TrainConfig(datasets=[str(d) for d in [*new, *replay]], weights=weights, out=str(out),
                       init_from=None if init_from is None else str(init_from), chunk_size=chunk, steps=steps,
                       batch_size=batch_size, lr=lr, warmup_steps=max(1, min(100, steps // 10)), seed=seed,
                       own_action_weight=OWN_ACTION_WEIGHT, ckpt_every=max(1, min(500, steps // 4)),
                       val_every=max(1, min(250, steps // 4)), command=command,
                       family_fractions=[None] * len(new) + [replay_fractions or None] * len(replay),
                       max_episodes=[None] * len(new) + [replay_episodes] * len(replay))


def fine_tune(init_from: str | Path, new: list[str | Path], replay: list[str | Path], out: str | Path,
              steps: int = FINETUNE_STEPS, replay_fractions: dict[str, float] | None = None, seed: int = 0,
              command: str = "", progress=None, stop=None) -> Path:
    """Fine-tune a checkpoint on new episodes, half of every batch a replay of earlier data
    (:func:`finetune_config`); returns the new policy folder."""
    from vla_demo.train import train

    cfg = finetune_config(init_from, new, replay, out, steps=steps, replay_fractions=replay_fractions, seed=seed,
                          command=command)
    return train(cfg, progress=progress, stop=stop)


def correction_loop(family: str, command: str, steps: int | None = None, seed: int = 0,
                    episodes: int = 100, reuse: str | Path | None = None, finetune_steps: int = FINETUNE_STEPS,
                    handback: int = 0, new_episodes: str | Path | None = None) -> Path:
    """Run the correction-loop experiment for ``family``; returns the run folder with ``report.json``
    and ``report.md`` (before/after success with 95% intervals and the difference's interval).

    ``reuse``: an earlier run folder of this experiment whose variant is taken as it is (the
    expensive half: 30+ minutes of training); the corrections are recorded again (a minute), then
    the fine-tune and both evaluations run, and the report replaces the earlier one (which is kept
    as ``report-<time>.json``). For changing the correction or fine-tune recipe without retraining.
    ``handback``: the operator gives control back after driving that many steps (0: it drives to
    the end of the episode; :class:`~vla_demo.correction.CorrectorConfig`).
    ``new_episodes``: fine-tune on this dataset in place of recording corrections (a control: clean
    demonstrations, or episodes an operator recorded otherwise), everything else the same.
    """
    from vla_demo.config import TrainConfig
    from vla_demo.correction import CorrectorConfig, record_corrections
    from vla_demo.evaluate import difference_interval, evaluate
    from vla_demo.train import train

    corrector = CorrectorConfig(handback=handback)  # refuse bad settings before 30 minutes of training
    if finetune_steps < 1:
        raise ValueError(f"finetune_steps must be >= 1, got {finetune_steps}")
    given = None if new_episodes is None else episodes_summary(new_episodes)  # a control's episodes, counted
    demos = default_demos()
    shares = {family: CORRECTION_SHARE}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if reuse is None:
        collect_demos(demos, DEFAULT_EPISODES_PER_FAMILY * len(FAMILIES), DEMO_SEED)  # the default run's, when missing
        run = data_root() / "runs" / f"correction-{family}-{stamp}"
        variant = train(TrainConfig(datasets=[str(demos)], out=str(run / "variant"), steps=steps or DEFAULT_STEPS, seed=seed,
                                    command=command, family_fractions=shares, **DEFAULT_TRAIN))
    else:
        if not (demos / "meta" / "info.json").exists():
            raise FileNotFoundError(f"{demos} is missing: the reused variant's demonstrations are also the fine-tune's replay")
        run, variant = _reused_run(Path(reuse), family)
    if given is None:
        corrections = data_root() / "datasets" / f"corrections-{family}-{stamp}"
        recorded = record_corrections(variant, family, CORRECTION_EPISODES, corrections, seed=seed, config=corrector)
    else:
        corrections, recorded = Path(new_episodes), given
    eval_kw = dict(split="train", episodes_per_family=episodes, seed=seed + 1, families=(family,), baselines=False,
                   two_candidates=False)
    before = evaluate(str(variant), **eval_kw)
    t0 = time.time()
    tuned = fine_tune(variant, [corrections], [demos], run / f"finetune-{stamp}",
                      steps=finetune_steps, replay_fractions=shares, seed=seed, command=command)
    finetune_s = time.time() - t0
    after = evaluate(str(tuned), **eval_kw)
    report = _loop_report(family, before, after, recorded, finetune_s, difference_interval)
    report["recipe"] = {"finetune_steps": finetune_steps, "finetune_lr": FINETUNE_LR, "own_action_weight": OWN_ACTION_WEIGHT,
                        "handback": handback if given is None else None,
                        "operator_follow_m": corrector.follow if given is None else None,
                        "new_episodes": "recorded by the scripted operator" if given is None else "given",
                        "variant": str(variant), "corrections": str(corrections), "finetune": str(tuned), "command": command}
    from vla_demo.data import format as fmt

    if (run / "report.json").exists():
        (run / "report.json").rename(run / f"report-{time.strftime('%Y%m%d-%H%M%S')}.json")
    fmt.write_json(run / "report.json", report)
    (run / "report.md").write_text(report["markdown"], encoding="utf-8")
    return run


def episodes_summary(dataset: str | Path) -> dict[str, Any]:
    """What a correction recording's summary says (saved, successes, intervention frames, frames),
    counted from a dataset on disk; raises ValueError when it is not a readable dataset with episodes."""
    import numpy as np

    from vla_demo.constants import INTERVENTION
    from vla_demo.data.reader import DatasetReader

    dataset = Path(dataset)
    if not (dataset / "meta" / "info.json").exists():
        raise ValueError(f"{dataset} is not a LeRobot dataset (no meta/info.json)")
    reader = DatasetReader(dataset)
    if reader.num_episodes == 0:
        raise ValueError(f"{dataset} holds no episodes")
    rows = [reader.episode(e) for e in range(reader.num_episodes)]
    flags = [reader.episode_columns(e).get(INTERVENTION) for e in range(reader.num_episodes)]
    return {"saved": len(rows), "successes": sum(bool(r.get("success")) for r in rows),
            "intervention_frames": int(sum(np.count_nonzero(f) for f in flags if f is not None)),
            "frames": int(sum(r["length"] for r in rows)), "dataset": str(dataset), "source": dataset.name}


def _reused_run(run: Path, family: str) -> tuple[Path, Path]:
    """(run, variant checkpoint) of an earlier correction-loop run of ``family``."""
    if not run.name.startswith(f"correction-{family}-"):
        raise ValueError(f"{run} is not a correction-loop run of {family!r} (expected a folder named correction-{family}-<time>)")
    variant = run / "variant" / "policy"
    if not (variant / "config.json").exists():
        raise FileNotFoundError(f"the variant checkpoint of {run} is missing: {variant}")
    return run, variant


def _loop_report(family: str, before: dict, after: dict, recorded: dict, finetune_s: float, diff_ci) -> dict[str, Any]:
    b, a = before["families"][family], after["families"][family]
    lo, hi = diff_ci(b["successes"], b["episodes"], a["successes"], a["episodes"])
    pct = lambda r: f"{100 * r['success_rate']:.0f}% [{100 * r['ci95'][0]:.0f}, {100 * r['ci95'][1]:.0f}]"  # noqa: E731
    points = round(100 * (a["success_rate"] - b["success_rate"]))
    share = f"{recorded['intervention_frames']} of {recorded['frames']} frames"
    if "source" in recorded:  # a control: episodes given to the loop, not recorded by it
        what, frames = f"episodes of `{recorded['source']}`", f"New episodes: {share} flagged `intervention`"
    else:
        what, frames = "corrected episodes", f"Corrections: {share} driven by the scripted operator"
    md = (f"| {family} ({CORRECTION_SHARE:.0%} of its demonstrations) | episodes | success [95% CI] |\n|---|---|---|\n"
          f"| before corrections | {b['episodes']} | {pct(b)} |\n| after {recorded['saved']} {what} | {a['episodes']} | {pct(a)} |\n\n"
          f"Difference: {points:+d} point{'' if abs(points) == 1 else 's'}, 95% CI [{100 * lo:+.0f}, {100 * hi:+.0f}] "
          f"(Newcombe). {frames}; fine-tune {finetune_s:.0f} s.\n")
    return {"family": family, "share": CORRECTION_SHARE, "before": b, "after": a, "recorded": recorded,
            "difference": a["success_rate"] - b["success_rate"], "difference_ci95": [lo, hi],
            "finetune_s": round(finetune_s, 1), "markdown": md}
