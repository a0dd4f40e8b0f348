"""LanguageConditionedPolicy: images + typed instructions in, 7-D actions out.

The seed's usage holds: ``policy.act(image, "pick up the red cube") -> np.ndarray (7,)`` (stateless,
the first action of a fresh prediction). On top of it:

* ``reset()`` / ``select_action(obs)``: stateful closed-loop control that executes predicted
  chunks from a queue (``n_action_steps`` at a time) or blends overlapping chunks with temporal
  ensembling (ACT), the lerobot policy contract.
* ``predict(image, instruction, state=None, return_attention=False) -> Prediction`` with the chunk
  and, on request, attention over image patches (per layer and head, and a rollout) and over the
  words as typed.
* ``forward(batch) -> (loss, logs)`` for training, ``save_pretrained`` / ``from_pretrained``
  (config.json + model.safetensors + tokenizer.json + README.md; no pickle anywhere).

Images may be uint8 or float (in [0, 1]), HxW (grey), HxWx1, HxWx3 or HxWx4 (alpha dropped), any
size, or PIL images; anything else raises ``ValueError`` saying what was expected.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_demo.constants import (ACTION, ACTION_IS_PAD, GOAL_POSITIONS, OBJECT_LABELS, OBS_IMAGE_FRONT, OBS_IMAGE_WRIST,
                                OBS_STATE, TASK)
from vla_demo.model import checkpoint
from vla_demo.model.tokenizer import InstructionTokenizer, word_dropout
from vla_demo.model.vla import ModelConfig, VLAModel, build_model
from vla_demo.sim.tasks import word_roles

@dataclass
class PolicyConfig:
    """Inference behaviour (serialised with the checkpoint).

    Attributes:
        n_action_steps: actions executed from each predicted chunk before predicting again.
        temporal_ensemble: blend every overlapping chunk's prediction for the current step
            (predicts every step; ``n_action_steps`` is then ignored).
        ensemble_decay: weight ``exp(-decay * age)`` of older predictions when ensembling.
    """

    n_action_steps: int = 4
    temporal_ensemble: bool = False
    ensemble_decay: float = 0.01

    def __post_init__(self) -> None:
        if self.n_action_steps < 1:
            raise ValueError(f"n_action_steps must be >= 1, got {self.n_action_steps}")
        if self.ensemble_decay < 0:
            raise ValueError(f"ensemble_decay must be >= 0, got {self.ensemble_decay}")


@dataclass
class Attention:
    """What the policy looked at for one prediction.

    Attributes:
        image: (layers, heads, gh, gw) the readout token's attention over the image patches.
        image_rollout: (gh, gw) attention rollout over all layers, summing to 1.
        words: (typed word, weight) pairs, weights summing to 1 (0 for an empty instruction).
        word_layers: (layers, n_words) the readout's attention per typed word and layer.
    """

    image: np.ndarray
    image_rollout: np.ndarray
    words: list[tuple[str, float]]
    word_layers: np.ndarray


@dataclass
class Prediction:
    action: np.ndarray  # (7,) the first action of the chunk
    chunk: np.ndarray  # (H, 7)
    attention: Attention | None = None
    goal: np.ndarray | None = None  # (2, 3) where the goal head thinks the target is and should go, m


# ----------------------------------------------------------------------------- images


def to_image_array(image: Any) -> np.ndarray:
    """Any supported image -> (H, W, 3) uint8; ValueError naming the expectation otherwise."""
    expected = "an HxW, HxWx1, HxWx3 or HxWx4 array (uint8, or float in [0, 1]) or a PIL image"
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL, without importing it
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        raise ValueError(f"expected {expected}, got a torch tensor (convert it with .cpu().numpy() in HWC order)")
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected {expected}, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 2:
        raise ValueError(f"expected {expected}, got shape {image.shape}")
    if image.dtype == np.uint8:
        out = image
    elif np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)):
            raise ValueError("image has NaN or inf values")
        if image.min() < 0 or image.max() > 1:
            raise ValueError(f"float images must be in [0, 1], got range [{image.min():.3g}, {image.max():.3g}]")
        out = (image * 255 + 0.5).astype(np.uint8)
    else:
        raise ValueError(f"expected {expected}, got dtype {image.dtype}")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out[:, :, :3])


def prepare_images(images: list[Any], size: int) -> torch.Tensor:
    """List of images -> (B, 3, size, size) float in [0, 1]."""
    import cv2

    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, img in enumerate(images):
        arr = to_image_array(img)
        if arr.shape[:2] != (size, size):
            shrink = arr.shape[0] > size or arr.shape[1] > size
            arr = cv2.resize(arr, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        out[i] = arr
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255)


def fit_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) float batch resized (antialiased) to (B, 3, size, size) when it is not already."""
    if images.shape[-2:] == (size, size):
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def prepare_state(state: Any, dim: int) -> torch.Tensor | None:
    if state is None:
        return None
    s = np.asarray(state, dtype=np.float32)
    if s.shape != (dim,) or not np.all(np.isfinite(s)):
        raise ValueError(f"state must be {dim} finite numbers, got shape {s.shape}")
    return torch.from_numpy(s).unsqueeze(0)


