"""transformers backbones as encoders: tiny random models saved locally, loaded back, embedded in checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vla_demo.model.hf_encoders import HFTextEncoder, HFVisionEncoder
from vla_demo.policy import LanguageConditionedPolicy

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "pick", "up", "the", "red", "blue", "cube", "ball", "lift", "touch"]
MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def _tokenizer(tmp_path_factory):
    """A BERT WordPiece tokenizer built offline from a tiny vocab.txt.

    (transformers 5 silently ignores ``BertTokenizerFast(vocab_file=...)``; loading the folder works.)
    """
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast.from_pretrained(str(folder))
    assert len(tokenizer) == len(WORDS)
    return tokenizer


def _save_vit(path, image_size=32) -> None:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=image_size, patch_size=8, **TINY)).save_pretrained(path)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit")
    _save_vit(path)
    (path / "preprocessor_config.json").write_text(json.dumps({"image_mean": MEAN, "image_std": STD}))
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("bert")
    _tokenizer(tmp_path_factory).save_pretrained(path)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), max_position_embeddings=64, **TINY)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A dual CLIPModel (AutoModel gives the pair; the adapters must pick their tower)."""
    from transformers import CLIPConfig, CLIPModel

    path = tmp_path_factory.mktemp("clip")
    text = dict(vocab_size=len(WORDS), max_position_embeddings=16, bos_token_id=2, eos_token_id=3, pad_token_id=0, **TINY)
    cfg = CLIPConfig(text_config=text, vision_config=dict(image_size=32, patch_size=8, **TINY), projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(path)
    _tokenizer(tmp_path_factory).save_pretrained(path)
    return path


def _roundtrip(enc):
    """from_spec(spec) through JSON, with the original weights loaded; both in eval mode."""
    spec = json.loads(json.dumps(enc.spec()))
    again = type(enc).from_spec(spec)
    assert list(again.state_dict()) == list(enc.state_dict())
    again.load_state_dict(enc.state_dict())
    return enc.eval(), again.eval()


def test_vision_adapter_resizes_normalises_and_drops_cls(vit_dir):
    enc = HFVisionEncoder.from_pretrained(str(vit_dir), d_out=24).eval()
    assert enc.grid == (4, 4) and enc.n_tokens == 16 and enc.out_dim == 24 and enc.image_size == (32, 32)
    assert enc.mean.flatten().tolist() == pytest.approx(MEAN) and enc.std.flatten().tolist() == pytest.approx(STD)
    for h, w in ((32, 32), (64, 48), (20, 70)):
        assert enc(torch.rand(2, 3, h, w)).shape == (2, 16, 24)
    images = torch.rand(2, 3, 64, 48)
    small = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    pixels = (small - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    hidden = enc.backbone(pixel_values=pixels).last_hidden_state  # (2, 17, 32): CLS + 16 patches
    assert hidden.shape[1] == 17
    torch.testing.assert_close(enc(images), enc.proj(hidden[:, 1:]))


def test_vision_adapter_rejects_wrong_images(vit_dir):
    enc = HFVisionEncoder.from_pretrained(str(vit_dir), d_out=8)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(torch.rand(2, 4, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="float"):
        enc(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_vision_mean_std_fall_back_without_preprocessor_config(vit_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(vit_dir, bare)
    (bare / "preprocessor_config.json").unlink()
    given = HFVisionEncoder.from_pretrained(str(bare), 8, mean=(0.1, 0.2, 0.3), std=(0.7, 0.8, 0.9))
    assert given.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert given.std.flatten().tolist() == pytest.approx([0.7, 0.8, 0.9])
    default = HFVisionEncoder.from_pretrained(str(bare), 8)
    assert default.mean.flatten().tolist() == default.std.flatten().tolist() == [0.5, 0.5, 0.5]
    preferred = HFVisionEncoder.from_pretrained(str(vit_dir), 8, mean=(0.1, 0.2, 0.3))
    assert preferred.mean.flatten().tolist() == pytest.approx(MEAN)  # the backbone's own file wins


def test_vision_non_square_grid(tmp_path):
    _save_vit(tmp_path, image_size=(32, 48))
    enc = HFVisionEncoder.from_pretrained(str(tmp_path), 8)
    assert enc.image_size == (32, 48) and enc.grid == (4, 6) and enc.n_tokens == 24
    assert enc(torch.rand(1, 3, 40, 40)).shape == (1, 24, 8)
    a, b = _roundtrip(enc)
    assert b.grid == (4, 6)


def test_text_adapter_pools_over_real_tokens_only(bert_dir):
    enc = HFTextEncoder.from_pretrained(str(bert_dir), d_out=16).eval()
    assert enc.out_dim == 16 and enc.tokenizer.is_fast
    tok = enc.tokenizer(["pick up the red cube", "lift the zebra"], padding=True, return_tensors="pt")
    ids, mask = tok["input_ids"], tok["attention_mask"].bool()
    assert ids[1].tolist().count(enc.tokenizer.unk_token_id) == 1  # "zebra"
    tokens, pooled = enc(ids, mask)
    assert tokens.shape == (2, ids.shape[1], 16) and pooled.shape == (2, 16)
    pad = torch.full((2, 3), enc.tokenizer.pad_token_id)
    tokens_padded, pooled_padded = enc(torch.cat([ids, pad], 1), torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], 1))
    torch.testing.assert_close(pooled, pooled_padded, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled[0], tokens[0].mean(0), rtol=1e-5, atol=1e-5)  # row 0 has no padding
    _, pooled_long = enc(ids, mask.long())  # a 0/1 mask works like a bool one
    torch.testing.assert_close(pooled, pooled_long, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        enc(ids, mask[:, :-1])


def test_dual_model_towers_are_picked(clip_dir):
    from transformers import CLIPTextModel, CLIPVisionModel

    vision = HFVisionEncoder.from_pretrained(str(clip_dir), 8)
    text = HFTextEncoder.from_pretrained(str(clip_dir), 8)
    assert isinstance(vision.backbone, CLIPVisionModel) and isinstance(text.backbone, CLIPTextModel)
    assert vision.grid == (4, 4) and vision(torch.rand(2, 3, 50, 50)).shape == (2, 16, 8)
    assert vision.mean.flatten().tolist() == [0.5, 0.5, 0.5]  # no preprocessor_config.json in the folder
    ids = text.tokenizer(["pick up the cube"], return_tensors="pt")
    tokens, pooled = text(ids["input_ids"], ids["attention_mask"])
    assert tokens.shape == (1, ids["input_ids"].shape[1], 8) and pooled.shape == (1, 8)
    for enc in (vision, text):
        a, b = _roundtrip(enc)
        assert type(b.backbone) is type(a.backbone)


def test_specs_rebuild_identical_modules_offline(vit_dir, bert_dir):
    vision = HFVisionEncoder.from_pretrained(str(vit_dir), 8)
    a, b = _roundtrip(vision)
    images = torch.rand(2, 3, 40, 30)
    torch.testing.assert_close(a(images), b(images), rtol=0, atol=0)
    assert b.grid == a.grid and b.image_size == a.image_size
    torch.testing.assert_close(b.mean, a.mean, rtol=0, atol=0)

    text = HFTextEncoder.from_pretrained(str(bert_dir), 8)
    a, b = _roundtrip(text)
    sentences = ["pick up the red cube", "touch the zebra ball"]
    batch_a = a.tokenizer(sentences, padding=True, return_tensors="pt")
    batch_b = b.tokenizer(sentences, padding=True, return_tensors="pt")
    assert batch_a["input_ids"].tolist() == batch_b["input_ids"].tolist()
    assert b.tokenizer.pad_token == "[PAD]" and b.tokenizer.unk_token == "[UNK]"
    for x, y in zip(a(batch_a["input_ids"], batch_a["attention_mask"]), b(batch_b["input_ids"], batch_b["attention_mask"]),
                    strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_from_spec_rejects_foreign_specs(vit_dir):
    spec = HFVisionEncoder.from_pretrained(str(vit_dir), 8).spec()
    with pytest.raises(ValueError, match="not a text adapter spec"):
        HFTextEncoder.from_spec(spec)
    with pytest.raises(ValueError, match="model_type"):
        HFVisionEncoder.from_spec({**spec, "backbone_config": {"hidden_size": 32}})


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


@pytest.mark.parametrize("cls", [HFVisionEncoder, HFTextEncoder])
def test_missing_backbone_is_a_clear_error(cls, tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "nothing", tmp_path / "empty"):
        with pytest.raises(ValueError, match=str(folder)):
            cls.from_pretrained(str(folder), 8)


def test_text_folder_without_tokenizer_is_a_clear_error(bert_dir, tmp_path):
    model_only = tmp_path / "model_only"
    model_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(bert_dir / name, model_only / name)
    with pytest.raises(ValueError, match="tokenizer"):
        HFTextEncoder.from_pretrained(str(model_only), 8)
