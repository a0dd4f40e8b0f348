"""The one benchmark entry point: ``python -m vla_demo bench [--only PREFIX] [--json PATH]``.

Every hot path adds a group here. A group returns rows ``{"name", "value", "unit", "reference",
"ratio"}``: ``reference`` names the row (same unit, same run) this one is compared with and
``ratio = value / reference value``. Timings on shared CPUs are noisy, so every value is a
median over repeats and the ratios, not the absolute numbers, are what to compare across machines.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Row = dict[str, Any]


def median_rate_hz(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Calls per second, from the median duration of single calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1.0 / float(np.median(times))


def make_rows(values: dict[str, tuple[float, str]], reference: str | None) -> list[Row]:
    """Rows for ``{name: (value, unit)}``, each compared with ``reference`` (one of the names)."""
    ref_value = values[reference][0] if reference else None
    rows = []
    for name, (value, unit) in values.items():
        ref = None if name == reference else reference
        ratio = round(value / ref_value, 4) if ref and ref_value else None
        rows.append({"name": name, "value": round(value, 3), "unit": unit, "reference": ref, "ratio": ratio})
    return rows


# ----------------------------------------------------------------------------- groups


def bench_sim(repeats: int = 60) -> list[Row]:
    """Simulator rates at 128 x 128 against the bare front-camera render in the same run."""
    from vla_demo.sim.env import TabletopEnv

    rng = np.random.default_rng(0)

    def actions(env):
        lo, hi = env.action_space.low, env.action_space.high
        return lambda: env.step(rng.uniform(lo, hi) * 0.5)

    values: dict[str, tuple[float, str]] = {}
    env = TabletopEnv()
    env.reset(seed=0, options={"family": "pick", "n_objects": 5})
    values["sim.render_front_hz"] = (median_rate_hz(env.render, repeats), "Hz")
    client = env._client  # the raw physics step is a property of the client, not of the API
    values["sim.physics_step_hz"] = (median_rate_hz(client.stepSimulation, repeats * 20), "Hz")
    values["sim.step_render_front_hz"] = (median_rate_hz(actions(env), repeats), "Hz")
    env.close()
    wrist = TabletopEnv(wrist_camera=True)
    wrist.reset(seed=0, options={"family": "pick", "n_objects": 5})
    values["sim.step_render_front_wrist_hz"] = (median_rate_hz(actions(wrist), repeats), "Hz")
    wrist.close()
    return make_rows(values, reference="sim.render_front_hz")


GROUPS: dict[str, Callable[..., list[Row]]] = {"sim.": bench_sim}


def run(only: str | None = None, repeats: int | None = None) -> list[Row]:
    """Run every group whose prefix overlaps ``only`` and keep the rows that start with it.

    ``repeats`` overrides each group's default number of timed calls (tests use a handful).
    """
    rows: list[Row] = []
    for prefix, fn in GROUPS.items():
        if only and not (prefix.startswith(only) or only.startswith(prefix)):
            continue
        rows += fn() if repeats is None else fn(repeats=repeats)
    if only:
        rows = [r for r in rows if r["name"].startswith(only)]
    if not rows:
        raise ValueError(f"no benchmark rows match {only!r}; prefixes are {list(GROUPS)}")
    return rows


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


def format_table(rows: list[Row]) -> str:
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'name':<{width}}  {'value':>10}  unit  {'ratio':>7}  reference"]
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
        lines.append(f"{r['name']:<{width}}  {r['value']:>10.2f}  {r['unit']:<4}  {ratio:>7}  {r['reference'] or '-'}")
    return "\n".join(lines)


def main(only: str | None = None, json_path: str | None = None) -> list[Row]:
    rows = run(only)
    print(f"# {machine()}")
    print(format_table(rows))
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows
