"""Adapters around any ``transformers`` vision or text backbone (SigLIP, CLIP, ViT, BERT, ...).

A user with internet loads a hub model (``HFVisionEncoder.from_pretrained("google/siglip-base-patch16-224", d_out=128)``);
tests use tiny random models saved to a temp folder. The adapters do their own resizing and
normalisation (mean/std from the backbone's ``preprocessor_config.json`` when present, otherwise
configured; no image-processor classes, no torchvision). Each adapter describes itself with a
JSON ``spec`` (backbone config, preprocessing, tokenizer), so a checkpoint rebuilds it offline
with :meth:`from_spec` and then loads the backbone's weights from its own ``model.safetensors``.

Backbones always run in float32: ``transformers`` 5 loads weights in their saved dtype by default
(``dtype="auto"``), which would make a bf16 hub checkpoint reject float32 images.
``transformers`` and ``tokenizers`` are imported lazily (importing them takes seconds).
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
# Any of these marks a local folder as holding a tokenizer (transformers 5 otherwise builds an
# empty-vocabulary tokenizer from config.json alone, without complaint).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "tokenizer.model", "sentencepiece.bpe.model")
_NO_LIMIT = 10**9  # tokenizers without a real max length report ~1e30


def _tower(model: nn.Module, name: str) -> nn.Module:
    """The ``name`` tower of a dual model (CLIP, SigLIP), unwrapped down to the innermost one.

    Applied identically after ``from_pretrained`` and ``from_config`` so both give the same
    module class, hence the same state_dict keys.
    """
    while isinstance(getattr(model, name, None), nn.Module):
        model = getattr(model, name)
    return model


def _load_backbone(path: str, tower: str) -> nn.Module:
    """AutoModel from a folder or hub id, in float32; dual models give their ``tower``.

    Raises:
        ValueError: nothing loadable at ``path`` (the message names it).
    """
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load a transformers model from {path!r}: {e}") from None
    return _tower(model, tower)


def _from_config(config_dict: dict[str, Any], tower: str) -> nn.Module:
    """A randomly initialised float32 backbone from a ``config.to_dict()``, unwrapped like :func:`_load_backbone`."""
    from transformers import AutoConfig, AutoModel

    cfg = dict(config_dict)
    model_type = cfg.pop("model_type", None)
    if not model_type:
        raise ValueError("backbone spec has no model_type")
    try:
        config = AutoConfig.for_model(model_type, **cfg)
    except (KeyError, ValueError) as e:
        raise ValueError(f"cannot build a {model_type!r} config from the backbone spec: {e}") from None
    return _tower(AutoModel.from_config(config, dtype=torch.float32), tower)


def _pair(size: int | tuple[int, int] | list[int], what: str) -> tuple[int, int]:
    """(h, w) from an int or a pair."""
    pair = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{what} must be a positive int or (h, w), got {size!r}")
    return pair


def _config_image_size(config) -> tuple[int, int]:
    size = getattr(config, "image_size", None)
    if size is None:
        raise ValueError(f"{type(config).__name__} has no image_size; pass image_size=")
    return _pair(size, "config.image_size")


def _preprocessing(path: str, mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean/std: ``<path>/preprocessor_config.json`` if it has them, else the given ones, else 0.5."""
    file = Path(path) / "preprocessor_config.json"
    if file.is_file():
        cfg = json.loads(file.read_text(encoding="utf-8"))
        if "image_mean" in cfg and "image_std" in cfg:
            mean, std = cfg["image_mean"], cfg["image_std"]
    mean, std = tuple(mean or DEFAULT_MEAN), tuple(std or DEFAULT_MEAN)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std need 3 values (std > 0), got mean={mean} std={std}")
    return mean, std


