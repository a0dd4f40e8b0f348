"""Policy checkpoints: a folder with config.json, model.safetensors, tokenizer.json and README.md.

No pickle anywhere: tensors go through safetensors, everything else is JSON. A checkpoint built on
a ``transformers`` backbone carries that backbone's config (in config.json) and weights (in
model.safetensors), so it loads offline. Loading validates everything and raises ``ValueError``
naming the file and the problem; a save writes to a temporary folder and renames it into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from vla_demo.model.tokenizer import InstructionTokenizer
from vla_demo.model.vla import ModelConfig, build_model

FORMAT = "vla_demo.policy/1"
CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_NAME, CARD_NAME = "config.json", "model.safetensors", "tokenizer.json", "README.md"


def default_card(policy) -> str:
    c = policy.model.config
    return "\n".join([
        f"# vla-demo policy ({c.preset})",
        "",
        f"- parameters: {policy.num_parameters():,}",
        f"- vision: {c.vision}, image {c.image_size} px{f', wrist {c.wrist_image_size} px' if c.wrist else ''}; text: {c.text}; fusion d{c.d_model}, "
        f"{c.n_heads} heads, {c.n_layers} layers; head: {c.head}, chunk {c.chunk_size}",
        "- produced by: created programmatically (no training run recorded)",
        "",
        "Load with `LanguageConditionedPolicy.from_pretrained(folder)`.",
        "",
    ])


def save_policy(policy, directory: Path, card: str | None = None, extra=None) -> Path:
    """Write the checkpoint into a temp folder and rename it into place.

    ``extra(tmp_folder)`` may add files (the trainer's optimizer state) before the rename, so a
    checkpoint and its trainer state appear together or not at all.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in policy.model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": FORMAT})
        (tmp / CONFIG_NAME).write_text(json.dumps(policy.config_dict(), indent=2) + "\n", encoding="utf-8")
        policy.tokenizer.save(tmp / TOKENIZER_NAME)
        (tmp / CARD_NAME).write_text(card or default_card(policy), encoding="utf-8")
        if extra is not None:
            extra(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_config(directory: Path) -> dict:
    """A checkpoint folder's config.json, checked (a clear ValueError for a missing or corrupt one)."""
    path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise ValueError(f"no policy checkpoint folder at {directory}")
    if not path.is_file():
        raise ValueError(f"{directory} is not a policy checkpoint: {CONFIG_NAME} is missing")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"corrupt {path}: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} config (format: {cfg.get('format') if isinstance(cfg, dict) else None!r})")
    return cfg


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ValueError(f"{path.name} is missing from {path.parent}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"corrupt weights file {path}: {e}") from None


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Raise ValueError listing missing, unexpected and mis-shaped tensors."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if shapes:
        problems.append("shape mismatch " + "; ".join(shapes[:5]))
    if problems:
        raise ValueError(f"{source} does not match its config.json: " + ", ".join(problems))


def load_policy(cls, directory: Path):
    from vla_demo.policy import PolicyConfig

    directory = Path(directory)
    cfg = read_config(directory)
    try:
        model_cfg = ModelConfig.from_dict(cfg["model"])
        policy_cfg = PolicyConfig(**cfg.get("policy", {}))
        tok_cfg = cfg.get("tokenizer", {})
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"invalid {directory / CONFIG_NAME}: {e}") from None
    tokenizer = InstructionTokenizer.from_file(directory / TOKENIZER_NAME, tok_cfg.get("max_length", model_cfg.max_text_len),
                                               **tok_cfg.get("special_tokens", {}))
    if model_cfg.text == "builtin" and tokenizer.vocab_size > model_cfg.vocab_size:
        raise ValueError(f"{directory / TOKENIZER_NAME} has {tokenizer.vocab_size} tokens but the model embeds only "
                         f"{model_cfg.vocab_size}")
    model = build_model(model_cfg)
    state = _read_weights(directory / WEIGHTS_NAME)
    check_state_dict(model, state, directory / WEIGHTS_NAME)
    model.load_state_dict(state, strict=True)
    return cls(model, tokenizer, policy_cfg)

