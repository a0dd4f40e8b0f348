"""An exponential moving average of a model's weights (Polyak averaging), for training.

The trainer steps the model as usual and, after every optimizer step, pulls a shadow copy of the
weights a little toward the new ones::

    shadow <- decay * shadow + (1 - decay) * weights

The shadow is what gets validated and shipped; the raw weights keep training. The effective decay
warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the average does not stay
anchored to the random initialisation (or, in a fine-tune, to the starting checkpoint) for the
first ``1 / (1 - decay)`` steps. The same cap means a run of ``n`` steps never averages with a
decay above ``(1 + n) / (10 + n)`` (0.99925 after 12,000 steps): larger decays give the same
weights. Floating-point buffers (the normalisation statistics) are averaged the same way, which
leaves constants unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PREFIX = "ema."  # key prefix of the shadow tensors in a trainer-state file


class WeightAverage:
    """The shadow weights of ``model`` (same names as its ``state_dict``)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"the averaging decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        live = model.state_dict()
        for key, avg in self.shadow.items():
            avg.lerp_(live[key], weight)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Within the block ``model`` holds the shadow weights; the raw ones come back afterwards."""
        live = model.state_dict()
        raw = {k: live[k].detach().clone() for k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(raw, strict=False)

    # -- trainer state (safetensors tensors + JSON scalars, no pickle) ---------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        return {PREFIX + k: v.contiguous() for k, v in self.shadow.items()}

    def scalars(self) -> dict[str, float | int]:
        return {"decay": self.decay, "updates": self.updates}

    def restore(self, tensors: dict[str, torch.Tensor], scalars: dict[str, float | int]) -> None:
        """Load a saved shadow; a missing, partial or differently-shaped one raises ValueError."""
        saved = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
        if saved.keys() != self.shadow.keys() or any(saved[k].shape != v.shape for k, v in self.shadow.items()):
            raise ValueError("the checkpoint's weight average does not match this model (was it saved without one?)")
        for key, avg in self.shadow.items():
            avg.copy_(saved[key])
        self.updates = int(scalars["updates"])
