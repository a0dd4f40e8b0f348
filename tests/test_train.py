"""The trainer: loss falls, resume continues the same run, atomic checkpoints, DDP across 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from vla_demo.config import TrainConfig
from vla_demo.data.collect import collect
from vla_demo.policy import LanguageConditionedPolicy
from vla_demo.train import augment, cap_episodes, keep_family_share, lr_at, split_episodes, train

TINY = {"image_size": 32, "d_model": 32, "n_heads": 2, "n_layers": 1, "head_hidden": 32}


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos") / "ds"
    collect(out, episodes=4, families=("reach", "pick"), seed=3, workers=1, image_size=(32, 32), progress=False)
    return str(out)


def config(demos, out, **kw) -> TrainConfig:
    base = dict(datasets=[demos], out=str(out), model_overrides=TINY, chunk_size=4, steps=40, batch_size=16,
                warmup_steps=4, val_every=20, ckpt_every=20, val_fraction=0.25, lr=3e-3)
    return TrainConfig(**{**base, **kw})


def weights(path) -> dict[str, torch.Tensor]:
    return LanguageConditionedPolicy.from_pretrained(path).model.state_dict()


def test_loss_decreases_and_outputs_are_complete(demos, tmp_path):
    seen = []
    path = train(config(demos, tmp_path / "run", steps=150), progress=lambda s, t, m: seen.append((s, t, m["loss"])))
    assert [s for s, _, _ in seen] == list(range(1, 151)) and seen[0][1] == 150
    first, last = np.mean([x for *_, x in seen[:10]]), np.mean([x for *_, x in seen[-10:]])
    assert last < 0.75 * first, (first, last)
    lines = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert {"step", "total", "loss", "lr"} <= set(lines[0]) and "val_loss" in lines[19]
    card = (path / "README.md").read_text()
    assert "150 x batch 16" in card and demos in card
    policy = LanguageConditionedPolicy.from_pretrained(path)
    assert policy.model.action_std.abs().sum() > 0 and not torch.allclose(policy.model.action_std, torch.ones(7))


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_continues_the_same_run(demos, tmp_path, ema_decay):
    straight = train(config(demos, tmp_path / "a", steps=12, ckpt_every=100, ema_decay=ema_decay))
    stop = threading.Event()  # set after step 5 (the app's Stop button, between steps)
    train(config(demos, tmp_path / "b", steps=12, ckpt_every=100, ema_decay=ema_decay), stop=stop,
          progress=lambda step, total, metrics: step >= 5 and stop.set())
    state = json.loads((tmp_path / "b/last/trainer_state.json").read_text())
    assert state["step"] == 5 and ("ema" in state) == bool(ema_decay)
    resumed = train(config(demos, tmp_path / "b", steps=12, ckpt_every=100, ema_decay=ema_decay))
    for folder in ("policy", "last"):  # the shipped weights (the average, if any) and the raw ones
        for (k, a), (_, b) in zip(weights(straight.parent / folder).items(), weights(resumed.parent / folder).items(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{folder}: {k}")


def test_the_weight_average_is_shipped_and_validated_and_the_raw_weights_keep_training(demos, tmp_path):
    plain = train(config(demos, tmp_path / "plain", steps=30, val_every=10))
    averaged = train(config(demos, tmp_path / "ema", steps=30, val_every=10, ema_decay=0.9))
    raw = weights(averaged.parent / "last")
    for k, v in weights(plain).items():  # the average does not touch the training trajectory
        torch.testing.assert_close(raw[k], v, rtol=0, atol=0, msg=k)
    shipped = weights(averaged)
    moved = [k for k, v in shipped.items() if v.is_floating_point() and not torch.equal(v, raw[k])]
    assert moved and "action_std" not in moved  # weights averaged, normalisation statistics kept
    lines = [json.loads(x) for x in (tmp_path / "ema/log.jsonl").read_text().splitlines()]
    val = [x for x in lines if "val_loss" in x]
    assert [x["step"] for x in val] == [10, 20, 30] and all(x["val_loss"] != x["val_loss_raw"] for x in val)
    with pytest.raises(ValueError, match="weight average"):  # resuming it as an averaged run is refused
        train(config(demos, tmp_path / "plain", steps=40, ema_decay=0.9))


def test_trainer_state_keeps_every_ranks_random_streams(tmp_path):
    """A resumed DDP run gives each rank its own sampling and augmentation streams back (not rank 0's)."""
    from vla_demo.train import load_trainer_state, rng_states, save_trainer_state

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())

    def streams(seed):
        sampler = type("S", (), {"generator": torch.Generator().manual_seed(seed)})()
        return sampler, torch.Generator().manual_seed(seed + 100)

    ranks = [streams(1), streams(2)]
    for sampler, aug in ranks:
        torch.rand(3, generator=sampler.generator), torch.rand(5, generator=aug)  # move them on
    save_trainer_state(tmp_path, opt, 7, [rng_states(s, a) for s, a in ranks])
    sampler, aug = streams(9)
    assert load_trainer_state(tmp_path, opt, sampler, aug, rank=1, world=2) == 7
    assert torch.equal(sampler.generator.get_state(), ranks[1][0].generator.get_state())
    assert torch.equal(aug.get_state(), ranks[1][1].get_state())
    assert not torch.equal(sampler.generator.get_state(), ranks[0][0].generator.get_state())
    with pytest.raises(ValueError, match="written by 2 training processes"):
        load_trainer_state(tmp_path, opt, sampler, aug, rank=0, world=1)


