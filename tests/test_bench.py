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
