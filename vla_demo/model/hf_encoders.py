"""Adapters around any ``transformers`` vision or text backbone (SigLIP, CLIP, ViT, BERT, ...).

A user with internet loads a hub model (``HFVisionEncoder.from_pretrained("google/siglip-base-patch16-224", d_out=128)``);
tests use tiny random models saved to a temp folder. The adapters do their own resizing and
normalisation (mean/std from the backbone's ``preprocessor_config.json`` when present, otherwise
configured; no image-processor classes, no torchvision). Each adapter describes itself with a
JSON ``spec`` (backbone config, preprocessing, tokenizer), so a checkpoint rebuilds it offline
with :meth:`from_spec` and then loads the backbone's weights from its own ``model.safetensors``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_MEAN = (0.5, 0.5, 0.5)


def _load_backbone(path: str, tower: str):
    """AutoModel from a folder or hub id; dual models (CLIP, SigLIP) give their ``tower``."""
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load a transformers model from {path!r}: {e}") from None
    return getattr(model, tower, model)


def _from_config(config_dict: dict[str, Any]):
    from transformers import AutoConfig, AutoModel

    cfg = dict(config_dict)
    model_type = cfg.pop("model_type", None)
    if not model_type:
        raise ValueError("backbone spec has no model_type")
    return AutoModel.from_config(AutoConfig.for_model(model_type, **cfg))


def _image_size(config) -> tuple[int, int]:
    size = getattr(config, "image_size", None)
    if size is None:
        raise ValueError(f"{type(config).__name__} has no image_size; pass image_size=")
    return (size, size) if isinstance(size, int) else tuple(size)


def _preprocessing(path: str, mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    file = Path(path) / "preprocessor_config.json"
    if file.is_file():
        cfg = json.loads(file.read_text(encoding="utf-8"))
        if "image_mean" in cfg and "image_std" in cfg:
            return tuple(cfg["image_mean"]), tuple(cfg["image_std"])
    return tuple(mean or DEFAULT_MEAN), tuple(std or DEFAULT_MEAN)


class HFVisionEncoder(nn.Module):
    """Backbone patch tokens -> (B, N, d_out); images in [0, 1], any size.

    Attributes:
        grid: (gh, gw) layout of the patch tokens (for attention maps).
        out_dim: d_out.
    """

    def __init__(self, backbone: nn.Module, d_out: int, image_size: tuple[int, int], mean, std):
        super().__init__()
        self.backbone = backbone
        self.image_size = tuple(image_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        hidden = backbone.config.hidden_size
        self.proj = nn.Linear(hidden, d_out)
        self.out_dim = d_out
        with torch.no_grad():
            n = self._hidden(torch.zeros(1, 3, *self.image_size)).shape[1]
        g = math.isqrt(n)
        self._drop_cls = g * g != n and math.isqrt(n - 1) ** 2 == n - 1
        g = math.isqrt(n - 1) if self._drop_cls else g
        if g * g != (n - 1 if self._drop_cls else n):
            raise ValueError(f"cannot lay {n} backbone tokens out on a square grid")
        self.grid = (g, g)

    @classmethod
    def from_pretrained(cls, path: str, d_out: int, image_size: int | None = None, mean=None, std=None) -> HFVisionEncoder:
        backbone = _load_backbone(path, "vision_model")
        size = (image_size, image_size) if image_size else _image_size(backbone.config)
        mean, std = _preprocessing(path, mean, std)
        return cls(backbone, d_out, size, mean, std)

    def spec(self) -> dict[str, Any]:
        return {
            "type": "hf_vision",
            "backbone_config": self.backbone.config.to_dict(),
            "image_size": list(self.image_size),
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "d_out": self.out_dim,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> HFVisionEncoder:
        if spec.get("type") != "hf_vision":
            raise ValueError(f"not a vision adapter spec: type {spec.get('type')!r}")
        return cls(_from_config(spec["backbone_config"]), spec["d_out"], spec["image_size"], spec["mean"], spec["std"])

    def _hidden(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values=pixels).last_hidden_state  # (B, N, D)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        h = self._hidden((images - self.mean) / self.std)
        if self._drop_cls:
            h = h[:, 1:]
        return self.proj(h)  # (B, gh*gw, d_out)


class HFTextEncoder(nn.Module):
    """Backbone token states -> (tokens (B, T, d_out), masked-mean sentence (B, d_out)).

    ``tokenizer`` (not a submodule) is the backbone's own fast tokenizer; the policy uses it.
    """

    def __init__(self, backbone: nn.Module, d_out: int, tokenizer):
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(backbone.config.hidden_size, d_out)
        self.out_dim = d_out
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, path: str, d_out: int) -> HFTextEncoder:
        from transformers import AutoTokenizer

        backbone = _load_backbone(path, "text_model")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load the tokenizer of {path!r}: {e}") from None
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"the tokenizer of {path!r} is not a fast tokenizer (needed for word alignment)")
        return cls(backbone, d_out, tokenizer)

    def spec(self) -> dict[str, Any]:
        specials = {k: v for k, v in self.tokenizer.special_tokens_map.items() if isinstance(v, str)}
        return {
            "type": "hf_text",
            "backbone_config": self.backbone.config.to_dict(),
            "d_out": self.out_dim,
            "tokenizer": self.tokenizer.backend_tokenizer.to_str(),
            "special_tokens": specials,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> HFTextEncoder:
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        if spec.get("type") != "hf_text":
            raise ValueError(f"not a text adapter spec: type {spec.get('type')!r}")
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(spec["tokenizer"]), **spec["special_tokens"])
        return cls(_from_config(spec["backbone_config"]), spec["d_out"], tok)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = mask.bool()
        keep = mask | ~mask.any(dim=1, keepdim=True)  # an empty instruction still runs
        h = self.backbone(input_ids=ids, attention_mask=keep.long()).last_hidden_state  # (B, T, D)
        tokens = self.proj(h)  # (B, T, d_out)
        m = mask.unsqueeze(-1).to(tokens.dtype)
        return tokens, (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)
