"""Scripted collection and the dataset CLI verbs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla_demo.__main__ import main
from vla_demo.data import edit
from vla_demo.data.collect import CollectJob, collect, collection_seed, run_demo
from vla_demo.data.reader import DatasetReader
from vla_demo.data.torch_dataset import TrainingView
from vla_demo.evaluate import episode_seeds


def test_scripted_demo_labels_are_clean_and_execution_noisy():
    episode, ok = run_demo(CollectJob("reach", "train", 5, 0.3, (32, 32), False))
    assert ok and len(episode) > 3
    f = episode.frames
    assert f["observation.images.front"].shape == (len(episode), 32, 32, 3)
    assert np.abs(f["action"][:, :3]).max() <= 0.02 + 1e-6  # clean labels stay within the limits
    assert not np.allclose(f["action"][:, :6], f["executed_action"][:, :6])
    assert not f["intervention"].any() and episode.source == "scripted"
    assert len(set(episode.tasks)) == 1
    goals = f["goal_positions"]  # (L, 6): the reach target, twice, and it never moves far
    assert goals.shape == (len(episode), 6) and np.isfinite(goals).all()
    np.testing.assert_allclose(goals[:, :3], goals[:, 3:])


@pytest.mark.slow
def test_collect_writes_a_valid_dataset_and_appends(tmp_path):
    out = tmp_path / "demos"
    summary = collect(out, episodes=3, families=("reach", "pick"), seed=1, workers=1, image_size=(32, 32), progress=False)
    assert summary["saved"] + summary["failed"] == 3 and summary["frames"] > 0
    summary2 = collect(out, episodes=2, families=("push",), seed=1, workers=2, image_size=(32, 32), progress=False)
    r = DatasetReader(out)
    assert r.num_episodes == summary["saved"] + summary2["saved"]
    assert all(e["source"] == "scripted" and e["success"] for e in r.episodes)
    assert edit.check(out) == []
    view = TrainingView(out, chunk_size=2)
    assert np.isfinite(view[0]["goal_positions"].numpy()).all()
    assert "goal_positions" in view.stats()


def test_collection_seeds_never_meet_evaluation_seeds():
    collected = {collection_seed(s, i) for s in range(20) for i in range(2000)}
    evaluated = {x for s in range(100) for fam in ("pick", "reach", "push", "place", "stack") for x in episode_seeds(s, fam, 500)}
    assert not collected & evaluated


@pytest.mark.slow
def test_dataset_cli_round_trip(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["collect", "--episodes", "2", "--out", str(out), "--families", "reach", "--size", "32", "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["dataset", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 2 and info["fps"] == 10
    assert main(["dataset", "check", str(out)]) == 0
    assert "every invariant holds" in capsys.readouterr().out
    assert main(["dataset", "delete-episode", str(out), "0"]) == 0
    trash_id = capsys.readouterr().out.split("as ")[1].strip()
    assert main(["dataset", "restore-episode", str(out)]) == 0
    assert trash_id in capsys.readouterr().out
    assert main(["dataset", "restore-episode", str(out), trash_id]) == 0
    assert main(["dataset", "trim", str(out), "0", "0", "2"]) == 0
    assert main(["dataset", "relabel", str(out), "1", "--task", "touch the ball", "--success", "none"]) == 0
    assert main(["dataset", "check", str(out)]) == 0
    assert main(["dataset", "export", str(out), "--out", str(tmp_path / "d.zip")]) == 0
    assert (tmp_path / "d.zip").stat().st_size > 0
    capsys.readouterr()
    assert main(["dataset", "trim", str(out), "0", "5", "1"]) == 2
    assert "trim range" in capsys.readouterr().err
    assert main(["dataset", "check", str(tmp_path / "nothing")]) == 1
    assert main(["collect", "--episodes", "0", "--out", str(tmp_path / "z")]) == 2
