"""VLAModel: shapes, heads, attention, determinism; train_vla learns language conditioning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from vla_demo.constants import COLOURS
from vla_demo.model.tokenizer import InstructionTokenizer
from vla_demo.model.vla import ModelConfig, build_model, hue_rotate, hue_rows
from vla_demo.policy import LanguageConditionedPolicy, attention_rollout
from vla_demo.train import train_vla


@pytest.fixture(scope="module")
def tok():
    return InstructionTokenizer.train()


def tiny(tok, **overrides) -> ModelConfig:
    base = dict(image_size=32, d_model=32, n_heads=2, n_layers=2, chunk_size=4, head_hidden=32,
                vocab_size=tok.vocab_size, max_text_len=tok.max_length)
    return ModelConfig(**{**base, **overrides})


def inputs(tok, B=3, size=32):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(B, 3, size, size, generator=g)
    enc = tok(["pick up the red cube", "push the ball left", "touch the green can"][:B])
    state = torch.randn(B, 7, generator=g)
    return images, enc.input_ids, enc.attention_mask, state


@pytest.mark.parametrize("head", ["continuous", "discrete"])
@pytest.mark.parametrize("separate_gripper", [True, False])
@pytest.mark.parametrize("vision", ["conv", "patch"])
def test_output_shapes_and_decoding(tok, head, separate_gripper, vision):
    cfg = tiny(tok, head=head, separate_gripper=separate_gripper, vision=vision, patch_size=8, n_bins=16)
    model = build_model(cfg).eval()
    images, ids, mask, state = inputs(tok)
    res = model(images, ids, mask, state)
    acts = model.decode(res["out"])
    assert acts.shape == (3, 4, 7)
    assert res["attention"] is None
    loss, logs = model.loss(res["out"], torch.zeros(3, 4, 7))
    assert loss.ndim == 0 and torch.isfinite(loss) and logs["loss"] == pytest.approx(loss.item())
    if separate_gripper:
        assert set(acts[..., -1].unique().tolist()) <= {0.0, 1.0}


def test_keypoints_find_a_hot_cell_and_add_tokens(tok):
    from vla_demo.model.vla import SpatialKeypoints

    kp = SpatialKeypoints(channels=4, k=2, d=8, hidden=4)
    with torch.no_grad():
        kp.hidden.weight.zero_()
        kp.hidden.bias.zero_()
        kp.hidden.weight[0, 0] = 1.0  # hidden channel 0 copies input channel 0
        kp.score.zero_()
        kp.score[:, 0] = 1.0  # both keypoints score hidden channel 0
        kp.log_temp.fill_(5.0)  # sharp softmax
    fmap = torch.zeros(1, 4, 5, 7)
    fmap[0, 0, 4, 1] = 1.0  # row 4 of 5 (y = +1), column 1 of 7 (x = -2/3)
    words, mask = torch.randn(1, 3, 8), torch.tensor([[True, True, False]])
    pos, att = kp.positions(fmap, words, mask)
    torch.testing.assert_close(pos, torch.tensor([[[-2 / 3, 1.0], [-2 / 3, 1.0]]]), atol=1e-3, rtol=0)
    # Each keypoint reads the words through its own query; padding gets no weight.
    read, att2 = kp.read_words(words, mask)
    assert read.shape == (1, 2, 8) and att.shape == (1, 2, 3)
    torch.testing.assert_close(att, att2)
    torch.testing.assert_close(att.sum(-1), torch.ones(1, 2))
    assert (att[..., 2] == 0).all()
    torch.testing.assert_close(read, kp.read_words(torch.cat([words[:, :2], torch.randn(1, 1, 8)], 1), mask)[0])

    model = build_model(tiny(tok, keypoints=3)).eval()
    args = inputs(tok)
    res = model(*args, need_weights=True)
    n_vis = model.grid[0] * model.grid[1]
    assert res["layout"]["keypoints"] == (2 + n_vis, 5 + n_vis)
    assert res["layout"]["language"][0] == 5 + n_vis
    assert res["attention"][0].shape[-1] == 5 + n_vis + args[1].size(1)
    torch.testing.assert_close(model(*args)["out"], res["out"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="keypoints need the conv"):
        tiny(tok, keypoints=2, vision="patch", patch_size=8)


def test_forward_does_not_mutate_inputs(tok):
    model = build_model(tiny(tok)).eval()
    args = inputs(tok)
    copies = [a.clone() for a in args]
    model(*args, need_weights=True)
    for a, b in zip(args, copies, strict=True):
        assert torch.equal(a, b)


def test_state_none_and_empty_instruction_work(tok):
    model = build_model(tiny(tok)).eval()
    images, _, _, _ = inputs(tok, B=2)
    enc = tok(["", "pick up the red cube"])
    out = model(images, enc.input_ids, enc.attention_mask, None)["out"]
    assert torch.isfinite(out).all()


def test_padding_does_not_change_predictions(tok):
    model = build_model(tiny(tok)).eval()
    images, ids, mask, state = inputs(tok, B=1)
    pad = torch.full((1, 5), tok.pad_id)
    longer = model(images, torch.cat([ids, pad], 1), torch.cat([mask, pad.bool() & False], 1), state)["out"]
    torch.testing.assert_close(model(images, ids, mask, state)["out"], longer, rtol=1e-5, atol=1e-6)


def test_attention_rows_sum_to_one_and_fast_path_matches(tok):
    model = build_model(tiny(tok)).eval()
    args = inputs(tok)
    with torch.no_grad():
        fast = model(*args)["out"]
        slow = model(*args, need_weights=True)
    torch.testing.assert_close(fast, slow["out"], rtol=1e-5, atol=1e-5)
    for layer in slow["attention"]:
        assert layer.shape[:2] == (3, 2)
        torch.testing.assert_close(layer.sum(-1), torch.ones(layer.shape[:-1]))
        assert (layer[..., slow["layout"]["language"][0]:][~args[2][:, None, None, :].expand_as(
            layer[..., slow["layout"]["language"][0]:])] == 0).all()  # padding gets no attention


def test_last_fusion_layer_computes_the_readout_row_only_and_changes_nothing(tok):
    model = build_model(tiny(tok, n_layers=3)).eval()
    args = inputs(tok)
    full_forward = model.blocks[-1].forward
    with torch.no_grad():
        fast, slow = model(*args)["out"], model(*args, need_weights=True)
        model.blocks[-1].forward = lambda *a, **kw: full_forward(*a, **{**kw, "queries": None})  # every token asks
        full, full_slow = model(*args)["out"], model(*args, need_weights=True)
    S = full_slow["attention"][0].size(-1)
    assert slow["attention"][-1].shape == (3, 2, 1, S) and full_slow["attention"][-1].shape == (3, 2, S, S)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(slow["out"], full_slow["out"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(slow["attention"][-1][:, :, 0], full_slow["attention"][-1][:, :, 0])
    rollout = attention_rollout([a[0] for a in slow["attention"]])
    torch.testing.assert_close(rollout, attention_rollout([a[0] for a in full_slow["attention"]]))
    torch.testing.assert_close(rollout.sum(), torch.tensor(1.0))


def test_same_seed_same_model_and_output(tok):
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_model(tiny(tok)).eval()
        outs.append(model(*inputs(tok))["out"])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_state_dropout_hides_the_state_during_training_only(tok):
    torch.manual_seed(0)
    model = build_model(tiny(tok, state_dropout=0.99))
    images, ids, mask, state = inputs(tok)
    model.train()
    with torch.no_grad():
        a = model(images, ids, mask, state)["out"]
        b = model(images, ids, mask, None)["out"]
    torch.testing.assert_close(a, b)  # the state was dropped for every sample
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(images, ids, mask, state)["out"], model(images, ids, mask, None)["out"])


def test_presets_and_config_validation(tok):
    ref = ModelConfig.from_preset("reference")
    assert (ref.d_model, ref.n_heads, ref.n_layers, ref.vision) == (512, 8, 6, "patch")
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=130, n_heads=4)
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.from_preset("huge")
    with pytest.raises(ValueError, match="head must be"):
        ModelConfig(head="diffusion")
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"d_model": 64, "flux_capacitor": 1})
    assert ModelConfig.from_dict(tiny(tok).to_dict()) == tiny(tok)


def test_keypoints_can_pool_the_words_own_embeddings(tok):
    """keypoint_values='embedding': attention from the contextual tokens, pooled values from the
    word embeddings, on both cameras; the same weights give other keypoints than 'context'."""
    torch.manual_seed(0)
    ctx = build_model(tiny(tok, keypoints=2, wrist=True)).eval()
    emb = build_model(tiny(tok, keypoints=2, wrist=True, keypoint_values="embedding")).eval()
    emb.load_state_dict(ctx.state_dict())  # no parameter of its own
    images, ids, mask, state = inputs(tok)
    with torch.no_grad():
        for kp in (ctx.keypoints, emb.keypoints, ctx.wrist_keypoints, emb.wrist_keypoints):
            nn.init.normal_(kp.film.weight)  # the word-to-filter map starts at zero: make the words count
        ctx.load_state_dict(emb.state_dict())
        words, _ = emb.language(ids, mask)
        tokens, fmap = emb.vision.features(images)
        expected, _ = emb.keypoints.positions(fmap, words, mask.bool(), emb.language.embed(ids))
        got = emb.encode(images, ids, mask, state, wrist=images)[2]
        other = ctx.encode(images, ids, mask, state, wrist=images)[2]
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, other)
    for bad in (dict(keypoint_values="raw", keypoints=2), dict(keypoint_values="embedding")):
        with pytest.raises(ValueError, match="keypoint_values"):
            tiny(tok, **bad)


def _words(tok, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tok([text])
    return enc.input_ids, enc.attention_mask


def test_windowed_text_encoder_reads_only_the_words_just_before(tok):
    from vla_demo.model.vla import TextEncoder

    torch.manual_seed(0)
    enc = TextEncoder(tok.vocab_size, tok.max_length, 16, 2, 1, 2, 0.0, window=3).eval()
    with torch.no_grad():
        base, _ = enc(*_words(tok, "stack the red cube on the blue can"))
        # "can" reads "on the blue" (3 back) in both: the same token wherever it stands
        moved, _ = enc(*_words(tok, "on the blue can stack the red cube"))
        # a word 4 back from "can" changed: "can" unchanged, "on" (its own token) changed
        far, _ = enc(*_words(tok, "stack the red ball on the blue can"))
        near, _ = enc(*_words(tok, "stack the red cube onto the blue can"))
    torch.testing.assert_close(base[0, 7], moved[0, 3], rtol=0, atol=1e-6)
    torch.testing.assert_close(base[0, 7], far[0, 7], rtol=0, atol=1e-6)
    assert not torch.allclose(base[0, 4], far[0, 4])
    assert not torch.allclose(base[0, 7], near[0, 7])  # "onto" is within 3 words of "can"


def test_windowed_text_encoder_handles_padding_empty_text_and_the_weights_path(tok):
    torch.manual_seed(0)
    cfg = tiny(tok, text_window=2, text_layers=2)
    model = build_model(cfg).eval()
    assert model.language.pos is None and model.language.rel.shape == (2, 2, 3)
    images, _, _, _ = inputs(tok, B=2)
    enc = tok(["", "pick up the red cube"])
    with torch.no_grad():
        fast = model(images, enc.input_ids, enc.attention_mask, None)
        slow = model(images, enc.input_ids, enc.attention_mask, None, need_weights=True)
        padded = model(images[1:], torch.cat([enc.input_ids[1:], torch.full((1, 4), tok.pad_id)], 1),
                       torch.cat([enc.attention_mask[1:], torch.zeros(1, 4, dtype=torch.bool)], 1), None)
    assert torch.isfinite(fast["out"]).all()
    torch.testing.assert_close(fast["out"], slow["out"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast["out"][1:], padded["out"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="text_window"):
        tiny(tok, text_window=-1)
    assert ModelConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "text_window"}).text_window == 0


def test_hybrid_text_encoder_global_layer_reads_far_words_but_no_positions(tok):
    from vla_demo.model.vla import TextEncoder

    torch.manual_seed(0)
    enc = TextEncoder(tok.vocab_size, tok.max_length, 16, 2, 2, 2, 0.0, window=3, n_global=1).eval()
    assert enc.pos is None and enc.rel.shape == (1, 2, 4)  # one banded layer, then a global one
    with torch.no_grad():
        base, _ = enc(*_words(tok, "stack the red cube on the blue can"))
        far, _ = enc(*_words(tok, "stack the red ball on the blue can"))
        ids, mask = _words(tok, "stack the red cube on the blue can")
        padded, _ = enc(torch.cat([ids, torch.full((1, 3), tok.pad_id)], 1), torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)], 1))
    assert not torch.allclose(base[0, 7], far[0, 7])  # "can" now reads "ball", 4 words back
    torch.testing.assert_close(base, padded[:, : base.size(1)], rtol=0, atol=1e-6)  # pads are never read
    for bad in (dict(text_window=3, text_layers=1, text_global=2), dict(text_window=0, text_layers=2, text_global=1)):
        with pytest.raises(ValueError, match="text_global"):
            tiny(tok, **bad)
    model = build_model(tiny(tok, text_window=3, text_layers=2, text_global=1))
    assert model.language.n_banded == 1


def synthetic_language_batches(tok, n_batches=8, B=16, seed=0):
    """Random images; the correct action depends only on the instruction."""
    rng = np.random.default_rng(seed)
    table = {
        "pick up the red cube": [0.02, 0.0, -0.01, 0, 0, 0, 0],
        "push the blue ball left": [0.0, -0.02, 0.0, 0, 0, 0, 1],
        "touch the green can": [-0.015, 0.01, 0.01, 0, 0, 0.05, 1],
        "put the yellow block in the tray": [0.0, 0.015, 0.02, 0, 0, -0.05, 0],
    }
    texts = list(table)
    batches = []
    for _ in range(n_batches):
        pick = rng.integers(0, len(texts), B)
        batches.append({
            "images": torch.rand(B, 3, 32, 32),
            "instructions": [texts[i] for i in pick],
            "actions": torch.tensor([table[texts[i]] for i in pick], dtype=torch.float32),
        })
    return table, batches


@pytest.mark.parametrize("head", ["continuous", "discrete"])
def test_train_vla_learns_language_conditioning(tok, head):
    torch.manual_seed(0)
    cfg = tiny(tok, head=head, n_bins=32)
    model = build_model(cfg)
    table, batches = synthetic_language_batches(tok)
    policy = LanguageConditionedPolicy(model, tok)
    # Stats so that normalised targets are O(1) (the trainer computes these from the dataset).
    acts = np.array(list(table.values()))
    model.set_stats({"action": {"mean": acts.mean(0), "std": acts.std(0) + 1e-3, "min": acts.min(0) - 1e-3,
                                "max": acts.max(0) + 1e-3}})
    history = train_vla(model, batches, epochs=30, lr=2e-3, word_drop=0.0, progress=False)
    assert history[-1] < 0.05 * history[0] and history[-1] < 0.1
    image = np.random.default_rng(1).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    predicted = {text: policy.act(image, text) for text in table}
    for text, target in table.items():
        np.testing.assert_allclose(predicted[text], target, atol=0.004)
    assert len({tuple(np.round(a, 3)) for a in predicted.values()}) == len(table)


def test_train_vla_accepts_token_tensors_and_feature_keyed_batches(tok):
    model = build_model(tiny(tok))
    model.tokenizer = tok
    enc = tok(["pick up the red cube"] * 4)
    batches = [
        {"images": torch.rand(4, 3, 40, 40), "instructions": enc.input_ids, "actions": torch.zeros(4, 7)},
        {"observation.images.front": torch.randint(0, 255, (4, 32, 32, 3), dtype=torch.uint8),
         "task": ["lift the ball"] * 4, "action": torch.zeros(4, 4, 7), "observation.state": torch.zeros(4, 7)},
    ]
    history = train_vla(model, batches, epochs=2, progress=False)
    assert len(history) == 2 and all(np.isfinite(history))
    with pytest.raises(ValueError, match="needs images, instructions and actions"):
        train_vla(model, [{"images": torch.rand(1, 3, 32, 32)}], epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        train_vla(model, batches, epochs=0, progress=False)


def test_goal_head_learns_positions_and_ignores_unlabelled_rows(tok):
    torch.manual_seed(0)
    model = build_model(tiny(tok, goal_head=True, goal_weight=2.0)).eval()  # no random state dropout
    images, ids, mask, state = inputs(tok)
    out = model(images, ids, mask, state)
    assert out["goal"].shape == (3, 6)
    assert build_model(tiny(tok))(images, ids, mask, state)["goal"] is None
    target = torch.tensor([[0.5, 0.1, 0.03, 0.4, -0.2, 0.0], [0.6, -0.1, 0.03, 0.6, -0.1, 0.03], [float("nan")] * 6])
    model.goal_mean.fill_(0.2)
    actions = torch.zeros(3, 4, 7)
    total, logs = model.loss(out["out"], actions, None, out["goal"], target)
    plain, _ = model.loss(out["out"], actions)
    assert torch.isfinite(total) and total.item() == pytest.approx(plain.item() + 2.0 * logs["goal_loss"], rel=1e-5)
    # The unlabelled row gets no gradient through the goal loss.
    model.zero_grad()
    model.goal_loss(out["goal"], target).backward()
    grad = model.goal_head.net[0].weight.grad.clone()
    model.zero_grad()
    out2 = model(images[:2], ids[:2], mask[:2], state[:2])
    model.goal_loss(out2["goal"], target[:2]).backward()
    torch.testing.assert_close(model.goal_head.net[0].weight.grad, grad, rtol=1e-4, atol=1e-6)
    # All rows unlabelled: a zero loss that still has a graph.
    zero = model.goal_loss(out["goal"], torch.full((3, 6), float("nan")))
    assert zero.item() == 0.0 and zero.requires_grad
    # Fitting: a few steps drive the goal loss down; decode_goal inverts the normalisation.
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        g = model(images[:2], ids[:2], mask[:2], state[:2])["goal"]
        loss = model.goal_loss(g, target[:2])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first
    torch.testing.assert_close(model.decode_goal((target[:2] - model.goal_mean) / model.goal_std), target[:2])


def test_goal_head_reads_the_keypoints_and_trains_their_heat_maps(tok):
    model = build_model(tiny(tok, keypoints=3, goal_head=True)).eval()
    images, ids, mask, state = inputs(tok)
    goal = model(images, ids, mask, state)["goal"]
    assert goal.shape == (3, 6) and model.goal_head.net[0].in_features == 32 + 2 * 3
    model.goal_loss(goal, torch.zeros(3, 6)).backward()
    assert model.keypoints.score.grad.abs().sum() > 0 and model.keypoints.film.weight.grad.abs().sum() > 0
    assert model.head[0].weight.grad is None  # the action head is not involved


def test_word_roles_classify_words_and_bind_keypoints_to_the_named_objects(tok):
    from vla_demo.sim.tasks import word_roles

    torch.manual_seed(0)
    model = build_model(tiny(tok, keypoints=3, wrist=True, word_roles=True, role_binding=True, role_weight=0.5)).eval()
    texts = ["stack the red cube on the blue can", "onto the blue can, place the red cube", "pick up the ball"]
    enc = tok(texts)
    target = tok.word_labels(texts, word_roles)
    images = torch.rand(3, 3, 32, 32)
    res = model(images, enc.input_ids, enc.attention_mask, None, wrist=images)
    T = enc.input_ids.size(1)
    assert res["roles"]["logits"].shape == (3, T, 3)
    assert [a.shape for a in res["roles"]["keypoint_words"]] == [(3, 3, T)] * 2  # front and wrist
    assert build_model(tiny(tok))(images, enc.input_ids, enc.attention_mask)["roles"] is None
    unbound = build_model(tiny(tok, keypoints=3, word_roles=True))(images, enc.input_ids, enc.attention_mask)["roles"]
    assert unbound["keypoint_words"] == [] and model.role_loss(unbound, target)[1].item() == 0.0
    with pytest.raises(ValueError, match="role_binding needs word_roles"):
        tiny(tok, role_binding=True)
    actions = torch.zeros(3, 4, 7)
    total, logs = model.loss(res["out"], actions, roles=res["roles"], role_target=target)
    plain, _ = model.loss(res["out"], actions)
    assert total.item() == pytest.approx(plain.item() + 0.5 * (logs["role_loss"] + logs["binding_loss"]), rel=1e-5)
    # The binding loss is minus the log of keypoint 0's attention on the target's words (1) and
    # keypoint 1's on the destination's (2); rows that name no destination do not count for 1.
    att = torch.zeros(3, 3, T)
    att[:, 0][target == 1] = 0.5  # keypoint 0: all on the two target words, half on "ball" (row 2)
    att[0, 1, 6], att[0, 1, 0] = 0.25, 0.75  # keypoint 1: a quarter on the base's words in row 0
    att[1, 1][target[1] == 2] = 0.5  # all of it in row 1
    ce, bind = model.role_loss({"logits": res["roles"]["logits"], "keypoint_words": [att]}, target)
    assert bind.item() == pytest.approx((np.log(2) / 3 + np.log(4) / 2) / 2, rel=1e-5)
    # Unlabelled batches: zero losses that keep the graph.
    ce, bind = model.role_loss(res["roles"], torch.full_like(target, -1))
    assert ce.item() == 0.0 and bind.item() == 0.0 and ce.requires_grad and bind.requires_grad
    # Fitting drives both down; the role head and the keypoint queries get the gradient.
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        r = model(images, enc.input_ids, enc.attention_mask, None, wrist=images)["roles"]
        ce, bind = model.role_loss(r, target)
        first = first or (ce.item(), bind.item())
        opt.zero_grad()
        (ce + bind).backward()
        opt.step()
    assert ce.item() < 0.1 * first[0] and bind.item() < 0.2 * first[1]
    assert model.wrist_keypoints.queries.grad.abs().sum() > 0


def test_wrist_camera_adds_its_tokens_and_changes_the_prediction(tok):
    cfg = tiny(tok, wrist=True, keypoints=3)
    model = build_model(cfg).eval()
    images, ids, mask, state = inputs(tok)
    hand = torch.rand(images.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        res = model(images, ids, mask, state, need_weights=True, wrist=hand)
        other = model(images, ids, mask, state, wrist=hand.flip(-1))["out"]
    n_vis = (32 // 16) ** 2
    per_camera = n_vis + 3
    assert res["layout"]["wrist"] == (2 + per_camera, 2 + 2 * per_camera)
    assert res["layout"]["language"][0] == 2 + 2 * per_camera
    assert res["attention"][0].shape[-1] == 2 + 2 * per_camera + ids.size(1)
    assert not torch.allclose(res["out"], other)  # the prediction depends on the wrist image
    with pytest.raises(ValueError, match="wrist camera"):
        model(images, ids, mask, state)
    with pytest.raises(ValueError, match="wrist camera"):
        model(images, ids, mask, state, wrist=hand[:, :, :16])
    with pytest.raises(ValueError, match="conv vision"):
        tiny(tok, wrist=True, vision="patch", patch_size=8)


def test_a_smaller_wrist_image_gives_the_wrist_fewer_tokens(tok):
    model = build_model(tiny(tok, wrist=True, keypoints=3, image_size=64, wrist_size=32)).eval()
    images, ids, mask, state = inputs(tok, size=64)
    hand = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        res = model(images, ids, mask, state, need_weights=True, wrist=hand)
        other = model(images, ids, mask, state, wrist=hand.flip(-1))["out"]
    front, wrist = (64 // 16) ** 2 + 3, (32 // 16) ** 2 + 3  # grid tokens + keypoints per camera
    assert res["layout"]["wrist"] == (2 + front, 2 + front + wrist)
    assert res["attention"][0].shape[-1] == 2 + front + wrist + ids.size(1)
    assert not torch.allclose(res["out"], other)
    with pytest.raises(ValueError, match=r"wrist images shaped \(3, 3, 32, 32\)"):
        model(images, ids, mask, state, wrist=torch.rand(3, 3, 64, 64))  # the front camera's size
    assert model.config.wrist_image_size == 32 and tiny(tok, wrist=True).wrist_image_size == 32  # 0: image_size
    for bad, match in (({"wrist_size": 32}, "needs wrist"), ({"wrist": True, "wrist_size": 40}, "multiple of 16")):
        with pytest.raises(ValueError, match=match):
            tiny(tok, **bad)


def test_front_only_models_keep_their_parameters(tok):
    names = set(build_model(tiny(tok, keypoints=2)).state_dict())
    assert not any(n.startswith("wrist") for n in names)
    wrist_names = set(build_model(tiny(tok, keypoints=2, wrist=True)).state_dict())
    assert names < wrist_names and {n.split(".")[0] for n in wrist_names - names} == {"wrist_vision", "wrist_keypoints", "wrist_pos"}


def test_fine_stem_keeps_the_token_grid_and_only_changes_the_front_cameras_start(tok):
    coarse = build_model(tiny(tok, keypoints=2, wrist=True))
    fine = build_model(tiny(tok, keypoints=2, wrist=True, fine_stem=True)).eval()
    images, ids, mask, state = inputs(tok)
    with torch.no_grad():
        res = fine(images, ids, mask, state, need_weights=True, wrist=images.flip(-1))
    assert fine.vision.grid == coarse.vision.grid == (2, 2)
    assert res["layout"] == coarse.eval()(images, ids, mask, state, need_weights=True, wrist=images.flip(-1))["layout"]
    added = set(fine.state_dict()) - set(coarse.state_dict())
    assert added and all(n.startswith("vision.early.") for n in added)  # the wrist stem is unchanged
    # A checkpoint of the 4x4-patch stem (every earlier policy) keeps its parameter names.
    assert {n for n in coarse.state_dict() if n.startswith("vision.early.")} == {
        "vision.early.0.weight", "vision.early.0.bias", "vision.early.2.weight", "vision.early.2.bias"}
    with pytest.raises(ValueError, match="fine_stem"):
        tiny(tok, fine_stem=True, vision="patch", patch_size=8)


def test_keypoint_conjunction_starts_as_the_shared_hidden_layer_and_lets_the_words_gate_it():
    from vla_demo.model.vla import SpatialKeypoints

    torch.manual_seed(0)
    plain, conj = SpatialKeypoints(4, k=3, d=8, hidden=6), SpatialKeypoints(4, k=3, d=8, hidden=6, conjunction=5)
    missing, unexpected = conj.load_state_dict(plain.state_dict(), strict=False)
    assert {m.split(".")[0] for m in missing} == {"conj", "conj_score"} and not unexpected
    with torch.no_grad():  # the film offset would otherwise be zero too: let the words matter
        for kp in (plain, conj):
            kp.film.weight.copy_(torch.linspace(-1, 1, 48).view(6, 8))
    fmap, words, mask = torch.randn(2, 4, 5, 5), torch.randn(2, 3, 8), torch.ones(2, 3)
    assert torch.allclose(conj.positions(fmap, words, mask)[0], plain.positions(fmap, words, mask)[0], atol=1e-6)
    pos, _ = conj.positions(fmap, words, mask)
    pos.sum().backward()  # from the zero start only the keypoints' own scores move first
    assert conj.conj_score.grad.abs().sum() > 0
    with torch.no_grad():
        conj.conj_score.normal_()
    moved = conj.positions(fmap, words, mask)[0]
    with torch.no_grad():
        conj.conj["shift"].weight.normal_()
    assert not torch.allclose(moved, plain.positions(fmap, words, mask)[0], atol=1e-3)
    assert not torch.allclose(conj.positions(fmap, words, mask)[0], moved, atol=1e-3)  # the words gate the cells


def test_keypoint_conjunction_builds_into_both_cameras_and_needs_keypoints(tok):
    model = build_model(tiny(tok, keypoints=2, wrist=True, keypoint_conjunction=True)).eval()
    assert model.keypoints.conj is not None and model.wrist_keypoints.conj is not None
    images, ids, mask, state = inputs(tok)
    assert model(images, ids, mask, state, wrist=images)["out"].shape[0] == 3
    with pytest.raises(ValueError, match="keypoint_conjunction"):
        tiny(tok, keypoint_conjunction=True)


def object_rows(rows: list[tuple]) -> torch.Tensor:
    """(MAX_OBJECTS * 7,) labels from (colour, shape, front_u, front_v, wrist_u, wrist_v, wrist_visible) rows."""
    out = torch.zeros(5, 7)
    out[:, :2] = -1
    for i, r in enumerate(rows):
        out[i] = torch.tensor(r, dtype=torch.float32)
    return out.view(-1)


def test_object_head_tells_colour_and_shape_under_each_labelled_centre(tok):
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="object_head needs keypoints"):
        tiny(tok, object_head=True)
    model = build_model(tiny(tok, keypoints=3, wrist=True, object_head=True, object_weight=0.5)).eval()
    images, ids, mask, state = inputs(tok)
    res = model(images, ids, mask, state, wrist=images)
    assert [m.shape for m in res["feature_maps"]] == [(3, model.vision.feature_dim, 4, 4)] * 2  # front, wrist
    assert build_model(tiny(tok, keypoints=3))(images, ids, mask, state)["feature_maps"] is None
    labels = torch.stack([object_rows([(0, 0, -0.5, -0.5, 0.5, 0.5, 1), (1, 2, 0.5, 0.5, 0.0, 0.0, 0)]),
                          object_rows([(2, 1, 0.0, 0.5, -0.5, 0.0, 1)]),
                          object_rows([])])  # (3, 35); the last frame has no labelled object
    actions = torch.zeros(3, 4, 7)
    total, logs = model.loss(res["out"], actions, maps=res["feature_maps"], object_target=labels)
    plain, _ = model.loss(res["out"], actions)
    assert total.item() == pytest.approx(plain.item() + 0.5 * logs["object_loss"], rel=1e-5)
    assert 0.0 <= logs["object_shape_acc"] <= 1.0
    # No labelled object anywhere: a zero loss that still has a graph.
    zero, acc = model.object_loss(res["feature_maps"], labels[2:].expand(3, -1))
    assert zero.item() == 0.0 and zero.requires_grad and torch.isnan(acc)
    assert "object_shape_acc" not in model.loss(res["out"], actions, maps=res["feature_maps"], object_target=labels[2:].expand(3, -1))[1]
    # Fitting: the loss reaches into the vision stems and a few steps learn the labels.
    model.zero_grad()
    model.object_loss(res["feature_maps"], labels)[0].backward()
    assert model.vision.early[0].weight.grad.abs().sum() > 0 and model.wrist_vision.early[0].weight.grad.abs().sum() > 0
    assert model.head[0].weight.grad is None  # the action head is not involved
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        maps = model(images, ids, mask, state, wrist=images)["feature_maps"]
        loss, acc = model.object_loss(maps, labels)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first and acc.item() == 1.0


def test_hue_rotate_turns_colours_about_the_grey_axis():
    red, green, blue, grey = ([1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.4, 0.4, 0.4])
    images = torch.tensor([red, green, blue, grey]).view(4, 3, 1, 1).expand(4, 3, 2, 2)
    third = torch.full((4,), 2 * math.pi / 3)
    assert torch.allclose(hue_rotate(images, torch.zeros(4)), images, atol=1e-6)
    turned = hue_rotate(images, third)[:, :, 0, 0]
    assert torch.allclose(turned, torch.tensor([green, blue, red, grey]), atol=1e-5)  # a third of a turn permutes
    assert torch.allclose(hue_rotate(images, third * 3), images, atol=1e-5)
    # In between: red turns towards yellow, in [0, 1], its brightness kept; each image its own angle.
    sixth = hue_rotate(images[:1], torch.tensor([math.pi / 3]))[0, :, 0, 0]
    assert sixth[0] > 0.5 and sixth[1] > 0.5 and sixth[2] == 0.0
    mixed = hue_rotate(images[:2], torch.tensor([0.0, 2 * math.pi / 3]))[:, :, 0, 0]
    assert torch.allclose(mixed, torch.tensor([red, blue]), atol=1e-5)


def test_hue_rows_are_a_quarter_of_the_batch_so_process_count_keeps_the_share():
    assert hue_rows(64) == 16
    assert 2 * hue_rows(32) == hue_rows(64)  # two processes' halves hold as many copies as one batch
    assert hue_rows(3) == 1 and hue_rows(1) == 1  # tiny batches still get one copy


def silence_colour_rows(model) -> None:
    """Zero the object heads' colour rows, so what is left of the object loss reads shapes."""
    with torch.no_grad():
        for head in model.object_heads:
            head.weight[:len(COLOURS)] = 0


