"""Training. ``train_vla(model, dataset, epochs)`` keeps the reference design's signature.

The full trainer (data mixing, schedules, checkpoints, DDP) builds on the same step: tokenise,
forward, ``model.loss``, backward, clip, step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from vla_demo.constants import ACTION, ACTION_IS_PAD, OBS_IMAGE_FRONT, OBS_STATE, TASK


def word_dropout(ids: torch.Tensor, mask: torch.Tensor, unk_id: int | None, p: float, generator=None) -> torch.Tensor:
    """Replace real tokens by the unknown token with probability ``p`` (so unknown words at test
    time look like something the model has seen)."""
    if p <= 0 or unk_id is None:
        return ids
    drop = (torch.rand(ids.shape, generator=generator) < p) & mask
    return torch.where(drop, torch.full_like(ids, unk_id), ids)


def as_image_batch(images: Any, size: int) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] or (B, H, W, 3) uint8 -> (B, 3, size, size) float in [0, 1]."""
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.dtype == torch.uint8:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"uint8 image batches must be (B, H, W, 3), got {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float() / 255
    elif x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"float image batches must be (B, 3, H, W) in [0, 1], got {tuple(x.shape)}")
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.float()


def _batch_parts(batch: dict[str, Any], model, word_drop: float):
    """Accept the seed's ``{'images', 'instructions', 'actions'}`` batches or feature-keyed ones."""
    images = batch.get("images", batch.get(OBS_IMAGE_FRONT))
    text = batch.get("instructions", batch.get(TASK))
    actions = batch.get("actions", batch.get(ACTION))
    if images is None or text is None or actions is None:
        raise ValueError(f"a batch needs images, instructions and actions; got keys {sorted(batch)}")
    x = as_image_batch(images, model.config.image_size)
    if isinstance(text, torch.Tensor):  # already token ids
        ids = text.long()
        pad = model.tokenizer.pad_id if model.tokenizer is not None else 0
        mask = ids != pad
    else:
        if model.tokenizer is None:
            raise ValueError("string instructions need a tokenizer attached to the model (model.tokenizer)")
        enc = model.tokenizer(list(text))
        ids, mask = enc.input_ids, enc.attention_mask
    ids = word_dropout(ids, mask, model.tokenizer.unk_id if model.tokenizer is not None else None, word_drop)
    a = torch.as_tensor(actions, dtype=torch.float32)
    is_pad = batch.get(ACTION_IS_PAD)
    if a.ndim == 2:  # one action per sample: supervise the first step of the chunk only
        H = model.config.chunk_size
        a = a.unsqueeze(1).expand(-1, H, -1)
        is_pad = torch.ones(a.shape[:2], dtype=torch.bool)
        is_pad[:, 0] = False
    state = batch.get(OBS_STATE)
    state = None if state is None else torch.as_tensor(state, dtype=torch.float32)
    return x, ids, mask, state, a, is_pad


def train_vla(model, dataset: Iterable[dict[str, Any]], epochs: int, lr: float = 1e-4, word_drop: float = 0.1,
              grad_clip: float = 1.0, progress: bool = True) -> list[float]:
    """Train ``model`` (a VLAModel or a LanguageConditionedPolicy) with AdamW on an iterable of batches.

    Args:
        model: the model; string instructions are tokenised by ``model.tokenizer``.
        dataset: re-iterable batches ``{'images', 'instructions', 'actions'}`` (the reference form)
            or keyed by feature names (``observation.images.front``, ``task``, ``action``, ...).
        epochs: passes over ``dataset``.
        lr: AdamW learning rate (the reference design's 1e-4).
        word_drop: probability of replacing a word by the unknown token.

    Returns:
        the mean loss of each epoch.
    """
    from tqdm import tqdm

    model = getattr(model, "model", model)  # a policy wraps its model
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    history = []
    model.train()
    try:
        for epoch in tqdm(range(epochs), desc="train_vla", unit="epoch", disable=not progress):
            losses = []
            for batch in dataset:
                x, ids, mask, state, actions, is_pad = _batch_parts(batch, model, word_drop)
                out = model(x, ids, mask, state)["out"]
                loss, _ = model.loss(out, actions, is_pad)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                losses.append(loss.item())
            if not losses:
                raise ValueError("the dataset yielded no batches")
            history.append(float(np.mean(losses)))
    finally:
        model.eval()
    return history
