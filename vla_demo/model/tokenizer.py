"""Instruction tokenizer: a word-level vocabulary trained with ``tokenizers`` on the grammar.

Saved as ``tokenizer.json`` and loaded through ``transformers``' fast tokenizer, like any Hugging
Face tokenizer. Text is NFKD-normalised, accent-stripped and lower-cased, so "Pick up the RÉD
cube" reads as the grammar's words; any other word (or emoji, or script) becomes ``[UNK]``, which
the model sees during training through word dropout, so unknown words are harmless. Instructions
longer than ``max_length`` tokens are truncated with a warning.

:class:`InstructionTokenizer` also works over a backbone's own fast tokenizer (BERT, CLIP, ...),
which is how the ``transformers`` text adapters use it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

PAD, UNK = "[PAD]", "[UNK]"
DEFAULT_MAX_LENGTH = 24


@dataclass
class EncodedText:
    """A tokenised batch.

    Attributes:
        input_ids: (B, T) token ids, padded with the pad id.
        attention_mask: (B, T) bool, True on real tokens.
        words: per example, the words as typed (whitespace-separated).
        token_words: per example, the typed-word index of each token (-1: special or padding).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    words: list[list[str]]
    token_words: list[list[int]]


def train_tokenizer(corpus: list[str]):
    """Train a word-level ``tokenizers.Tokenizer`` on instruction sentences."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([
        normalizers.NFKD(),
        normalizers.StripAccents(),
        normalizers.Lowercase(),
        normalizers.Replace(Regex(r"[^\w\s]"), " "),  # punctuation and symbols carry no meaning here
    ])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=[PAD, UNK], min_frequency=1))
    return tok


def _words_with_spans(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    words, spans, start = [], [], None
    for i, ch in enumerate(text + " "):
        if ch.isspace():
            if start is not None:
                words.append(text[start:i])
                spans.append((start, i))
                start = None
        elif start is None:
            start = i
    return words, spans


class InstructionTokenizer:
    """Batches instructions into padded id tensors, keeping track of the words as typed.

    Args:
        fast: a ``transformers.PreTrainedTokenizerFast``.
        max_length: longest token sequence; longer instructions are truncated with a warning.
    """

    def __init__(self, fast, max_length: int = DEFAULT_MAX_LENGTH):
        if fast.pad_token_id is None:
            raise ValueError("the tokenizer needs a pad token")
        self.fast = fast
        self.max_length = int(max_length)

    # ------------------------------------------------------------------ construction / files
    @classmethod
    def train(cls, corpus: list[str] | None = None, max_length: int = DEFAULT_MAX_LENGTH) -> InstructionTokenizer:
        """Train on ``corpus`` (default: every phrasing the task grammar can produce)."""
        from transformers import PreTrainedTokenizerFast

        if corpus is None:
            from vla_demo.sim.tasks import instruction_corpus

            corpus = instruction_corpus("train")
        fast = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(corpus), pad_token=PAD, unk_token=UNK)
        return cls(fast, max_length)

    @classmethod
    def from_file(cls, path: str | Path, max_length: int = DEFAULT_MAX_LENGTH, **special_tokens) -> InstructionTokenizer:
        """Load a ``tokenizer.json`` through ``transformers``' fast tokenizer."""
        from transformers import PreTrainedTokenizerFast

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no tokenizer file at {path}")
        special_tokens = special_tokens or {"pad_token": PAD, "unk_token": UNK}
        try:
            fast = PreTrainedTokenizerFast(tokenizer_file=str(path), **special_tokens)
        except Exception as e:  # the tokenizers library raises its own exception types
            raise ValueError(f"corrupt tokenizer file {path}: {e}") from None
        return cls(fast, max_length)

    def save(self, path: str | Path) -> None:
        self.fast.backend_tokenizer.save(str(path))

    def special_tokens(self) -> dict[str, str]:
        """The special-token strings needed to load the file back (``from_file(**...)``)."""
        return {k: v for k, v in self.fast.special_tokens_map.items() if isinstance(v, str)}

    @property
    def vocab_size(self) -> int:
        return len(self.fast)

    @property
    def pad_id(self) -> int:
        return int(self.fast.pad_token_id)

    @property
    def unk_id(self) -> int | None:
        return self.fast.unk_token_id

    # ------------------------------------------------------------------ encoding
    def __call__(self, texts: list[str] | str) -> EncodedText:
        texts = [texts] if isinstance(texts, str) else list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise ValueError(f"instructions must be strings, got {type(t).__name__}")
        encoded = [self._encode_one(t) for t in texts]
        width = max(1, max(len(ids) for ids, _, _ in encoded))
        ids = torch.full((len(texts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), width), dtype=torch.bool)
        for i, (row, _, _) in enumerate(encoded):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        return EncodedText(ids, mask, [list(w) for _, w, _ in encoded], [list(tw) for _, _, tw in encoded])

    @functools.lru_cache(maxsize=1024)  # noqa: B019  (policies re-encode the same instruction every step)
    def _encode_one(self, text: str) -> tuple[tuple[int, ...], tuple[str, ...], tuple[int, ...]]:
        enc = self.fast(text, add_special_tokens=True, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        if len(ids) > self.max_length:
            warnings.warn(
                f"instruction truncated from {len(ids)} to {self.max_length} tokens: {text[:60]!r}...", stacklevel=4
            )
            ids, offsets = ids[: self.max_length], offsets[: self.max_length]
        words, spans = _words_with_spans(text)
        token_words = []
        for start, end in offsets:
            idx = -1
            if end > start:
                idx = next((k for k, (a, b) in enumerate(spans) if a <= start < b), -1)
            token_words.append(idx)
        return tuple(ids), tuple(words), tuple(token_words)

    def word_labels(self, texts: list[str], labeller: Callable[[str], list[tuple[str, int]] | None]) -> torch.Tensor:
        """(B, T) integer labels per token, T as in ``self(texts)``; -1 on padding and wherever no
        label applies. ``labeller(text)`` returns ``[(word, label), ...]`` over lower-case words or
        None; a text whose tokens spell other words (an unknown word, a backbone's sub-words) gets
        no labels rather than misaligned ones."""
        rows = [self._labels_one(t, labeller) for t in texts]
        out = torch.full((len(texts), max(1, max((len(r) for r in rows), default=0))), -1, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out

    @functools.lru_cache(maxsize=1024)  # noqa: B019  (a training run labels the same few hundred texts)
    def _labels_one(self, text: str, labeller) -> tuple[int, ...]:
        tokens = tuple(self.fast.convert_ids_to_tokens(list(self._encode_one(text)[0])))
        return _aligned(tokens, labeller(text))


def _aligned(tokens: tuple[str, ...], labelled: list[tuple[str, int]] | None) -> tuple[int, ...]:
    """Labels of ``labelled`` words on ``tokens`` when the two spell the same words, else all -1."""
    words = [w for w, _ in labelled or ()]
    if not labelled or list(tokens) != words[: len(tokens)]:
        return (-1,) * len(tokens)
    return tuple(label for _, label in labelled[: len(tokens)])


def word_dropout(ids: torch.Tensor, mask: torch.Tensor, unk_id: int | None, p: float, generator=None) -> torch.Tensor:
    """Replace real tokens by the unknown token with probability ``p`` (so unknown words at test
    time look like something the model has seen)."""
    if p <= 0 or unk_id is None:
        return ids
    drop = (torch.rand(ids.shape, generator=generator) < p) & mask
    return torch.where(drop, torch.full_like(ids, unk_id), ids)