# ----------------------------------------------------------------------------- the policy


class LanguageConditionedPolicy:
    """A VLA model with its tokenizer, normalisation and inference-time action queue.

    Args:
        model: the :class:`VLAModel`.
        tokenizer: an :class:`InstructionTokenizer` (or a ``transformers`` fast tokenizer).
        config: inference behaviour.
    """

    def __init__(self, model: VLAModel, tokenizer, config: PolicyConfig | None = None):
        if not isinstance(tokenizer, InstructionTokenizer):
            tokenizer = InstructionTokenizer(tokenizer, model.config.max_text_len)
        self.model = model.eval()
        self.tokenizer = tokenizer
        model.tokenizer = tokenizer
        self.config = config or PolicyConfig()
        self.last_prediction: Prediction | None = None
        # Closed-loop predictions also compute attention (a display showing it then needs no
        # second forward pass); off for evaluation and training.
        self.attention_in_loop = False
        self.reset()

    @classmethod
    def build(cls, preset: str = "default", tokenizer: InstructionTokenizer | None = None,
              config: PolicyConfig | None = None, seed: int = 0, **overrides: Any) -> LanguageConditionedPolicy:
        """A freshly initialised policy from a preset, with the grammar's tokenizer by default."""
        tokenizer = tokenizer or InstructionTokenizer.train()
        cfg = ModelConfig.from_preset(preset, vocab_size=tokenizer.vocab_size, max_text_len=tokenizer.max_length, **overrides)
        torch.manual_seed(seed)
        return cls(build_model(cfg), tokenizer, config)

    @classmethod
    def with_backbones(cls, vision: str | None = None, text: str | None = None, preset: str = "default",
                       config: PolicyConfig | None = None, seed: int = 0, **overrides: Any) -> LanguageConditionedPolicy:
        """A policy on ``transformers`` backbones (a folder or, with internet, a hub id) for the
        vision and/or the language side; the other side stays built in. The checkpoint embeds the
        backbones' configs and weights, so it loads offline."""
        from vla_demo.model.hf_encoders import HFTextEncoder, HFVisionEncoder
        from vla_demo.model.vla import VLAModel

        torch.manual_seed(seed)
        base = ModelConfig.from_preset(preset, **overrides)
        d = base.d_model
        venc = HFVisionEncoder.from_pretrained(vision, d) if vision else None
        tenc = HFTextEncoder.from_pretrained(text, d) if text else None
        tokenizer = InstructionTokenizer(tenc.tokenizer, base.max_text_len) if tenc else InstructionTokenizer.train(max_length=base.max_text_len)
        cfg = dataclasses.replace(
            base,
            vision="hf" if venc else base.vision, vision_spec=venc.spec() if venc else None,
            image_size=venc.image_size[0] if venc else base.image_size,
            text="hf" if tenc else base.text, text_spec=tenc.spec() if tenc else None,
            vocab_size=tokenizer.vocab_size,
        )
        built = build_model(cfg)  # built-in parts, and the right shapes for everything
        model = VLAModel(venc or built.vision, tenc or built.language, cfg.action_dim, cfg)
        return cls(model, tokenizer, config)

    # ------------------------------------------------------------------ inference
    def reset(self) -> None:
        """Forget queued actions; call on every env reset and instruction change."""
        self._queue: deque[np.ndarray] = deque()
        self._history: deque[tuple[int, np.ndarray]] = deque()
        self._t = 0

    @property
    def needs_wrist(self) -> bool:
        """True when the model also sees the wrist camera (the env must render it)."""
        return bool(self.model.config.wrist)

    @torch.inference_mode()
    def predict(self, image, instruction: str, state=None, return_attention: bool = False, wrist=None) -> Prediction:
        """One fresh prediction: the action chunk, and attention when asked.

        ``wrist`` is the wrist camera's image, required by (and only used by) a policy that
        ``needs_wrist``."""
        m = self.model
        if not isinstance(instruction, str):
            raise ValueError(f"instruction must be a string, got {type(instruction).__name__}")
        if self.needs_wrist and wrist is None:
            raise ValueError("this policy also needs the wrist camera's image (an env made with wrist_camera=True); "
                             "the webcam and front-only sims cannot drive it")
        images = prepare_images([image], m.config.image_size)
        hand = prepare_images([wrist], m.config.wrist_image_size) if self.needs_wrist else None
        enc = self.tokenizer([instruction])
        st = prepare_state(state, m.config.state_dim)
        res = m(images, enc.input_ids, enc.attention_mask, st, need_weights=return_attention, wrist=hand)
        chunk = m.decode(res["out"])[0].numpy().astype(np.float32)  # (H, A)
        attention = None
        if return_attention:
            attention = summarize_attention(res["attention"], res["layout"], m.grid, enc.words[0], enc.token_words[0])
        goal = None if res["goal"] is None else m.decode_goal(res["goal"])[0].numpy().reshape(2, 3)
        self.last_prediction = Prediction(chunk[0].copy(), chunk, attention, goal)
        return self.last_prediction

    def act(self, image, instruction: str, state=None) -> np.ndarray:
        """Stateless: the first action of a fresh prediction, (7,) float32 numpy."""
        return self.predict(image, instruction, state).action

    def select_action(self, obs: dict[str, Any]) -> np.ndarray:
        """Stateful closed-loop control from an env observation."""
        image, text, state, wrist = obs[OBS_IMAGE_FRONT], obs[TASK], obs.get(OBS_STATE), obs.get(OBS_IMAGE_WRIST)
        if self.config.temporal_ensemble:
            return self._ensembled(image, text, state, wrist)
        if not self._queue:
            chunk = self.predict(image, text, state, return_attention=self.attention_in_loop, wrist=wrist).chunk
            self._queue.extend(chunk[: self.config.n_action_steps])
        return self._queue.popleft()

    def _ensembled(self, image, text, state, wrist) -> np.ndarray:
        chunk = self.predict(image, text, state, return_attention=self.attention_in_loop, wrist=wrist).chunk
        H = len(chunk)
        self._history.append((self._t, chunk))
        while self._history and self._history[0][0] <= self._t - H:
            self._history.popleft()
        # ACT's scheme: the oldest prediction for this step gets weight 1, newer ones exp(-k i).
        preds = np.stack([c[self._t - start] for start, c in self._history])  # (n, A), oldest first
        w = np.exp(-self.config.ensemble_decay * np.arange(len(preds)))
        self._t += 1
        action = (preds * (w / w.sum())[:, None]).sum(0).astype(np.float32)
        if self.model.config.separate_gripper:
            action[-1] = float(action[-1] >= 0.5)  # a blended open/closed command is still binary
        return action

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict[str, Any], module: torch.nn.Module | None = None, word_drop: float = 0.0,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss on a batch keyed like the training view (ARCHITECTURE section 4).

        ``module`` is what runs the model (the trainer passes its DDP wrapper, so gradients are
        synchronised); ``word_drop`` replaces that share of the instruction's words by the unknown
        token, drawn from ``generator``.
        """
        m = self.model
        images = fit_batch(batch[OBS_IMAGE_FRONT], m.config.image_size)
        hand = None
        if self.needs_wrist:
            if OBS_IMAGE_WRIST not in batch:
                raise ValueError(f"this policy also sees the wrist camera: the batch needs {OBS_IMAGE_WRIST!r}")
            hand = fit_batch(batch[OBS_IMAGE_WRIST], m.config.wrist_image_size)
        enc = self.tokenizer(list(batch[TASK]))
        ids = word_dropout(enc.input_ids, enc.attention_mask, self.tokenizer.unk_id, word_drop, generator)
        res = (module or m)(images, ids, enc.attention_mask, batch.get(OBS_STATE), wrist=hand)
        roles = None
        if res["roles"] is not None:  # a dropped word's role is not the model's to know
            roles = self.tokenizer.word_labels(list(batch[TASK]), word_roles).masked_fill(ids != enc.input_ids, -1)
        return m.loss(res["out"], batch[ACTION], batch.get(ACTION_IS_PAD), res["goal"], batch.get(GOAL_POSITIONS),
                      res["roles"], roles, res["feature_maps"], batch.get(OBJECT_LABELS), res["shape_maps"])

    # ------------------------------------------------------------------ files
    def save_pretrained(self, directory: str | Path, card: str | None = None, extra=None) -> Path:
        """Write config.json, model.safetensors, tokenizer.json and a README.md model card
        (atomically: into a temp folder renamed into place; ``extra(tmp)`` may add files)."""
        return checkpoint.save_policy(self, Path(directory), card, extra)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> LanguageConditionedPolicy:
        """Load a checkpoint folder; shape/config mismatches and corrupt files raise ValueError."""
        return checkpoint.load_policy(cls, Path(directory))

    def config_dict(self) -> dict[str, Any]:
        return {
            "format": checkpoint.FORMAT,
            "model": self.model.config.to_dict(),
            "policy": dataclasses.asdict(self.config),
            "tokenizer": {"max_length": self.tokenizer.max_length, "special_tokens": self.tokenizer.special_tokens()},
        }

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def __repr__(self) -> str:
        c = self.model.config
        return f"LanguageConditionedPolicy({c.preset}: d{c.d_model} x{c.n_layers}, {self.num_parameters() / 1e6:.2f}M params)"


# ----------------------------------------------------------------------------- attention


def summarize_attention(layers: list[torch.Tensor], layout: dict, grid: tuple[int, int], words: list[str],
                        token_words: list[int]) -> Attention:
    """Per-layer attention maps (1, heads, S, S) -> the readout's view of patches and words. The
    last layer may hold the readout's row only, (1, heads, 1, S) (the fusion computes no more)."""
    readout = torch.stack([a[0, :, 0] for a in layers])  # (L, nh, S): each row sums to 1 over all tokens
    v0, v1 = layout["vision"]
    t0, _ = layout["language"]
    image = readout[:, :, v0:v1].reshape(readout.size(0), readout.size(1), *grid)
    rollout = attention_rollout([a[0] for a in layers])[v0:v1]
    rollout = rollout / rollout.sum().clamp(min=1e-12)
    text = readout[:, :, t0:].mean(1)  # (L, T) averaged over heads
    word_layers = torch.zeros(readout.size(0), len(words))
    for tok, w in enumerate(token_words):
        if w >= 0 and tok < text.size(1):
            word_layers[:, w] += text[:, tok]
    totals = word_layers.sum(0)
    weights = (totals / totals.sum()).tolist() if totals.sum() > 0 else [0.0] * len(words)
    return Attention(
        image=image.numpy().astype(np.float32),
        image_rollout=rollout.reshape(grid).numpy().astype(np.float32),
        words=list(zip(words, weights, strict=True)),
        word_layers=word_layers.numpy().astype(np.float32),
    )


def attention_rollout(layers: list[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema's rollout: head-averaged attention plus the residual, multiplied through
    the layers; returns the readout token's row (S,). ``layers``: (nh, S, S) each, the last one
    possibly (nh, 1, S), the readout's row (all the product's first row needs from it)."""
    S = layers[0].size(-1)
    eye = torch.eye(S)
    joint = eye
    for layer in layers:
        att = layer.mean(0)  # (S or 1, S)
        a = 0.5 * att + 0.5 * eye[: att.size(0)]
        a = a / a.sum(-1, keepdim=True)
        joint = a @ joint
    return joint[0]

