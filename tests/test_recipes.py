"""The fine-tune recipe (shared by the correction loop and the app's jobs) and the correction loop's reuse path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vla_demo import recipes
from vla_demo.constants import FAMILIES
from vla_demo.correction import CorrectorConfig


def test_a_fine_tune_mixes_its_replay_keeps_the_parent_chunk_and_learns_from_interventions(tiny_policy_dir, tmp_path):
    cfg = recipes.finetune_config(tiny_policy_dir, ["a", "b"], ["old"], tmp_path / "run", steps=40, replay_share=0.3,
                                  replay_fractions={"pick": 0.1})
    assert cfg.datasets == ["a", "b", "old"] and cfg.weights == pytest.approx([0.35, 0.35, 0.3])
    assert cfg.family_fractions == [None, None, {"pick": 0.1}]
    assert cfg.max_episodes == [None, None, recipes.FINETUNE_REPLAY_EPISODES]  # all the new episodes, a bounded replay
    parent = json.loads((tiny_policy_dir / "config.json").read_text())["model"]["chunk_size"]
    assert cfg.chunk_size == parent and cfg.init_from == str(tiny_policy_dir)
    assert cfg.own_action_weight == recipes.OWN_ACTION_WEIGHT == 0.0 and cfg.lr == recipes.FINETUNE_LR
    assert cfg.warmup_steps == 4 and cfg.ckpt_every == 10
    alone = recipes.finetune_config(None, ["a"], [], tmp_path / "run2")
    assert alone.weights == [1.0] and alone.init_from is None
    with pytest.raises(ValueError, match="at least one dataset"):
        recipes.finetune_config(tiny_policy_dir, [], ["old"], tmp_path / "run3")


def test_the_correction_loop_can_redo_its_corrections_and_fine_tune_on_an_earlier_runs_variant(tiny_policy_dir, tmp_path,
                                                                                                monkeypatch):
    import shutil

    from vla_demo.data.collect import collect
    from vla_demo.data.reader import DatasetReader

    monkeypatch.setenv("VLA_DEMO_DATA", str(tmp_path))
    collect(tmp_path / "datasets" / recipes.DEFAULT_DEMOS, episodes=2, families=("reach",), progress=False, workers=1,
            wrist=recipes.DEMO_WRIST)
    run = tmp_path / "runs" / "correction-reach-20260101-000000"
    shutil.copytree(tiny_policy_dir, run / "variant" / "policy")
    (run / "report.json").write_text('{"earlier": true}')

    out = recipes.correction_loop("reach", command="test", episodes=2, reuse=run, finetune_steps=2, handback=4)
    report = json.loads((out / "report.json").read_text())
    assert out == run and report["before"]["episodes"] == report["after"]["episodes"] == 2
    assert report["recipe"]["variant"] == str(run / "variant" / "policy")
    corrections = DatasetReader(report["recipe"]["corrections"])
    assert report["recorded"]["saved"] == corrections.num_episodes == recipes.CORRECTION_EPISODES
    flags = [corrections.episode_columns(e)["intervention"] for e in range(corrections.num_episodes)]
    assert report["recipe"]["operator_follow_m"] == CorrectorConfig().follow  # the operator is recorded with the run
    assert report["recipe"]["handback"] == 4 and any((f[:-1] & ~f[1:]).any() for f in flags)  # control was given back
    assert Path(report["recipe"]["finetune"]).is_dir() and Path(report["recipe"]["finetune"]).parent.parent == run
    assert [json.loads(p.read_text()) for p in run.glob("report-*.json")] == [{"earlier": True}]  # kept, not overwritten
    assert "Difference" in (run / "report.md").read_text()
    with pytest.raises(ValueError, match="not a correction-loop run of 'pick'"):
        recipes.correction_loop("pick", command="test", reuse=run)

    # A control: the same variant fine-tuned on given episodes (here clean demonstrations), nothing recorded.
    clean = tmp_path / "datasets" / "clean-reach"
    collect(clean, episodes=3, families=("reach",), progress=False, workers=1, wrist=recipes.DEMO_WRIST, seed=5)
    datasets = set((tmp_path / "datasets").iterdir())
    out = recipes.correction_loop("reach", command="test", episodes=2, reuse=run, finetune_steps=3, new_episodes=clean)
    control = json.loads((out / "report.json").read_text())
    lengths = [DatasetReader(clean).episode(e)["length"] for e in range(3)]
    assert control["recorded"] == {"saved": 3, "successes": 3, "intervention_frames": 0, "frames": sum(lengths),
                                   "dataset": str(clean), "source": "clean-reach"}
    assert set((tmp_path / "datasets").iterdir()) == datasets  # no corrections were recorded
    assert control["recipe"]["new_episodes"] == "given" and control["recipe"]["corrections"] == str(clean)
    assert control["recipe"]["finetune_steps"] == 3 and control["recipe"]["handback"] is None
    assert "after 3 episodes of `clean-reach`" in control["markdown"] and "0 of" in control["markdown"]
    assert len(list(run.glob("report-*.json"))) == 2  # the corrections' report was kept
    with pytest.raises(ValueError, match="not a LeRobot dataset"):  # refused before anything runs
        recipes.correction_loop("reach", command="test", reuse=run, new_episodes=tmp_path / "nothing")
    with pytest.raises(ValueError, match="finetune_steps"):
        recipes.correction_loop("reach", command="test", reuse=run, finetune_steps=0)


class Trained(Exception):
    """Raised in place of training: carries the TrainConfig a recipe would have trained."""


@pytest.fixture
def stop_at_training(monkeypatch):
    def stop(cfg):
        raise Trained(cfg)

    monkeypatch.setattr("vla_demo.train.train", stop)


def test_a_fresh_correction_loop_collects_the_default_demonstrations_it_trains_its_variant_on(monkeypatch, tmp_path,
                                                                                              stop_at_training):
    """On a fresh machine the experiment must not need the 30-minute default run first."""
    monkeypatch.setenv("VLA_DEMO_DATA", str(tmp_path))
    collected = []
    monkeypatch.setattr(recipes, "collect_demos", lambda demos, want, seed=0: collected.append((demos, want, seed)) or 0)
    with pytest.raises(Trained) as stopped:
        recipes.correction_loop("push", command="test", seed=3)
    demos = tmp_path / "datasets" / recipes.DEFAULT_DEMOS
    assert collected == [(demos, recipes.DEFAULT_EPISODES_PER_FAMILY * len(FAMILIES), recipes.DEMO_SEED)]  # one dataset
    cfg = stopped.value.args[0]
    assert cfg.datasets == [str(demos)] and cfg.seed == 3
    assert cfg.family_fractions == {"push": recipes.CORRECTION_SHARE}
    with pytest.raises(ValueError, match="handback"):  # refused before any collection or training
        recipes.correction_loop("push", command="test", handback=-1)
    assert len(collected) == 1
    with pytest.raises(FileNotFoundError, match="replay"):  # reusing a variant needs its demonstrations as they were
        recipes.correction_loop("push", command="test", reuse=tmp_path / "runs" / "correction-push-1")


def test_topping_up_the_demonstrations_never_repeats_a_scene(monkeypatch, tmp_path):
    """The collector drops failed episodes; each top-up round must draw scenes no earlier round tried."""
    from vla_demo.data import collect as col

    tried: list[int] = []
    held = {"n": 0}

    def fake_collect(out, episodes, seed, noise, detour, wrist, shape_rival):
        assert (noise, detour, wrist, shape_rival) == (recipes.DEMO_NOISE, recipes.DEMO_DETOUR, recipes.DEMO_WRIST,
                                                       recipes.DEMO_SHAPE_RIVAL)
        seeds = [col.collection_seed(seed, held["n"] + i) for i in range(episodes)]  # as collect() numbers them
        assert not set(seeds) & set(tried), "a top-up repeated a scene"
        tried.extend(seeds)
        saved = (episodes + 1) // 2  # half of the episodes fail
        held["n"] += saved
        return {"saved": saved}

    monkeypatch.setattr(col, "collect", fake_collect)
    monkeypatch.setattr(recipes, "_num_episodes", lambda _: held["n"])
    assert recipes.collect_demos(tmp_path, 20, seed=0) == 0
    assert held["n"] == 20 and len(tried) > 20
    first_round = [col.collection_seed(0, i) for i in range(20)]
    assert tried[:20] == first_round  # the first round is the plain seed's scenes, as before top-ups existed
    assert recipes.collect_demos(tmp_path, 20, seed=0) == 20  # already full: nothing collected
    monkeypatch.setattr(col, "collect", lambda *a, **k: {"saved": 0})
    with pytest.raises(RuntimeError, match="failed every episode"):
        recipes.collect_demos(tmp_path, 25, seed=0)


def test_the_default_recipe_records_and_sees_the_wrist_camera():
    """Measured 2026-12-02: the hand's view took place 22% -> 64% and stack 4% -> 50% (training phrasings)."""
    assert recipes.DEMO_WRIST and recipes.DEFAULT_MODEL["wrist"] and recipes.DEFAULT_TRAIN["model_overrides"]["wrist"]
    assert recipes.DEFAULT_DEMOS != "default-demos"  # the front-only demonstrations cannot train this model


