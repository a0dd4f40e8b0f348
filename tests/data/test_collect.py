"""Scripted collection and the dataset CLI verbs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla_demo.__main__ import main
from vla_demo.constants import COLOURS, FAMILIES
from vla_demo.data import edit
from vla_demo.data.collect import CollectJob, _has_rival, collect, collection_seed, run_demo
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
    assert "object_labels" not in f


def test_object_labels_are_recorded_with_the_observation_they_describe():
    episode, ok = run_demo(CollectJob("pick", "train", 5, 0.0, (32, 32), True, objects=True))
    labels = episode.frames["object_labels"].reshape(len(episode), 5, 7)  # (L, MAX_OBJECTS, fields)
    assert ok and labels.shape[0] == len(episode.frames["observation.images.front"])
    colours = labels[:, :, 0]
    assert (colours == colours[0]).all() and (colours[0, :2] >= 0).all()  # the same objects throughout
    rose = labels[0, :, 3] - labels[-1, :, 3]  # front v (down): the picked object rose, the rest stayed
    assert (rose > 0.04).sum() == 1 and (np.abs(rose) < 0.01).sum() == 4
    assert labels[-1, rose.argmax(), 6] == 0  # held under the wrist camera, its centre leaves that image
    plain, _ = run_demo(CollectJob("pick", "train", 5, 0.0, (32, 32), True))  # labelling changes nothing recorded
    assert set(episode.frames) - set(plain.frames) == {"object_labels"}
    assert all(np.array_equal(plain.frames[k], episode.frames[k]) for k in plain.frames)


def test_a_shape_rival_episode_records_two_objects_of_one_colour():
    job = CollectJob("pick", "train", 5, 0.0, (32, 32), False, objects=True, shape_rival=True)
    episode, ok = run_demo(job)
    first = episode.frames["object_labels"].reshape(len(episode), 5, 7)[0]  # (MAX_OBJECTS, fields)
    colours, shapes = first[first[:, 0] >= 0, 0], first[first[:, 0] >= 0, 1]
    assert ok and len(colours) > len(set(colours.tolist()))
    pairs = {(int(c), int(s)) for c, s in zip(colours, shapes)}
    assert len(pairs) == len(colours)  # the rival shares the colour, not the shape


def test_shape_rival_share_is_per_episode_and_reproducible():
    seeds = [collection_seed(0, i) for i in range(4000)]
    drawn = [_has_rival(s, 0.5) for s in seeds]
    assert 0.45 < np.mean(drawn) < 0.55
    assert drawn == [_has_rival(s, 0.5) for s in seeds]  # the same episodes on every call
    assert not any(_has_rival(s, 0.0) for s in seeds) and all(_has_rival(s, 1.0) for s in seeds)


def test_collect_refuses_a_shape_rival_share_outside_0_1_before_writing(tmp_path):
    with pytest.raises(ValueError, match="shape_rival"):
        collect(tmp_path / "demos", episodes=1, shape_rival=1.5, progress=False)
    assert not (tmp_path / "demos").exists()


def test_a_shape_only_episode_succeeds_with_an_instruction_naming_no_colour():
    episode, ok = run_demo(CollectJob("pick", "train", collection_seed(7, 0), 0.3, (32, 32), False, shape_only=True))
    assert ok and not set(episode.tasks[0].split()) & set(COLOURS)
    assert set(episode.tasks[0].split()) & {"cube", "block", "cylinder", "can", "sphere", "ball"}


def test_collect_refuses_shape_only_stack_before_writing(tmp_path):
    with pytest.raises(ValueError, match="not stack"):
        collect(tmp_path / "demos", episodes=1, shape_only=True, progress=False)
    assert not (tmp_path / "demos").exists()


def test_collect_cli_shape_only_leaves_stack_out_by_default(tmp_path, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr("vla_demo.data.collect.collect", lambda out, episodes, families, *a, **kw: seen.update(
        families=families, **kw) or {"saved": 0})
    assert main(["collect", "--episodes", "4", "--out", str(tmp_path / "d"), "--shape-only"]) == 0
    assert seen["families"] == ("pick", "push", "place", "reach") and seen["shape_only"] is True
    assert main(["collect", "--episodes", "4", "--out", str(tmp_path / "d")]) == 0
    assert seen["families"] == FAMILIES and seen["shape_only"] is False


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
    assert (view[0]["object_labels"].view(5, 7)[:2, 0] >= 0).all()  # a new dataset carries object labels


@pytest.mark.slow
def test_a_dataset_made_without_object_labels_tops_up_without_them(tmp_path):
    out = tmp_path / "old"
    collect(out, episodes=1, families=("reach",), seed=1, workers=1, image_size=(32, 32), progress=False, objects=False)
    collect(out, episodes=1, families=("reach",), seed=1, workers=1, image_size=(32, 32), progress=False)
    assert DatasetReader(out).num_episodes == 2 and "object_labels" not in DatasetReader(out).features
    assert edit.check(out) == []
    assert (TrainingView(out, chunk_size=2)[0]["object_labels"].view(5, 7)[:, :2] == -1).all()


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