@pytest.mark.slow
def test_processes_start_ddp_from_one_call(demos, tmp_path):
    """``processes=2`` without torchrun: two ranks, each with half the batch and its own streams."""
    from safetensors.torch import load_file

    with pytest.raises(ValueError, match="split batch_size"):
        config(demos, tmp_path / "odd", processes=2, batch_size=15)
    with pytest.raises(ValueError, match="processes=1"):
        train(config(demos, tmp_path / "cb", processes=2), progress=lambda *a: None)
    path = train(config(demos, tmp_path / "ddp", steps=6, processes=2))
    start = LanguageConditionedPolicy.build("default", seed=0, chunk_size=4, **TINY).model.state_dict()
    trained = weights(path)
    assert any(not torch.equal(start[k], v) for k, v in trained.items() if k in start and "action_" not in k and "state_" not in k)
    state = load_file(str(tmp_path / "ddp/last/trainer_state.safetensors"))
    assert json.loads((tmp_path / "ddp/last/trainer_state.json").read_text())["ranks"] == 2
    assert not torch.equal(state["rng.sampler"], state["rng.rank1.sampler"])
    assert len((tmp_path / "ddp/log.jsonl").read_text().splitlines()) == 6  # rank 0 logs, once per step


@pytest.mark.slow
def test_a_failing_training_process_is_reported_with_its_message(demos, tmp_path):
    """A rank that fails mid-run (here: its run folder cannot be made) ends the launch with that rank's error."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RuntimeError, match=r"training process 0 of 2 failed: .*Error"):
        train(config(demos, blocker / "run", steps=6, processes=2))
    with pytest.raises(ValueError, match="not a LeRobot dataset"):  # unusable inputs fail before any process starts
        train(config(str(tmp_path / "missing"), tmp_path / "run", processes=2))


def test_checkpoints_are_atomic(demos, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(config(demos, run, steps=4, ckpt_every=2, warmup_steps=1))
    before = (run / "last/model.safetensors").read_bytes()
    import vla_demo.train as tr

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(tr, "save_trainer_state", crash)
    with pytest.raises(OSError):
        train(config(demos, run, steps=8, ckpt_every=2, warmup_steps=1))
    assert (run / "last/model.safetensors").read_bytes() == before  # the old checkpoint survived whole
    assert json.loads((run / "last/trainer_state.json").read_text())["step"] == 4
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_fine_tune_starts_from_a_checkpoint(demos, tmp_path):
    base = train(config(demos, tmp_path / "base", steps=6))
    tuned = train(config(demos, tmp_path / "tuned", steps=3, init_from=str(base), warmup_steps=1))
    a, b = weights(base), weights(tuned)
    torch.testing.assert_close(a["action_std"], b["action_std"])  # normalisation kept from the parent
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_schedule_split_and_augmentation():
    cfg = TrainConfig(datasets=["x"], steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-5)
    assert lr_at(0, cfg) == pytest.approx(1e-4) and lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(99, cfg) < 2e-5 and lr_at(50, cfg) < lr_at(20, cfg)
    tr, va = split_episodes(20, 0.1, seed=0)
    assert len(va) == 2 and not set(tr) & set(va) and sorted(tr + va) == list(range(20))
    assert split_episodes(1, 0.5, 0) == ([0], [])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    y = augment(x, 2, 0.1, g)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1 and not torch.equal(x, y)
    assert torch.equal(augment(x, 0, 0.0, g), x)


def test_goal_normalisation_comes_from_labelled_frames_only():
    from vla_demo.data import stats as st
    from vla_demo.train import dataset_stats

    class Stats:  # what dataset_stats reads of a TrainingView: stats.json as the view returns it
        def __init__(self, columns):
            self.json = st.to_json(st.aggregate([st.episode_stats(columns, {})]))

        def stats(self):
            return st.from_json(self.json)

    rng = np.random.default_rng(0)
    goals = rng.normal(size=(10, 6))
    goals[3] = np.nan  # an app frame whose instruction named no object in the scene
    labelled = Stats({"action": rng.normal(size=(10, 7)), "goal_positions": goals})
    unlabelled = Stats({"action": rng.normal(size=(4, 7)), "goal_positions": np.full((4, 6), np.nan)})
    got = dataset_stats([labelled, unlabelled])
    np.testing.assert_allclose(got["goal_positions"]["mean"], np.delete(goals, 3, 0).mean(0), rtol=1e-9)
    assert got["action"]["count"][0] == 14 and got["goal_positions"]["count"][0] == 9
    assert "goal_positions" not in dataset_stats([unlabelled])  # the model keeps its own goal normalisation


def test_family_shares_starve_only_the_named_family(demos):
    from vla_demo.data.reader import DatasetReader
    from vla_demo.sim.tasks import parse_instruction

    reader = DatasetReader(demos)
    family = {e: parse_instruction(reader.episode(e)["tasks"][0]).goal.family for e in range(reader.num_episodes)}
    assert sorted(set(family.values())) == ["pick", "reach"]
    everything = list(range(reader.num_episodes))
    assert keep_family_share(reader, everything, {}, seed=0) == everything
    kept = keep_family_share(reader, everything, {"pick": 0.0}, seed=0)
    assert kept == [e for e in everything if family[e] == "reach"]
    one = keep_family_share(reader, everything, {"pick": 0.1}, seed=0)  # a positive share keeps at least one
    assert sum(family[e] == "pick" for e in one) == 1 and all(e in one for e in kept)
    with pytest.raises(ValueError, match="family_fractions"):
        config(demos, "x", family_fractions={"pick": 1.5})
    with pytest.raises(ValueError, match="2 family_fractions for 1 datasets"):
        config(demos, "x", family_fractions=[{"pick": 0.5}, None])
    assert config(demos, "x", family_fractions=[None]).fractions_for(0) == {}


def test_an_episode_cap_trains_on_a_fixed_subset_and_shrinks_validation_alike(demos, tmp_path):
    tr, va = cap_episodes(list(range(40)), [40, 41, 42, 43], cap=10, seed=0)
    assert len(tr) == 10 and set(tr) < set(range(40)) and tr == sorted(tr) and len(va) == 1 and va[0] >= 40
    assert (tr, va) == cap_episodes(list(range(40)), [40, 41, 42, 43], cap=10, seed=0)  # the same subset every time
    assert cap_episodes([1, 2], [3], cap=5, seed=0) == ([1, 2], [3]) and cap_episodes([1, 2], [], 1, 0)[1] == []
    with pytest.raises(ValueError, match="max_episodes must be positive"):
        config(demos, "x", max_episodes=0)
    with pytest.raises(ValueError, match="max_episodes must be positive"):
        config(demos, "x", max_episodes=True)
    with pytest.raises(ValueError, match="2 max_episodes for 1 datasets"):
        config(demos, "x", max_episodes=[1, None])
    train(config(demos, tmp_path / "run", steps=2, warmup_steps=1, max_episodes=[2], val_fraction=0.0))
    used = json.loads((tmp_path / "run" / "episodes.json").read_text())[demos]
    assert len(used["train"]) == 2 and used["val"] == []


def test_config_validation():
    with pytest.raises(ValueError, match="at least one dataset"):
        TrainConfig(datasets=[])
    with pytest.raises(ValueError, match="weights"):
        TrainConfig(datasets=["a"], weights=[1, 2])
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(datasets=["a"], steps=10, warmup_steps=10)


DDP_SCRIPT = """
import json, sys, torch
from vla_demo.config import TrainConfig
from vla_demo.train import train
cfg = TrainConfig(**json.loads(sys.argv[1]))
train(cfg)
rank = torch.distributed.get_rank()
from vla_demo.policy import LanguageConditionedPolicy
import vla_demo.train as tr
"""


@pytest.mark.slow
def test_ddp_two_processes_keep_identical_parameters(demos, tmp_path):
    """Two CPU ranks under torchrun (gloo): each saves its parameters; they must be identical."""
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap_ddp())
    cfg = config(demos, tmp_path / "ddp", steps=6, ckpt_every=100)
    import dataclasses

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", str(script),
           json.dumps(dataclasses.asdict(cfg)), str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    from safetensors.torch import load_file

    r0, r1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert r0.keys() == r1.keys() and len(r0) > 10
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0, msg=k)
    start = LanguageConditionedPolicy.build("default", seed=0, chunk_size=4, **TINY).model.state_dict()
    assert any(not torch.equal(start[k], r0[k]) for k in r0 if k in start and "action_" not in k and "state_" not in k)


def textwrap_ddp() -> str:
    return (
        "import json, sys, torch\n"
        "from safetensors.torch import save_file\n"
        "from vla_demo.config import TrainConfig\n"
        "import vla_demo.train as tr\n"
        "cfg = TrainConfig(**json.loads(sys.argv[1]))\n"
        "captured = {}\n"
        "orig = tr._make_policy\n"
        "def keep(cfg, views):\n"
        "    p = orig(cfg, views)\n"
        "    captured['p'] = p\n"
        "    return p\n"
        "tr._make_policy = keep\n"
        "tr.train(cfg)\n"
        "rank = torch.distributed.get_rank()\n"
        "state = {k: v.detach().clone().contiguous() for k, v in captured['p'].model.state_dict().items()}\n"
        "save_file(state, f'{sys.argv[2]}/rank{rank}.safetensors')\n"
        "torch.distributed.destroy_process_group()\n"
    )


def test_stop_flag_is_honoured_between_steps(demos, tmp_path):
    stop = threading.Event()
    calls = []

    def progress(step, total, metrics):
        calls.append(step)
        if step == 3:
            stop.set()

    train(config(demos, tmp_path / "run", steps=50), progress=progress, stop=stop)
    assert calls[-1] == 3
    assert json.loads((tmp_path / "run/last/trainer_state.json").read_text())["step"] == 3


def test_train_cli_writes_a_policy_with_its_command(demos, tmp_path, capsys):
    from vla_demo.__main__ import main

    out = tmp_path / "cli"
    assert main(["train", "--data", demos, "--out", str(out), "--steps", "3", "--batch-size", "4"]) == 0
    assert "wrote" in capsys.readouterr().out
    card = (out / "policy" / "README.md").read_text()
    assert "python -m vla_demo train" in card and "3 x batch 4" in card
    assert main(["train", "--steps", "3"]) == 2
    assert "--data" in capsys.readouterr().err


def test_train_cli_wrist_trains_on_both_cameras_and_refuses_front_only_data(demos, tmp_path, capsys):
    from vla_demo.__main__ import main
    from vla_demo.policy import LanguageConditionedPolicy

    both = tmp_path / "both"
    collect(both, episodes=2, families=("reach",), seed=4, workers=1, image_size=(32, 32), wrist=True, progress=False)
    out = tmp_path / "wrist"
    assert main(["train", "--data", str(both), "--out", str(out), "--steps", "2", "--batch-size", "4", "--wrist"]) == 0
    assert LanguageConditionedPolicy.from_pretrained(out / "policy").needs_wrist
    small = train(config(str(both), tmp_path / "small", steps=2, warmup_steps=0, batch_size=4, val_fraction=0.0,
                         model_overrides={**TINY, "wrist": True, "wrist_size": 16}))  # the wrist served at 16 px
    assert LanguageConditionedPolicy.from_pretrained(small).model.config.wrist_image_size == 16
    assert main(["train", "--data", demos, "--out", str(tmp_path / "no"), "--steps", "2", "--wrist"]) == 2
    assert "observation.images.wrist" in capsys.readouterr().err