@pytest.mark.parametrize("argv, seed", [([], recipes.DEFAULT_SEED), (["--seed", "5"], 5)])
def test_the_default_command_trains_the_shipped_seed_on_demonstrations_that_no_seed_changes(monkeypatch, tmp_path,
                                                                                              stop_at_training, argv, seed):
    """``train --preset default`` must reproduce the shipped checkpoint: its training seed unless told
    otherwise, and the same demonstrations (collected with ``DEMO_SEED``) whatever ``--seed`` says."""
    from vla_demo.__main__ import main

    monkeypatch.setenv("VLA_DEMO_DATA", str(tmp_path))
    collected = []
    monkeypatch.setattr(recipes, "collect_demos", lambda demos, want, seed=0: collected.append(seed) or want)
    with pytest.raises(Trained) as stopped:
        main(["train", "--preset", "default", *argv])
    assert collected == [recipes.DEMO_SEED]
    cfg = stopped.value.args[0]
    assert cfg.seed == seed and cfg.model_overrides == recipes.DEFAULT_MODEL
    assert cfg.command == " ".join(["python -m vla_demo train --preset default", *argv])  # the card's command, options included


def test_the_correction_loop_command_passes_its_options_on(monkeypatch, tmp_path, capsys):
    from vla_demo.__main__ import main

    seen = {}

    def loop(family, **kw):
        seen.update(kw, family=family)
        (tmp_path / "report.md").write_text("| the report |")
        return tmp_path

    monkeypatch.setattr(recipes, "correction_loop", loop)
    main(["train", "--preset", "correction-loop", "--family", "stack", "--reuse-run", "RUN", "--handback", "7"])
    assert (seen["family"], seen["reuse"], seen["handback"], seen["seed"]) == ("stack", "RUN", 7, 0)
    assert (seen["new_episodes"], seen["finetune_steps"]) == (None, recipes.FINETUNE_STEPS)
    assert "--handback 7" in seen["command"] and "| the report |" in capsys.readouterr().out
    main(["train", "--preset", "correction-loop", "--family", "stack", "--reuse-run", "RUN", "--new-episodes", "DEMOS",
          "--finetune-steps", "800"])
    assert (seen["reuse"], seen["new_episodes"], seen["finetune_steps"]) == ("RUN", "DEMOS", 800)