def shape_term_reaches_plain_maps(model, res, labels, copies) -> bool:
    """Whether the object loss sends gradient into the plain feature maps (colour rows silenced)."""
    plain_maps = [m.detach().requires_grad_() for m in res["feature_maps"]]
    model.object_loss(plain_maps, labels, None if copies is None else [m.detach() for m in copies])[0].backward()
    return any(m.grad.abs().sum() > 0 for m in plain_maps)


def test_object_hue_teaches_shapes_from_hue_rotated_copies_in_training_only(tok):
    with pytest.raises(ValueError, match="object_hue needs object_head"):
        tiny(tok, keypoints=3, object_hue=True)
    torch.manual_seed(0)
    model = build_model(tiny(tok, keypoints=3, wrist=True, object_head=True, object_hue=True))
    images, ids, mask, state = inputs(tok)
    assert model.eval()(images, ids, mask, state, wrist=images)["shape_maps"] is None  # nothing extra at inference
    res = model.train()(images, ids, mask, state, wrist=images)
    n = hue_rows(3)
    assert [m.shape for m in res["shape_maps"]] == [(n, model.vision.feature_dim, 4, 4)] * 2  # front, wrist
    assert not torch.allclose(res["shape_maps"][0], res["feature_maps"][0][:n])  # the copies are recoloured
    labels = torch.stack([object_rows([(0, 0, -0.5, -0.5, 0.5, 0.5, 1), (1, 2, 0.5, 0.5, 0.0, 0.0, 0)]),
                          object_rows([(2, 1, 0.0, 0.5, -0.5, 0.0, 1)]),
                          object_rows([])])
    hued, _ = model.object_loss(res["feature_maps"], labels, res["shape_maps"])
    plain, _ = model.object_loss(res["feature_maps"], labels)
    assert hued.item() != pytest.approx(plain.item())
    # With the plain maps cut off, the stems still learn, through the copies.
    model.zero_grad()
    model.object_loss([m.detach() for m in res["feature_maps"]], labels, res["shape_maps"])[0].backward()
    assert model.vision.early[0].weight.grad.abs().sum() > 0 and model.wrist_vision.early[0].weight.grad.abs().sum() > 0
    assert model.object_heads[0].weight.grad[len(COLOURS):].abs().sum() > 0
    _, logs = model.loss(res["out"].detach(), torch.zeros(3, 4, 7), maps=res["feature_maps"], object_target=labels,
                         shape_maps=res["shape_maps"])
    assert logs["object_loss"] == pytest.approx(model.object_loss(res["feature_maps"], labels, res["shape_maps"])[0].item(), rel=1e-5)
    # No labelled object in the hue-rotated rows: only the colour term, and no shape accuracy.
    empty_first = torch.stack([labels[2], labels[0], labels[1]])
    only_colour, acc = model.object_loss(res["feature_maps"], empty_first, [m[:1] for m in res["shape_maps"]])
    assert torch.isnan(acc) and only_colour.item() > 0
    # The shape term reads no plain map (without the copies it does).
    silence_colour_rows(model)
    assert not shape_term_reaches_plain_maps(model, res, labels, res["shape_maps"])
    assert shape_term_reaches_plain_maps(model, res, labels, None)