def _token_layout(n: int, size: tuple[int, int], patch) -> tuple[tuple[int, int], bool]:
    """(gh, gw) of ``n`` backbone tokens, and whether the first token is a CLS token to drop.

    The grid comes from ``size // patch`` when the config has a patch size that fits ``n``,
    otherwise from a square layout (``n == g*g`` keeps all, ``n == g*g + 1`` drops the first).
    """
    grids = []
    if patch:
        ph, pw = _pair(patch, "config.patch_size")
        grids.append((size[0] // ph, size[1] // pw))
    grids += [(math.isqrt(m), math.isqrt(m)) for m in (n, n - 1) if m > 0]
    for gh, gw in grids:
        if gh * gw == n:
            return (gh, gw), False
        if gh * gw == n - 1:
            return (gh, gw), True
    raise ValueError(f"cannot lay {n} backbone tokens out on a grid (with or without a CLS token)")


class HFVisionEncoder(nn.Module):
    """Backbone patch tokens -> (B, N, d_out); images float (B, 3, H, W) in [0, 1], any H, W.

    Attributes:
        backbone: the ``transformers`` vision model (or a dual model's vision tower).
        image_size: (h, w) the images are resized to.
        grid: (gh, gw) layout of the patch tokens (for attention maps).
        n_tokens: gh * gw, the number of tokens ``forward`` returns.
        out_dim: d_out.
        mean, std: (1, 3, 1, 1) normalisation buffers.
    """

    def __init__(self, backbone: nn.Module, d_out: int, image_size: int | tuple[int, int], mean, std):
        super().__init__()
        self.backbone = backbone
        self.image_size = _pair(image_size, "image_size")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.proj = nn.Linear(backbone.config.hidden_size, d_out)
        self.out_dim = d_out
        self.grid, self._drop_cls = self._probe_layout()
        self.n_tokens = self.grid[0] * self.grid[1]

    def _probe_layout(self) -> tuple[tuple[int, int], bool]:
        """Run a zero image through the backbone once to find the token layout."""
        try:
            with torch.no_grad():
                n = self._hidden(torch.zeros(1, 3, *self.image_size)).shape[1]
        except (TypeError, RuntimeError, ValueError) as e:
            raise ValueError(f"{type(self.backbone).__name__} cannot encode {self.image_size} images: {e}") from None
        return _token_layout(n, self.image_size, getattr(self.backbone.config, "patch_size", None))

    @classmethod
    def from_pretrained(cls, path: str, d_out: int, image_size: int | tuple[int, int] | None = None,
                        mean=None, std=None) -> HFVisionEncoder:
        """Load a backbone with ``AutoModel`` (a dual model's ``vision_model``) and add a projection.

        Args:
            path: a local folder or, with internet, a hub id.
            d_out: width of the returned tokens.
            image_size: resize target; defaults to the backbone's ``config.image_size``.
            mean, std: used when ``<path>/preprocessor_config.json`` has no ``image_mean``/``image_std``
                (default 0.5 each).

        Raises:
            ValueError: nothing loadable at ``path``, or the backbone is not an image model.
        """
        backbone = _load_backbone(path, "vision_model")
        size = _pair(image_size, "image_size") if image_size else _config_image_size(backbone.config)
        mean, std = _preprocessing(path, mean, std)
        return cls(backbone, d_out, size, mean, std)

    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description; :meth:`from_spec` rebuilds the module (random weights) from it."""
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
        """Rebuild offline from :meth:`spec`; load the weights afterwards with ``load_state_dict``."""
        if spec.get("type") != "hf_vision":
            raise ValueError(f"not a vision adapter spec: type {spec.get('type')!r}")
        backbone = _from_config(spec["backbone_config"], "vision_model")
        return cls(backbone, spec["d_out"], spec["image_size"], spec["mean"], spec["std"])

    def _hidden(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values=pixels).last_hidden_state  # (B, N, D)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> (B, gh*gw, d_out)."""
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"expected float images of shape (B, 3, H, W) in [0, 1], got {images.dtype} "
                             f"{tuple(images.shape)}")
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        h = self._hidden((images.float() - self.mean) / self.std)  # (B, N, D)
        if self._drop_cls:
            h = h[:, 1:]  # (B, gh*gw, D)
        return self.proj(h)  # (B, gh*gw, d_out)


class HFTextEncoder(nn.Module):
    """Backbone token states -> (tokens (B, T, d_out), masked-mean sentence (B, d_out)).

    Attributes:
        backbone: the ``transformers`` text model (or a dual model's text tower).
        tokenizer: the backbone's own fast tokenizer (not a submodule); the policy uses it.
        out_dim: d_out.
    """

    def __init__(self, backbone: nn.Module, d_out: int, tokenizer):
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(backbone.config.hidden_size, d_out)
        self.out_dim = d_out
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, path: str, d_out: int) -> HFTextEncoder:
        """Load a backbone (a dual model's ``text_model``) and its fast tokenizer from ``path``.

        Raises:
            ValueError: no model or no fast tokenizer at ``path`` (the message names it).
        """
        from transformers import AutoTokenizer

        backbone = _load_backbone(path, "text_model")
        if Path(path).is_dir() and not any((Path(path) / f).is_file() for f in TOKENIZER_FILES):
            raise ValueError(f"{path!r} has a model but no tokenizer files (one of {', '.join(TOKENIZER_FILES)})")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load the tokenizer of {path!r}: {e}") from None
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"the tokenizer of {path!r} is not a fast tokenizer (needed for word alignment)")
        return cls(backbone, d_out, tokenizer)

    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description, tokenizer included; see :meth:`from_spec`."""
        tok = self.tokenizer
        limit = getattr(tok, "model_max_length", None)
        return {
            "type": "hf_text",
            "backbone_config": self.backbone.config.to_dict(),
            "d_out": self.out_dim,
            "tokenizer": tok.backend_tokenizer.to_str(),
            "special_tokens": {k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)},
            "padding_side": tok.padding_side,
            "model_max_length": limit if isinstance(limit, int) and limit < _NO_LIMIT else None,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> HFTextEncoder:
        """Rebuild backbone (random weights) and tokenizer offline; load weights with ``load_state_dict``."""
        if spec.get("type") != "hf_text":
            raise ValueError(f"not a text adapter spec: type {spec.get('type')!r}")
        return cls(_from_config(spec["backbone_config"], "text_model"), spec["d_out"], _tokenizer_from_spec(spec))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T), mask (B, T) bool or 0/1 -> (tokens (B, T, d_out), pooled (B, d_out)).

        ``pooled`` averages the valid tokens only; an all-padding row gives zeros.
        """
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(f"expected input_ids and attention_mask of shape (B, T), got {tuple(input_ids.shape)} "
                             f"and {tuple(attention_mask.shape)}")
        mask = attention_mask.bool()
        keep = mask | ~mask.any(dim=1, keepdim=True)  # an empty instruction still runs
        h = self.backbone(input_ids=input_ids, attention_mask=keep.long()).last_hidden_state  # (B, T, D)
        tokens = self.proj(h)  # (B, T, d_out)
        m = mask.unsqueeze(-1).to(tokens.dtype)  # (B, T, 1)
        return tokens, (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)


def _tokenizer_from_spec(spec: dict[str, Any]):
    """A ``PreTrainedTokenizerFast`` from the serialised ``tokenizers.Tokenizer`` in a text spec."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    extra = {k: spec[k] for k in ("padding_side", "model_max_length") if spec.get(k) is not None}
    try:
        backend = Tokenizer.from_str(spec["tokenizer"])
    except Exception as e:  # tokenizers raises its own Exception type for bad JSON
        raise ValueError(f"text spec has an unreadable tokenizer: {e}") from None
    return PreTrainedTokenizerFast(tokenizer_object=backend, **spec.get("special_tokens", {}), **extra)