@pytest.mark.parametrize("after, words", [(4, "+1 point,"), (3, "+0 points,"), (1, "-2 points,")])
def test_the_loop_report_states_the_difference_in_points_with_its_interval(after, words):
    from vla_demo.evaluate import difference_interval

    fam = lambda k: {"episodes": 100, "successes": k, "success_rate": k / 100, "ci95": [0.0, 0.1]}  # noqa: E731
    recorded = {"saved": 10, "intervention_frames": 186, "frames": 484}
    report = recipes._loop_report("stack", {"families": {"stack": fam(3)}}, {"families": {"stack": fam(after)}}, recorded,
                                  88.2, difference_interval)
    assert f"Difference: {words} 95% CI" in report["markdown"]
    lo, hi = report["difference_ci95"]
    assert report["difference"] == pytest.approx((after - 3) / 100) and lo < report["difference"] < hi
    assert "186 of 484 frames" in report["markdown"] and report["finetune_s"] == 88.2


def test_the_cards_recipe_line_names_a_rival_share_only_when_there_is_one(monkeypatch):
    line = recipes._demos_recipe()
    assert line == "action noise 0.3, detour probability 0.0, cameras: front and wrist"  # as the shipped card says
    monkeypatch.setattr(recipes, "DEMO_SHAPE_RIVAL", 0.5)
    assert "a same-colour rival in 50% of scenes" in recipes._demos_recipe()