def test_object_hue_plain_learns_shapes_from_both_maps(tok):
    with pytest.raises(ValueError, match="object_hue_plain needs object_hue"):
        tiny(tok, keypoints=3, object_head=True, object_hue_plain=True)
    torch.manual_seed(0)
    copies_only = build_model(tiny(tok, keypoints=3, object_head=True, object_hue=True)).train()
    both = build_model(tiny(tok, keypoints=3, object_head=True, object_hue=True, object_hue_plain=True)).train()
    both.load_state_dict(copies_only.state_dict())
    images, ids, mask, state = inputs(tok)
    res = both(images, ids, mask, state)
    labels = torch.stack([object_rows([(0, 0, -0.5, -0.5, 0.5, 0.5, 1)]), object_rows([(2, 1, 0.0, 0.5, -0.5, 0.0, 1)]),
                          object_rows([(1, 2, 0.5, 0.5, 0.0, 0.0, 0)])])
    silence_colour_rows(both)
    copies_only.load_state_dict(both.state_dict())
    assert not shape_term_reaches_plain_maps(copies_only, res, labels, res["shape_maps"])
    assert shape_term_reaches_plain_maps(both, res, labels, res["shape_maps"])


def test_saturation_is_the_same_for_every_hue_and_brightness_of_a_colour():
    from vla_demo.model.vla import saturation

    red = torch.tensor([0.86, 0.12, 0.12]).view(1, 3, 1, 1)
    shades = torch.cat([red, red[:, [1, 0, 2]], red[:, [2, 1, 0]], 0.5 * red])  # green, blue, a darker red
    sat = saturation(shades).flatten()
    torch.testing.assert_close(sat, torch.full((4,), (0.86 - 0.12) / 0.86))
    greys = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.96, 0.96, 0.96]]).view(3, 3, 1, 1)
    assert saturation(greys).abs().max() == 0  # the plate, the table's greys and black pixels


