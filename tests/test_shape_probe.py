"""scripts/shape_probe.py: shape told from the pixels and from a policy's front feature map."""

from __future__ import annotations

import json

import pytest
import torch

from tests.scripts import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("shape_probe")


@pytest.fixture(scope="module")
def labelled_dataset(tmp_path_factory):
    from vla_demo.data.collect import collect

    out = tmp_path_factory.mktemp("shapes") / "demos"
    collect(out, episodes=4, families=("pick", "reach"), seed=3, workers=1, image_size=(32, 32), progress=False)
    return out


def test_the_probes_fit_what_can_be_told_apart(script):
    shapes = torch.arange(300) % 3
    x = torch.nn.functional.one_hot(shapes, 8).float() + 0.1 * torch.randn(300, 8)  # shape sits in 3 features
    pred = script.fit_and_test(script.map_net(8, 0), x[:200], shapes[:200], x[200:], steps=200)
    colours = torch.zeros(100, dtype=torch.long)  # all red
    s = script.scores(pred, shapes[200:], colours)
    assert s["shape_right"] == 1.0 and s["red_shape_right"] == 1.0 and s["objects"] == 100
    noise = script.fit_and_test(script.map_net(8, 16), torch.randn(200, 8), shapes[:200], torch.randn(100, 8), steps=200)
    assert script.scores(noise, shapes[200:], colours)["shape_right"] < 0.6  # nothing to find: chance


def test_crops_are_centred_on_every_labelled_object(script, labelled_dataset):
    from vla_demo.data.reader import DatasetReader

    frames = script.first_frames(DatasetReader(labelled_dataset), [0, 1], 32)
    x, shapes, colours = script.crops(frames)
    n = sum(len(rows) for _, rows in frames)
    assert x.shape == (n, 1, 6, 6) and len(shapes) == len(colours) == n >= 4
    centre, rim = x[:, 0, 2:4, 2:4].mean(), x[:, 0, [0, -1], :].mean()
    assert abs(float(centre - rim)) > 0.03  # an object at the centre, table at the rim


def test_the_probe_reports_pixels_and_each_policy(script, labelled_dataset, tiny_policy_dir, tmp_path, capsys):
    out = tmp_path / "s.json"
    results = script.main(["--dataset", str(labelled_dataset), "--policy", str(tiny_policy_dir), "--episodes", "4",
                           "--steps", "2", "--json", str(out)])
    assert set(results) == {"pixels", str(tiny_policy_dir)} and set(results[str(tiny_policy_dir)]) == {"linear", "hidden128"}
    counts = {r["objects"] for r in [results["pixels"], *results[str(tiny_policy_dir)].values()]}
    assert len(counts) == 1 and counts.pop() > 0  # the same test objects for every probe
    assert json.loads(out.read_text())["episodes"] == 4 and "grey crops (pixels)" in capsys.readouterr().out


def test_a_dataset_without_object_labels_and_bad_counts_are_refused(script, tiny_policy_dir, tmp_path, capsys):
    from vla_demo.data.collect import collect

    plain = tmp_path / "plain"
    collect(plain, episodes=1, families=("reach",), workers=1, image_size=(32, 32), progress=False, objects=False)
    with pytest.raises(SystemExit):
        script.main(["--dataset", str(plain), "--policy", str(tiny_policy_dir)])
    assert "has no object_labels" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--dataset", str(plain), "--policy", str(tiny_policy_dir), "--episodes", "1"])
    assert "--episodes must be at least 2" in capsys.readouterr().err
