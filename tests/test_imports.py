"""Importing any module is cheap and side-effect free (no torch, no physics connection)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import vla_demo


def test_every_module_imports_without_heavy_side_effects():
    modules = [m.name for m in pkgutil.walk_packages(vla_demo.__path__, "vla_demo.")]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "heavy = [m for m in ('torch', 'pybullet', 'av', 'cv2') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported at module load: {done.stdout}"
    assert "vla_demo.sim.env" in modules and "vla_demo.evaluate" in modules
