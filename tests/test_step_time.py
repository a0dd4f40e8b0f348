"""scripts/step_time.py: training-step time of model variants, interleaved against the default model."""

from __future__ import annotations

import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("step_time")


def test_every_variant_is_timed_against_the_first(script):
    rows = script.measure({"default": {}, "small_wrist": {"wrist_size": 48}, "no_wrist": {"wrist": False}}, batch=2, repeats=2)
    assert [r["variant"] for r in rows] == ["default", "small_wrist", "no_wrist"]
    assert rows[0]["ratio"] == 1.0 and all(r["median_ms"] > 0 for r in rows)
    default, small, none = (r["parameters"] for r in rows)
    assert none < small < default  # the 48 px wrist has fewer position embeddings; no wrist, no stem


def test_the_cli_prints_a_table_and_refuses_bad_variants(script, capsys):
    assert script.main(["--variant", 'kp8={"keypoints": 8}', "--batch", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "| default | `{}` |" in out and '| kp8 | `{"keypoints": 8}` |' in out
    for bad in (["--variant", "nojson"], ["--variant", "x=[1]"], ["--variant", 'x={"wrist_size": 40}'], ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            script.main(bad)
    assert "multiple of 16" in capsys.readouterr().err
