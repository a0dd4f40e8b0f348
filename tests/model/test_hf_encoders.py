"""transformers backbones as encoders: tiny random models saved locally, loaded back, embedded in checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from vla_demo.model.hf_encoders import HFTextEncoder, HFVisionEncoder
from vla_demo.policy import LanguageConditionedPolicy

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "pick", "up", "the", "red", "blue", "cube", "ball", "lift", "touch"]


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    from transformers import ViTConfig, ViTModel

    path = tmp_path_factory.mktemp("vit")
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64)
    torch.manual_seed(0)
    ViTModel(cfg).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.4, 0.45, 0.5], "image_std": [0.2, 0.25, 0.3]}))
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("bert")
    # A BERT-style WordPiece tokenizer built offline from a tiny vocabulary.
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(path)
    cfg = BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(path)
    return path


def test_vision_adapter_resizes_normalises_and_drops_cls(vit_dir):
    enc = HFVisionEncoder.from_pretrained(str(vit_dir), d_out=24)
    assert enc.grid == (4, 4) and enc.out_dim == 24
    np.testing.assert_allclose(enc.mean.flatten().numpy(), [0.4, 0.45, 0.5], rtol=1e-6)
    np.testing.assert_allclose(enc.std.flatten().numpy(), [0.2, 0.25, 0.3], rtol=1e-6)
    for h, w in ((32, 32), (64, 48)):
        assert enc(torch.rand(2, 3, h, w)).shape == (2, 16, 24)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(torch.rand(2, 4, 32, 32))


def test_text_adapter_pools_over_real_tokens_only(bert_dir):
    enc = HFTextEncoder.from_pretrained(str(bert_dir), d_out=16).eval()
    tok = enc.tokenizer(["pick up the red cube", "lift the zebra"], padding=True, return_tensors="pt")
    ids, mask = tok["input_ids"], tok["attention_mask"].bool()
    assert tok.input_ids[1].tolist().count(enc.tokenizer.unk_token_id) == 1
    tokens, pooled = enc(ids, mask)
    assert tokens.shape == (2, ids.shape[1], 16) and pooled.shape == (2, 16)
    pad = torch.full((2, 3), enc.tokenizer.pad_token_id)
    _, pooled_padded = enc(torch.cat([ids, pad], 1), torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], 1))
    torch.testing.assert_close(pooled, pooled_padded, rtol=1e-5, atol=1e-5)


def test_specs_rebuild_identical_modules_offline(vit_dir, bert_dir):
    for enc, args in ((HFVisionEncoder.from_pretrained(str(vit_dir), 8), (torch.rand(1, 3, 32, 32),)),
                      (HFTextEncoder.from_pretrained(str(bert_dir), 8), (torch.tensor([[2, 5, 6, 3]]), torch.ones(1, 4, dtype=torch.bool)))):
        spec = json.loads(json.dumps(enc.spec()))
        again = type(enc).from_spec(spec)
        again.load_state_dict(enc.state_dict())
        enc.eval(), again.eval()
        a, b = enc(*args), again(*args)
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    text = HFTextEncoder.from_pretrained(str(bert_dir), 8)
    rebuilt = HFTextEncoder.from_spec(text.spec())
    assert rebuilt.tokenizer("pick up the cube")["input_ids"] == text.tokenizer("pick up the cube")["input_ids"]


def test_policy_on_backbones_saves_and_loads_without_the_backbone_folders(vit_dir, bert_dir, tmp_path):
    vit, bert = tmp_path / "vit", tmp_path / "bert"
    shutil.copytree(vit_dir, vit)
    shutil.copytree(bert_dir, bert)
    policy = LanguageConditionedPolicy.with_backbones(str(vit), str(bert), d_model=32, n_heads=2, n_layers=1, head_hidden=32)
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    pred = policy.predict(image, "Pick up the red cube", return_attention=True)
    assert pred.attention.image.shape[-2:] == (4, 4)
    assert [w for w, _ in pred.attention.words] == ["Pick", "up", "the", "red", "cube"]
    path = policy.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(vit)
    shutil.rmtree(bert)
    loaded = LanguageConditionedPolicy.from_pretrained(path)
    np.testing.assert_array_equal(loaded.act(image, "lift the blue ball"), policy.act(image, "lift the blue ball"))


def test_missing_backbone_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "nothing")):
        HFVisionEncoder.from_pretrained(str(tmp_path / "nothing"), 8)