def test_chroma_map_is_blind_to_which_colour_an_object_wears():
    from vla_demo.model.vla import ChromaStem

    torch.manual_seed(0)
    stem = ChromaStem()
    images = torch.rand(2, 3, 32, 32)
    out = stem(images)
    assert out.shape == (2, stem.channels, 4, 4)  # the stride-8 grid of the keypoints' map
    torch.testing.assert_close(stem(images[:, [2, 0, 1]]), out)  # every object recoloured by a channel cycle
    assert not torch.allclose(stem(images.flip(-1)), out)  # but where things are, and their outline, matter


def test_keypoint_chroma_starts_as_the_plain_keypoints_and_lets_the_words_choose_a_colour_blind_filter():
    from vla_demo.model.vla import SpatialKeypoints

    torch.manual_seed(0)
    plain = SpatialKeypoints(4, k=3, d=8, hidden=6)
    torch.manual_seed(0)
    chroma = SpatialKeypoints(4, k=3, d=8, hidden=6, chroma=True)
    shared = plain.state_dict()
    assert all(torch.equal(chroma.state_dict()[n], t) for n, t in shared.items())  # drawn off the global stream
    added = set(chroma.state_dict()) - set(shared)
    assert added and all(n.startswith("chroma") for n in added)
    fmap, words, mask = torch.randn(2, 4, 5, 5), torch.randn(2, 3, 8), torch.ones(2, 3)
    images = torch.rand(2, 3, 40, 40)
    start, _ = chroma.positions(fmap, words, mask, images=images)
    torch.testing.assert_close(start, plain.positions(fmap, words, mask)[0])
    with pytest.raises(ValueError, match="colour-blind"):
        chroma.positions(fmap, words, mask)
    start.sum().backward()  # from the zero start, both parts of the filter learn
    assert chroma.chroma_score.grad.abs().sum() > 0 and chroma.chroma_film.weight.grad.abs().sum() > 0
    with torch.no_grad():
        chroma.chroma_film.weight.normal_()
    moved = chroma.positions(fmap, words, mask, images=images)[0]
    assert not torch.allclose(moved, start, atol=1e-3)
    other_words = chroma.positions(fmap, words.flip(1) * 2, mask, images=images)[0]
    assert not torch.allclose(other_words, moved, atol=1e-3)  # the words choose the filter
    recoloured = chroma.positions(fmap, words, mask, images=images[:, [1, 2, 0]])[0]
    torch.testing.assert_close(recoloured, moved)  # and what it scores has no colour


def test_keypoint_chroma_builds_into_both_cameras_round_trips_and_needs_keypoints(tok, tmp_path):
    base = dict(keypoints=2, wrist=True)
    torch.manual_seed(3)
    plain = build_model(tiny(tok, **base)).eval()
    torch.manual_seed(3)
    model = build_model(tiny(tok, **base, keypoint_chroma=True)).eval()
    assert model.keypoints.chroma is not None and model.wrist_keypoints.chroma is not None
    images, ids, mask, state = inputs(tok)
    out = model(images, ids, mask, state, wrist=images.flip(-1))["out"]
    torch.testing.assert_close(out, plain(images, ids, mask, state, wrist=images.flip(-1))["out"])  # the same start
    policy = LanguageConditionedPolicy(model, tok)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    loaded = LanguageConditionedPolicy.from_pretrained(policy.save_pretrained(tmp_path / "ckpt"))
    assert loaded.model.config.keypoint_chroma
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)
    with pytest.raises(ValueError, match="keypoint_chroma"):
        tiny(tok, keypoint_chroma=True)
