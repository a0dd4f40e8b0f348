"""Named training recipes: the shipped default policy, and plain runs from the command line.

``python -m vla_demo train --preset default`` is the one documented command that produces
``assets/policies/default``: it collects the scripted demonstrations into the data root when they
are missing, trains, and writes the policy with a model card recording data, command and wall time.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from vla_demo.constants import FAMILIES

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_POLICY = ASSETS / "policies" / "default"
DEFAULT_EPISODES_PER_FAMILY = 200
DEFAULT_STEPS = 6000
# 16 instruction-conditioned keypoints give the fusion sub-token object positions; the sim always
# has proprioception, so the state is hidden less often than in the generic preset (the webcam
# path still works without it).
DEFAULT_MODEL = {"keypoints": 16, "state_dropout": 0.15}


def data_root() -> Path:
    """``VLA_DEMO_DATA`` or ``./data``."""
    return Path(os.environ.get("VLA_DEMO_DATA", "data"))


def train_run(datasets, out=None, weights=None, preset="default", init_from=None, steps=None, batch_size=None,
              lr=None, seed=0, command="") -> Path:
    from vla_demo.config import TrainConfig
    from vla_demo.train import train

    out = out or str(data_root() / "runs" / f"train-{time.strftime('%Y%m%d-%H%M%S')}")
    kw = {k: v for k, v in dict(steps=steps, batch_size=batch_size, lr=lr).items() if v is not None}
    if steps is not None:
        kw["warmup_steps"] = min(100, steps // 10)  # short runs (tests, quick fine-tunes) warm up briefly
    cfg = TrainConfig(datasets=[str(d) for d in datasets], out=out, weights=weights, preset=preset,
                      init_from=init_from, seed=seed, command=command, **kw)
    return train(cfg)


def default_policy(command: str, steps: int | None = None, seed: int = 0, episodes_per_family: int = DEFAULT_EPISODES_PER_FAMILY,
                   out: Path = DEFAULT_POLICY) -> Path:
    """Collect (if needed) and train the shipped policy; returns its folder."""
    from vla_demo.config import TrainConfig
    from vla_demo.data.collect import collect
    from vla_demo.data.reader import DatasetReader
    from vla_demo.train import train

    t0 = time.time()
    demos = data_root() / "datasets" / "default-demos"
    want = episodes_per_family * len(FAMILIES)
    have = DatasetReader(demos).num_episodes if (demos / "meta" / "info.json").exists() else 0
    if have < want:
        collect(demos, want - have, seed=seed, noise=0.3)
    collect_s = time.time() - t0
    run = data_root() / "runs" / f"default-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = TrainConfig(datasets=[str(demos)], out=str(run), steps=steps or DEFAULT_STEPS, batch_size=64, lr=1e-3,
                      warmup_steps=200, seed=seed, command=command, val_every=500, ckpt_every=1000,
                      model_overrides=DEFAULT_MODEL)
    path = train(cfg)
    card = (path / "README.md").read_text(encoding="utf-8")
    card += (f"\n## Recipe\n\n- demonstrations: {want} scripted episodes ({episodes_per_family} per family, action noise 0.3); "
             f"this run collected {max(0, want - have)} of them in {collect_s / 60:.1f} min"
             + (f" (the other {have} were already in `{demos}`)" if have else "")
             + f"\n- wall time of this command (collection + training): {(time.time() - t0) / 60:.1f} min on {os.cpu_count()} CPU cores\n")
    (path / "README.md").write_text(card, encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(path, out)
    return out
