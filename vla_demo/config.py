"""Validated dataclass configs. Each checks itself in ``__post_init__`` and names the bad value.

Configs are plain data: they serialise with :func:`dataclasses.asdict` into checkpoints and run
logs and are rebuilt with ``Config(**d)`` (no exec/eval, no pickle).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def require(cond: bool, msg: str) -> None:
    """Config validation: raise ValueError(msg) unless ``cond``."""
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class ActionLimits:
    """Per-control-step action limits; the env clips every action to these.

    Attributes:
        max_translation: |dx|, |dy|, |dz| in metres per control step.
        max_rotation: |droll|, |dpitch|, |dyaw| in radians per control step.
    """

    max_translation: float = 0.02
    max_rotation: float = 0.1

    def __post_init__(self) -> None:
        require(0 < self.max_translation <= 0.1, f"max_translation must be in (0, 0.1] m, got {self.max_translation}")
        require(0 < self.max_rotation <= 0.5, f"max_rotation must be in (0, 0.5] rad, got {self.max_rotation}")

    def low_high(self) -> tuple[list[float], list[float]]:
        """Bounds of the 7-D action vector, as (low, high) lists."""
        t, r = self.max_translation, self.max_rotation
        return [-t, -t, -t, -r, -r, -r, 0.0], [t, t, t, r, r, r, 1.0]


@dataclass(frozen=True)
class Workspace:
    """Box the end-effector target is kept inside (metres, world frame; table top at z = 0).

    ``orientation_limit`` bounds roll/pitch relative to the gripper-down home, ``yaw_limit`` the
    yaw: both keep the arm away from wrist singularities and the state free of angle wraps.
    """

    x: tuple[float, float] = (0.25, 0.78)
    y: tuple[float, float] = (-0.32, 0.32)
    z: tuple[float, float] = (0.005, 0.40)
    orientation_limit: float = 0.6
    yaw_limit: float = 1.6

    def __post_init__(self) -> None:
        for name in ("x", "y", "z"):
            lo, hi = getattr(self, name)
            require(lo < hi, f"workspace {name} range must be increasing, got ({lo}, {hi})")
        require(0 < self.orientation_limit < 1.5, f"orientation_limit must be in (0, 1.5) rad, got {self.orientation_limit}")
        require(0 < self.yaw_limit < 3.0, f"yaw_limit must be in (0, 3.0) rad, got {self.yaw_limit}")


@dataclass(frozen=True)
class SimConfig:
    """Everything about the tabletop simulator.

    Attributes:
        image_size: (height, width) of the camera images in pixels.
        wrist_camera: also render ``observation.images.wrist``.
        control_hz: policy/control rate; the dataset fps equals this.
        physics_hz: physics rate; must be a multiple of ``control_hz``.
        max_episode_steps: control steps before the episode is truncated.
        n_objects: (min, max) objects per scene when ``reset`` is not told.
        terminate_on_success: end the episode on the step the task succeeds.
        robot_visuals: ``"simple"`` draws the Panda with its low-poly collision meshes (about 9x
            faster to render on the CPU renderer), ``"full"`` with its detailed visual meshes.
        action: action limits.
        workspace: end-effector bounds.
    """

    image_size: tuple[int, int] = (128, 128)
    wrist_camera: bool = False
    control_hz: int = 10
    physics_hz: int = 240
    max_episode_steps: int = 120
    n_objects: tuple[int, int] = (2, 5)
    terminate_on_success: bool = True
    robot_visuals: str = "simple"
    action: ActionLimits = field(default_factory=ActionLimits)
    workspace: Workspace = field(default_factory=Workspace)

    def __post_init__(self) -> None:
        h, w = self.image_size
        require(16 <= h <= 1024 and 16 <= w <= 1024, f"image_size must be within 16..1024 px, got {self.image_size}")
        require(self.control_hz > 0 and self.physics_hz > 0, "control_hz and physics_hz must be positive")
        require(
            self.physics_hz % self.control_hz == 0,
            f"physics_hz ({self.physics_hz}) must be a multiple of control_hz ({self.control_hz})",
        )
        require(self.max_episode_steps > 0, f"max_episode_steps must be positive, got {self.max_episode_steps}")
        lo, hi = self.n_objects
        require(2 <= lo <= hi <= 5, f"n_objects must satisfy 2 <= min <= max <= 5, got {self.n_objects}")
        require(self.robot_visuals in ("simple", "full"), f"robot_visuals must be 'simple' or 'full', got {self.robot_visuals!r}")

    @property
    def substeps(self) -> int:
        """Physics steps per control step."""
        return self.physics_hz // self.control_hz

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimConfig:
        d = dict(d)
        d["action"] = ActionLimits(**d.get("action", {}))
        d["workspace"] = Workspace(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.get("workspace", {}).items()})
        for key in ("image_size", "n_objects"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class TrainConfig:
    """One training or fine-tuning run (serialised into the run folder and the model card).

    Data:
        datasets: LeRobot v3 dataset folders to mix.
        weights: sampling weight of each dataset (default: proportional to its frames).
        intervention_weight: how much more often frames an operator drove are drawn (HG-DAgger).
        own_action_weight: how often frames the policy drove, labelled with its own action, are
            drawn (relative to 1; a dataset with nothing else is drawn from uniformly).
        val_fraction: share of episodes held out for the validation loss.
        family_fractions: ``{family: share}`` keeps only that share of a family's training episodes
            (the family read from each episode's first instruction), in every dataset, or a list
            with one such dict (or None) per dataset; for ablations such as the correction-loop
            experiment, which starves one family of the demonstrations but not of the corrections.
        max_episodes: at most this many training episodes of each dataset (a fixed random subset,
            drawn by ``seed`` after ``family_fractions``), or a list with one cap (or None) per
            dataset; the validation episodes shrink in proportion. A fine-tune replays a bounded
            subset of the original data, so it decodes few frames before its cache is warm.
    Model:
        preset: model preset for a fresh model; ``init_from`` starts from a checkpoint instead.
        model_overrides: ModelConfig fields to change from the preset (tiny models in tests).
        chunk_size: actions per training target (must match the model's).
    Optimisation:
        steps, batch_size, lr, weight_decay, warmup_steps (then cosine decay to ``min_lr``), grad_clip.
            ``batch_size`` is the batch of one optimizer step, split evenly over the processes.
        processes: train in this many local processes (DDP over gloo, each with its share of the
            cores and its own sampling stream; ``train`` starts them). On 2 cores it
            paid for the object head with recoloured copies (1.15 x the steps per second) and not
            for the default model (level; README, "Training"). A run's result depends on this
            number, as on the seed. Under ``torchrun`` the launcher's process count applies instead.
        ema_decay: keep an exponential moving average of the weights with this decay and validate and
            ship it instead of the raw weights (``vla_demo.ema``); 0 turns it off.
    Augmentation:
        shift_px: random image shift (small: the camera is fixed, so pixels map to positions).
        colour_jitter: brightness/contrast jitter amplitude.
        word_drop: probability of replacing a word by the unknown token.
    Bookkeeping:
        out: run folder (checkpoints, log.jsonl, final policy in ``out/policy``).
        ckpt_every, val_every: steps between checkpoints / validation passes.
        seed: seeds the model init, sampling and augmentation.
        cache_budget_mb: decoded-frame cache per dataset.
    """

    datasets: list[str] = field(default_factory=list)
    out: str = "runs/train"
    weights: list[float] | None = None
    preset: str = "default"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    chunk_size: int = 8
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    processes: int = 1
    shift_px: int = 2
    colour_jitter: float = 0.1
    word_drop: float = 0.1
    intervention_weight: float = 3.0
    own_action_weight: float = 1.0
    val_fraction: float = 0.05
    family_fractions: dict[str, float] | list[dict[str, float] | None] = field(default_factory=dict)
    max_episodes: int | list[int | None] | None = None
    val_every: int = 250
    ckpt_every: int = 500
    seed: int = 0
    cache_budget_mb: float = 4096
    command: str = ""

    def __post_init__(self) -> None:
        require(len(self.datasets) > 0, "give at least one dataset")
        require(self.weights is None or len(self.weights) == len(self.datasets),
               f"{len(self.weights or [])} weights for {len(self.datasets)} datasets")
        require(self.weights is None or all(w > 0 for w in self.weights), "dataset weights must be positive")
        require(self.steps > 0 and self.batch_size > 0, f"steps ({self.steps}) and batch_size ({self.batch_size}) must be positive")
        require(0 < self.lr < 1 and 0 <= self.min_lr <= self.lr, f"need 0 < min_lr <= lr < 1, got lr {self.lr}, min_lr {self.min_lr}")
        require(0 <= self.warmup_steps < self.steps, f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps})")
        require(0 <= self.word_drop < 1 and 0 <= self.val_fraction < 1, "word_drop and val_fraction must be in [0, 1)")
        require(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        require(self.processes >= 1 and self.batch_size % self.processes == 0,
                f"processes ({self.processes}) must be >= 1 and split batch_size ({self.batch_size}) evenly")
        require(self.intervention_weight > 0, f"intervention_weight must be positive, got {self.intervention_weight}")
        require(self.own_action_weight >= 0, f"own_action_weight must be >= 0, got {self.own_action_weight}")
        require(self.shift_px >= 0 and self.colour_jitter >= 0, "augmentation amplitudes must be >= 0")
        require(self.ckpt_every > 0 and self.val_every > 0, "ckpt_every and val_every must be positive")
        fractions, caps = self._per_dataset("family_fractions"), self._per_dataset("max_episodes")
        require(all(0 <= v <= 1 for d in fractions for v in (d or {}).values()), "family_fractions must be shares in [0, 1]")
        require(all(c is None or (isinstance(c, int) and not isinstance(c, bool) and c > 0) for c in caps),
                f"max_episodes must be positive integers, got {self.max_episodes}")

    def _per_dataset(self, name: str) -> list[Any]:
        """A field given once for every dataset, or as a list with one entry per dataset, as that list."""
        value = getattr(self, name)
        if not isinstance(value, list):
            return [value] * len(self.datasets)
        require(len(value) == len(self.datasets), f"{len(value)} {name} for {len(self.datasets)} datasets")
        return value

    def fractions_for(self, i: int) -> dict[str, float]:
        """The family shares applied to dataset ``i``."""
        return self._per_dataset("family_fractions")[i] or {}

    def max_episodes_for(self, i: int) -> int | None:
        """The training-episode cap of dataset ``i`` (None: all)."""
        return self._per_dataset("max_episodes")[i]
