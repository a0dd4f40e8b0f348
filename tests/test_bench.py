"""The benchmark entry point produces well-formed rows (values are not asserted: timings are noisy)."""

from __future__ import annotations

import json

import pytest

from vla_demo import bench


def test_sim_rows_have_the_contract_format():
    rows = bench.run("sim.", repeats=3)
    names = {r["name"] for r in rows}
    assert names == {"sim.physics_step_hz", "sim.step_render_front_hz", "sim.step_render_front_wrist_hz", "sim.render_front_hz"}
    values = {r["name"]: r["value"] for r in rows}
    for r in rows:
        assert set(r) == {"name", "value", "unit", "reference", "ratio"} and r["unit"] == "Hz" and r["value"] > 0
        if r["name"] == "sim.render_front_hz":
            assert r["reference"] is None and r["ratio"] is None
        else:
            assert r["reference"] == "sim.render_front_hz"
            assert r["ratio"] == pytest.approx(values[r["name"]] / values["sim.render_front_hz"], rel=1e-2)


def test_only_filters_by_prefix_and_json_is_written(tmp_path):
    path = tmp_path / "bench.json"
    rows = bench.main("sim.render", str(path))
    assert [r["name"] for r in rows] == ["sim.render_front_hz"]
    assert json.loads(path.read_text()) == rows
    with pytest.raises(ValueError, match="no benchmark rows"):
        bench.run("nothing.")


def test_make_rows_ratio():
    rows = bench.make_rows({"a": (10.0, "Hz"), "b": (5.0, "Hz")}, reference="a")
    assert rows[1] == {"name": "b", "value": 5.0, "unit": "Hz", "reference": "a", "ratio": 0.5}


def test_policy_rows_compare_default_with_reference_and_attention_with_default():
    rows = {r["name"]: r for r in bench.run("policy.", repeats=3)}
    for stat in ("p50", "p95"):
        ref, default, att = (rows[f"policy.act_{stat}_ms.{v}"] for v in ("reference", "default", "default_attention"))
        assert ref["reference"] is None and ref["unit"] == "ms"
        assert default["reference"] == ref["name"]
        assert default["ratio"] == pytest.approx(default["value"] / ref["value"], rel=1e-2)
        assert att["reference"] == default["name"]
        assert att["ratio"] == pytest.approx(att["value"] / default["value"], rel=1e-2)


def test_dataset_rows_have_the_contract_names():
    rows = {r["name"]: r for r in bench.bench_dataset(repeats=2, fill=4)}
    assert set(rows) == {"dataset.save_episode_100_ms.at_1", "dataset.save_episode_100_ms.at_4", "dataset.collect_frames_per_s"}
    grown = rows["dataset.save_episode_100_ms.at_4"]
    assert grown["reference"] == "dataset.save_episode_100_ms.at_1" and grown["unit"] == "ms"
    assert grown["ratio"] == pytest.approx(grown["value"] / rows["dataset.save_episode_100_ms.at_1"]["value"], rel=1e-2)
    assert rows["dataset.collect_frames_per_s"]["value"] > 0


@pytest.mark.slow
def test_train_rows_compare_presets_and_time_a_fine_tune(tmp_path, monkeypatch):
    monkeypatch.setenv("VLA_DEMO_DATA", str(tmp_path))  # no replay data: the fine-tune runs on the new episodes
    rows = {r["name"]: r for r in bench.bench_train(repeats=2, batch=4)}
    assert set(rows) == {"train.samples_per_s.default", "train.samples_per_s.reference", "train.samples_per_s.default_2proc",
                         "train.finetune_10_episodes_s"}
    default, ref = rows["train.samples_per_s.default"], rows["train.samples_per_s.reference"]
    assert default["reference"] == ref["name"] and default["unit"] == "samples/s" and ref["ratio"] is None
    assert default["ratio"] == pytest.approx(default["value"] / ref["value"], rel=1e-2)
    two = rows["train.samples_per_s.default_2proc"]  # two DDP processes, against one
    assert two["reference"] == default["name"] and two["value"] > 0
    assert two["ratio"] == pytest.approx(two["value"] / default["value"], rel=1e-2)
    assert rows["train.finetune_10_episodes_s"]["value"] > 0


@pytest.mark.slow
def test_app_rows_compare_the_loop_with_the_render():
    rows = {r["name"]: r for r in bench.bench_app(repeats=3, sessions=2)}
    assert set(rows) == {"app.loop_capacity_hz", "app.loop_hz_2_sessions", "app.sim_step_render_hz", "app.loop_share_of_sim_step"}
    share = rows.pop("app.loop_share_of_sim_step")
    for r in rows.values():
        assert r["reference"] == "sim.render_front_hz" and r["unit"] == "Hz" and r["value"] > 0
    assert share["unit"] == "ratio" and share["reference"] == "app.sim_step_render_hz"
    assert share["value"] == pytest.approx(rows["app.loop_capacity_hz"]["value"] / rows["app.sim_step_render_hz"]["value"], rel=1e-2)
