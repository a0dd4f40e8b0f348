"""Smoke test of the dev-only browser benchmark (scripts/browser_bench.py): a few seconds of the
scripted expert and three teleop key presses in Chromium give well-formed rows (values are not
compared with the targets here: timings on a shared 2-core machine are noisy)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "browser_bench.py"

pytestmark = [pytest.mark.browser, pytest.mark.slow]
if not os.path.exists(CHROMIUM):
    pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM} (.ci/run installs it with apt-get)",
                allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="browser tests need playwright (requirements-dev.txt)")


def load_script():
    spec = importlib.util.spec_from_file_location("browser_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_browser_bench_gives_fps_and_key_latency_rows(tmp_path):
    bench = load_script()
    path = tmp_path / "browser.json"
    rows = bench.main(["--policy", "expert", "--seconds", "4", "--warmup", "1", "--presses", "3", "--json", str(path)])
    assert json.loads(path.read_text()) == rows
    by = {r["name"]: r for r in rows}
    units = {"app.server_display_fps": "fps", "app.browser_fps": "fps", "app.browser_frame_interval_ms_p95": "ms",
             "app.browser_frames": "n", "app.key_to_frame_ms": "ms", "app.key_to_frame_ms_p95": "ms",
             "app.key_to_frame_presses": "n", "app.key_to_frame_missed": "n"}
    assert {name: r["unit"] for name, r in by.items()} == units
    for r in rows:
        assert set(r) == {"name", "value", "unit", "reference", "ratio"}
        assert math.isfinite(r["value"]) and (r["value"] > 0 or r["name"] == "app.key_to_frame_missed"), r
    fps = by["app.browser_fps"]
    assert fps["reference"] == "app.server_display_fps"
    assert fps["ratio"] == pytest.approx(fps["value"] / by["app.server_display_fps"]["value"], rel=1e-2)
    assert by["app.key_to_frame_ms_p95"]["value"] >= by["app.key_to_frame_ms"]["value"]
    assert by["app.key_to_frame_presses"]["value"] + by["app.key_to_frame_missed"]["value"] == 3
