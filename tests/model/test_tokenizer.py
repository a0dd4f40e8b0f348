"""Instruction tokenizer: trained on the grammar, saved/loaded through transformers, robust to any text."""

from __future__ import annotations

import pytest

from vla_demo.model.tokenizer import InstructionTokenizer
from vla_demo.sim.tasks import template_words


@pytest.fixture(scope="module")
def tok():
    return InstructionTokenizer.train()


def test_vocabulary_covers_the_grammar(tok):
    vocab = set(tok.fast.get_vocab())
    assert template_words("train") <= vocab
    assert template_words("heldout") <= vocab


def test_unknown_words_map_to_unk_and_nothing_crashes(tok):
    enc = tok(["pick up the mauve dodecahedron", "拿起红色方块", "🤖🤖", "", "   "])
    ids = enc.input_ids
    assert (ids[0, 3:5] == tok.unk_id).all()
    assert (ids[1][enc.attention_mask[1]] == tok.unk_id).all()
    assert not enc.attention_mask[2:].any()  # symbols only / empty: no tokens at all
    assert enc.words[4] == []


def test_case_accents_and_punctuation_are_normalised(tok):
    a = tok(["Pick up the RÉD cube!"]).input_ids
    b = tok(["pick up the red cube"]).input_ids
    assert a.tolist() == b.tolist()


def test_token_words_align_with_the_words_as_typed(tok):
    enc = tok(["  Lift   the blue-ball now "])
    assert enc.words[0] == ["Lift", "the", "blue-ball", "now"]
    # blue-ball -> "blue", "ball" (punctuation dropped): both tokens belong to typed word 2.
    assert enc.token_words[0] == [0, 1, 2, 2, 3]


def test_long_instructions_are_truncated_with_a_warning(tok):
    with pytest.warns(UserWarning, match="truncated"):
        enc = tok(["pick up the red cube " * 20])
    assert enc.input_ids.shape[1] == tok.max_length


def test_save_and_load_through_transformers(tok, tmp_path):
    from transformers import PreTrainedTokenizerFast

    path = tmp_path / "tokenizer.json"
    tok.save(path)
    again = InstructionTokenizer.from_file(path, **tok.special_tokens())
    assert isinstance(again.fast, PreTrainedTokenizerFast)
    texts = ["put the green can on the plate", "nudge the ball left"]
    assert again(texts).input_ids.tolist() == tok(texts).input_ids.tolist()


def test_bad_files_and_inputs_raise_clear_errors(tok, tmp_path):
    with pytest.raises(ValueError, match="no tokenizer file"):
        InstructionTokenizer.from_file(tmp_path / "missing.json")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt tokenizer"):
        InstructionTokenizer.from_file(bad)
    with pytest.raises(ValueError, match="must be strings"):
        tok([None])


def test_word_labels_align_with_the_tokens_and_skip_what_they_cannot_align(tok):
    def labeller(text):
        return None if "dance" in text else [(w, len(w)) for w in text.lower().replace(",", " ").split()]

    texts = ["Onto the blue can, place the RED block", "lift the cube", "dance", "pick up the purple cube"]
    labels = tok.word_labels(texts, labeller)
    assert labels.shape == tok(texts).input_ids.shape
    assert labels[0].tolist() == [4, 3, 4, 3, 5, 3, 3, 5]
    assert labels[1].tolist() == [4, 3, 4] + [-1] * 5  # padding
    assert (labels[2] == -1).all()  # the labeller knows no roles
    assert (labels[3] == -1).all()  # "purple" is [UNK] to the tokenizer: no misaligned labels
