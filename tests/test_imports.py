"""Importing any module is cheap and side-effect free: no physics connection, no model load, and
the simulator side never pulls in torch."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import vla_demo

TORCH_MODULES = (
    "vla_demo.model", "vla_demo.policy", "vla_demo.train", "vla_demo.ema", "vla_demo.data.torch_dataset",
)


def imported_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(','.join(sorted(m for m in sys.modules if '.' not in m)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.strip().split(","))


def all_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(vla_demo.__path__, "vla_demo.")]


def test_sim_side_imports_no_torch_and_nothing_heavy():
    light = [m for m in all_modules() if not m.startswith(TORCH_MODULES)]
    assert "vla_demo.sim.env" in light and "vla_demo.evaluate" in light
    heavy = imported_after(light) & {"torch", "pybullet", "av", "cv2", "transformers", "tokenizers", "safetensors"}
    assert not heavy, f"imported at module load: {heavy}"


def test_model_side_loads_no_transformers_or_physics_at_import():
    modules = all_modules()
    assert "vla_demo.policy" in modules and "vla_demo.model.vla" in modules
    heavy = imported_after(modules) & {"pybullet", "transformers", "av", "cv2"}
    assert not heavy, f"imported at module load: {heavy}"
