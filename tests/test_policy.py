"""LanguageConditionedPolicy: the seed's act(), predict + attention, chunk execution, checkpoints, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vla_demo.constants import OBS_IMAGE_FRONT, OBS_STATE, TASK
from vla_demo.model.tokenizer import InstructionTokenizer
from vla_demo.policy import LanguageConditionedPolicy, PolicyConfig, to_image_array

TINY = dict(image_size=32, d_model=32, n_heads=2, n_layers=2, chunk_size=4, head_hidden=32)


@pytest.fixture(scope="module")
def tok():
    return InstructionTokenizer.train()


@pytest.fixture
def policy(tok):
    return LanguageConditionedPolicy.build("default", tokenizer=tok, seed=0, **TINY)


def image(seed=0, shape=(64, 64, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_act_returns_a_numpy_action(policy):
    a = policy.act(image(), "pick up the red cube")
    assert isinstance(a, np.ndarray) and a.shape == (7,) and a.dtype == np.float32
    b = policy.act(image(), "pick up the red cube", state=np.zeros(7))
    assert b.shape == (7,)


def test_act_is_deterministic_and_stateless(policy):
    a = policy.act(image(), "push the ball left")
    policy.select_action({OBS_IMAGE_FRONT: image(1), TASK: "lift the cube", OBS_STATE: np.zeros(7, np.float32)})
    np.testing.assert_array_equal(policy.act(image(), "push the ball left"), a)


@pytest.mark.parametrize(
    "img",
    [
        image(shape=(50, 70, 3)),
        image(shape=(256, 256, 3)),
        image(shape=(40, 40)),
        image(shape=(40, 40, 1)),
        image(shape=(40, 40, 4)),
        np.random.default_rng(0).random((32, 32, 3)).astype(np.float32),
        np.random.default_rng(0).random((32, 32, 3)),
    ],
)
def test_accepts_any_reasonable_image(policy, img):
    assert policy.act(img, "touch the blue ball").shape == (7,)


def test_accepts_pil_images(policy):
    from PIL import Image

    assert policy.act(Image.fromarray(image()), "lift the cube").shape == (7,)
    assert policy.act(Image.fromarray(image()).convert("L"), "lift the cube").shape == (7,)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((32, 32, 5), np.uint8), "got shape"),
        (np.zeros((32,), np.uint8), "got shape"),
        (np.zeros((1, 1, 3), np.uint8), "got shape"),
        (np.zeros((32, 32, 3), np.int64), "got dtype"),
        (np.full((8, 8, 3), 2.0, np.float32), r"in \[0, 1\]"),
        (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
        (torch.zeros(3, 32, 32), "torch tensor"),
        ("image.png", "got str"),
        (None, "got NoneType"),
    ],
)
def test_bad_images_get_clear_errors(policy, bad, message):
    with pytest.raises(ValueError, match=message):
        policy.act(bad, "pick up the red cube")


def test_bad_instructions_and_states(policy):
    with pytest.raises(ValueError, match="instruction must be a string"):
        policy.act(image(), None)
    with pytest.raises(ValueError, match="state must be 7"):
        policy.act(image(), "lift the cube", state=np.zeros(3))
    with pytest.raises(ValueError, match="state must be 7"):
        policy.act(image(), "lift the cube", state=[np.nan] * 7)
    # Odd but valid text is handled: empty, unknown words, non-ASCII, too long (truncated with a warning).
    for text in ["", "bring me a coffee", "拿起红色方块 ✋", "Pick UP the RÉD cube!!"]:
        assert np.all(np.isfinite(policy.act(image(), text)))
    with pytest.warns(UserWarning, match="truncated"):
        policy.act(image(), "lift the red cube " * 50)


def test_image_conversion_keeps_values():
    f = np.linspace(0, 1, 12, dtype=np.float32).reshape(2, 2, 3)
    u = to_image_array(f)
    assert u.dtype == np.uint8 and u[0, 0, 0] == 0 and u[1, 1, 2] == 255
    rgba = image(shape=(4, 4, 4))
    np.testing.assert_array_equal(to_image_array(rgba), rgba[:, :, :3])


def test_predict_attention_structure(policy):
    text = "  Pick up   the RED cube! "
    pred = policy.predict(image(), text, return_attention=True)
    att = pred.attention
    L, heads = policy.model.config.n_layers, policy.model.config.n_heads
    gh, gw = policy.model.grid
    assert pred.chunk.shape == (4, 7) and np.array_equal(pred.action, pred.chunk[0])
    assert att.image.shape == (L, heads, gh, gw) and att.image.dtype == np.float32
    assert att.image_rollout.shape == (gh, gw)
    assert att.image_rollout.sum() == pytest.approx(1.0, abs=1e-5) and (att.image_rollout >= 0).all()
    assert [w for w, _ in att.words] == ["Pick", "up", "the", "RED", "cube!"]
    assert sum(v for _, v in att.words) == pytest.approx(1.0, abs=1e-5)
    assert att.word_layers.shape == (L, 5)
    assert (att.image.sum(axis=(2, 3)) <= 1.0 + 1e-5).all()  # patches get a share of each row
    assert policy.predict(image(), text).attention is None


def test_attention_path_gives_the_same_actions(policy):
    a = policy.predict(image(), "lift the ball", return_attention=True)
    b = policy.predict(image(), "lift the ball")
    np.testing.assert_allclose(a.chunk, b.chunk, atol=1e-5)


def test_per_word_attention_handles_unknown_and_empty_text(policy):
    att = policy.predict(image(), "lift the zorblax", return_attention=True).attention
    assert [w for w, _ in att.words] == ["lift", "the", "zorblax"]
    assert att.words[2][1] > 0  # the unknown word is a real token and gets attention
    empty = policy.predict(image(), "", return_attention=True).attention
    assert empty.words == [] and empty.word_layers.shape[1] == 0


def test_select_action_executes_chunks_from_a_queue(tok):
    policy = LanguageConditionedPolicy.build("default", tokenizer=tok, config=PolicyConfig(n_action_steps=3), **TINY)
    calls = []
    original = policy.predict
    policy.predict = lambda *a, **k: calls.append(1) or original(*a, **k)
    obs = {OBS_IMAGE_FRONT: image(), TASK: "lift the cube", OBS_STATE: np.zeros(7, np.float32)}
    chunk = original(image(), "lift the cube", np.zeros(7)).chunk
    calls.clear()
    got = [policy.select_action(obs) for _ in range(7)]
    assert len(calls) == 3  # steps 0, 3 and 6 predict
    np.testing.assert_allclose(np.stack(got[:3]), chunk[:3], atol=1e-6)
    policy.reset()
    policy.select_action(obs)
    assert len(calls) == 4


def test_temporal_ensembling_blends_overlapping_chunks(tok):
    cfg = PolicyConfig(temporal_ensemble=True, ensemble_decay=0.5)
    policy = LanguageConditionedPolicy.build("default", tokenizer=tok, config=cfg, **TINY)
    chunks = [np.full((4, 7), v, np.float32) for v in (1.0, 2.0, 3.0)]
    it = iter(chunks)
    policy.predict = lambda *a, **k: type("P", (), {"chunk": next(it)})()
    obs = {OBS_IMAGE_FRONT: image(), TASK: "lift the cube"}
    assert policy.select_action(obs)[0] == pytest.approx(1.0)
    w = np.exp(-0.5 * np.arange(2))
    assert policy.select_action(obs)[0] == pytest.approx((1 * w[0] + 2 * w[1]) / w.sum())
    w = np.exp(-0.5 * np.arange(3))
    assert policy.select_action(obs)[0] == pytest.approx((1 * w[0] + 2 * w[1] + 3 * w[2]) / w.sum())


def test_save_load_round_trip_is_exact(policy, tmp_path):
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    policy.model.set_stats({"action": {"mean": np.arange(7) * 0.1, "std": np.ones(7) * 0.5, "min": -np.ones(7),
                                       "max": np.ones(7)}})
    path = policy.save_pretrained(tmp_path / "ckpt")
    assert {f.name for f in path.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json", "README.md"}
    loaded = LanguageConditionedPolicy.from_pretrained(path)
    for (k, a), (_, b) in zip(policy.model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    np.testing.assert_array_equal(loaded.act(image(), "lift the cube"), policy.act(image(), "lift the cube"))
    assert loaded.config == policy.config and loaded.model.config == policy.model.config
    assert not list(tmp_path.glob(".*"))  # no temp folders left behind


def test_saving_over_an_existing_checkpoint_replaces_it(policy, tmp_path):
    path = tmp_path / "ckpt"
    policy.save_pretrained(path, card="# first\n")
    policy.save_pretrained(path, card="# second\n")
    assert (path / "README.md").read_text() == "# second\n"


def test_corrupt_and_mismatched_checkpoints_fail_clearly(policy, tmp_path):
    good = policy.save_pretrained(tmp_path / "good")
    with pytest.raises(ValueError, match="no policy checkpoint folder"):
        LanguageConditionedPolicy.from_pretrained(tmp_path / "nowhere")

    def broken(name, edit):
        import shutil

        d = tmp_path / name
        shutil.copytree(good, d)
        edit(d)
        return d

    cases = [
        (broken("noconfig", lambda d: (d / "config.json").unlink()), "config.json is missing"),
        (broken("badjson", lambda d: (d / "config.json").write_text("{oops")), "corrupt"),
        (broken("badweights", lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64)), "corrupt weights"),
        (broken("noweights", lambda d: (d / "model.safetensors").unlink()), "model.safetensors is missing"),
        (broken("badtok", lambda d: (d / "tokenizer.json").write_text("[]")), "tokenizer"),
        (broken("format", lambda d: _edit_json(d, lambda c: c.update(format="other/9"))), "is not a"),
        (broken("keys", lambda d: _edit_json(d, lambda c: c["model"].update(warp=9))), "unknown model config keys"),
        (broken("shape", lambda d: _edit_json(d, lambda c: c["model"].update(d_model=64))), "shape mismatch"),
        (broken("layers", lambda d: _edit_json(d, lambda c: c["model"].update(n_layers=3))), "missing"),
        (broken("value", lambda d: _edit_json(d, lambda c: c["model"].update(head="magic"))), "head must be"),
    ]
    for folder, message in cases:
        with pytest.raises(ValueError, match=message):
            LanguageConditionedPolicy.from_pretrained(folder)


def _edit_json(d, fn):
    cfg = json.loads((d / "config.json").read_text())
    fn(cfg)
    (d / "config.json").write_text(json.dumps(cfg))


def test_forward_returns_loss_and_logs_without_mutating_the_batch(policy):
    batch = {
        OBS_IMAGE_FRONT: torch.rand(2, 3, 64, 64),
        OBS_STATE: torch.zeros(2, 7),
        TASK: ["lift the cube", "touch the ball"],
        "action": torch.zeros(2, 4, 7),
        "action_is_pad": torch.zeros(2, 4, dtype=torch.bool),
    }
    before = {k: v.clone() if isinstance(v, torch.Tensor) else list(v) for k, v in batch.items()}
    loss, logs = policy.forward(batch)
    assert loss.requires_grad and {"loss", "mse_loss", "gripper_loss"} <= set(logs)
    assert set(batch) == set(before)
    for k, v in batch.items():
        assert torch.equal(v, before[k]) if isinstance(v, torch.Tensor) else v == before[k]


def test_policy_drives_the_env_through_rollout(policy):
    from vla_demo.evaluate import rollout
    from vla_demo.sim.env import TabletopEnv

    env = TabletopEnv(image_size=(32, 32))
    records = list(rollout(env, policy, seed=0, max_steps=6))
    assert len(records) == 6 and records[0].prediction is not None
    env.close()


def test_a_wrist_camera_policy_needs_and_uses_the_wrist_image(tok, tmp_path):
    from vla_demo.constants import OBS_IMAGE_WRIST
    from vla_demo.evaluate import rollout
    from vla_demo.sim.env import TabletopEnv

    policy = LanguageConditionedPolicy.build("default", tokenizer=tok, seed=0, wrist=True, **TINY)
    assert policy.needs_wrist
    with pytest.raises(ValueError, match="wrist camera"):
        policy.predict(image(), "lift the cube")
    a = policy.predict(image(), "lift the cube", wrist=image(1)).chunk
    b = policy.predict(image(), "lift the cube", wrist=image(2)).chunk
    assert not np.allclose(a, b)  # the wrist image reaches the actions
    loaded = LanguageConditionedPolicy.from_pretrained(policy.save_pretrained(tmp_path / "ckpt"))
    assert loaded.needs_wrist
    np.testing.assert_array_equal(loaded.predict(image(), "lift the cube", wrist=image(1)).chunk, a)
    batch = {OBS_IMAGE_FRONT: torch.rand(2, 3, 40, 40), TASK: ["lift the cube", "touch the ball"],
             "action": torch.zeros(2, 4, 7), "action_is_pad": torch.zeros(2, 4, dtype=torch.bool)}
    with pytest.raises(ValueError, match=OBS_IMAGE_WRIST):
        policy.forward(batch)
    loss, _ = policy.forward({**batch, OBS_IMAGE_WRIST: torch.rand(2, 3, 40, 40)})
    assert torch.isfinite(loss)
    env = TabletopEnv(image_size=(32, 32), wrist_camera=True)
    assert len(list(rollout(env, policy, seed=0, max_steps=3))) == 3
    env.close()


def test_a_wrist_size_policy_resizes_the_wrist_image_to_its_own_size(tok, tmp_path):
    from vla_demo.constants import OBS_IMAGE_WRIST

    policy = LanguageConditionedPolicy.build("default", tokenizer=tok, seed=0, wrist=True, wrist_size=16, **TINY)
    a = policy.predict(image(), "lift the cube", wrist=image(1)).chunk  # a 64 px wrist image, shrunk to 16
    pred = policy.predict(image(), "lift the cube", wrist=image(1), return_attention=True)
    np.testing.assert_allclose(pred.chunk, a, atol=1e-5)  # the explicit attention path computes the same
    assert pred.attention.image.shape[-2:] == policy.model.grid  # the front camera's map, whatever the wrist's size
    assert not np.allclose(a, policy.predict(image(), "lift the cube", wrist=image(2)).chunk)
    loaded = LanguageConditionedPolicy.from_pretrained(policy.save_pretrained(tmp_path / "ckpt"))
    assert loaded.model.config.wrist_image_size == 16
    np.testing.assert_array_equal(loaded.predict(image(), "lift the cube", wrist=image(1)).chunk, a)
    batch = {OBS_IMAGE_FRONT: torch.rand(2, 3, 32, 32), OBS_IMAGE_WRIST: torch.rand(2, 3, 32, 32), TASK: ["lift the cube", "touch the ball"],
             "action": torch.zeros(2, 4, 7), "action_is_pad": torch.zeros(2, 4, dtype=torch.bool)}
    loss, _ = policy.forward(batch)  # the wrist batch is fitted to 16 px
    assert torch.isfinite(loss)


def test_forward_supervises_word_roles_from_the_instructions(tok, tmp_path):
    policy = LanguageConditionedPolicy.build("default", tokenizer=tok, seed=0, keypoints=2, word_roles=True, role_binding=True, **TINY)
    batch = {OBS_IMAGE_FRONT: torch.rand(3, 3, 32, 32), TASK: ["stack the red cube on the blue can", "dance", "lift the ball"],
             "action": torch.zeros(3, 4, 7), "action_is_pad": torch.zeros(3, 4, dtype=torch.bool)}
    loss, logs = policy.forward(batch)
    assert logs["role_loss"] > 0 and logs["binding_loss"] > 0
    # Only what the grammar's parser labels counts: the unparseable row changes nothing.
    _, alone = policy.forward({k: v if k != TASK else ["stack the red cube on the blue can", "lift the cube", "lift the ball"]
                               for k, v in batch.items()})
    assert alone["role_loss"] != logs["role_loss"]  # a parseable row does count
    only_dance = {k: (v[1:2] if k != TASK else ["dance"]) for k, v in batch.items()}
    assert policy.forward(only_dance)[1]["role_loss"] == 0.0
    # Every word dropped: no word has a label left to learn from.
    all_dropped = policy.forward(batch, word_drop=1.0 - 1e-9, generator=torch.Generator().manual_seed(0))[1]
    assert all_dropped["role_loss"] == 0.0 and all_dropped["binding_loss"] == 0.0
    loaded = LanguageConditionedPolicy.from_pretrained(policy.save_pretrained(tmp_path / "ckpt"))
    assert loaded.model.config.word_roles and loaded.forward(batch)[1]["role_loss"] == pytest.approx(logs["role_loss"])


def test_forward_supervises_the_object_head_from_the_batchs_labels(tok, tmp_path):
    policy = LanguageConditionedPolicy.build("default", tokenizer=tok, seed=0, keypoints=2, object_head=True, **TINY)
    rows = torch.zeros(2, 5, 7)
    rows[:, :, :2] = -1
    rows[0, 0, :4] = torch.tensor([0.0, 1.0, -0.5, 0.25])  # a red cylinder left of centre, in the front image
    batch = {OBS_IMAGE_FRONT: torch.rand(2, 3, 32, 32), TASK: ["lift the cube", "touch the ball"],
             "action": torch.zeros(2, 4, 7), "action_is_pad": torch.zeros(2, 4, dtype=torch.bool)}
    loss, logs = policy.forward({**batch, "object_labels": rows.view(2, -1)})
    assert logs["object_loss"] > 0 and logs["object_shape_acc"] in (0.0, 1.0)
    plain_loss, plain = policy.forward(batch)  # webcam or corrected episodes carry no labels
    assert "object_loss" not in plain and loss.item() == pytest.approx(plain_loss.item() + 0.5 * logs["object_loss"], rel=1e-5)
    loaded = LanguageConditionedPolicy.from_pretrained(policy.save_pretrained(tmp_path / "ckpt"))
    assert loaded.model.config.object_head
    assert loaded.forward({**batch, "object_labels": rows.view(2, -1)})[1]["object_loss"] == pytest.approx(logs["object_loss"])


def test_forward_teaches_object_hue_shapes_from_recoloured_copies(tok, tmp_path):
    kw = dict(tokenizer=tok, seed=0, keypoints=2, object_head=True, **TINY)
    hued, plain = (LanguageConditionedPolicy.build("default", object_hue=flag, **kw) for flag in (True, False))
    rows = torch.zeros(2, 5, 7)
    rows[:, :, :2] = -1
    rows[:, 0, :4] = torch.tensor([0.0, 1.0, -0.5, 0.25])
    batch = {OBS_IMAGE_FRONT: torch.rand(2, 3, 32, 32), TASK: ["lift the cube", "touch the ball"],
             "action": torch.zeros(2, 4, 7), "action_is_pad": torch.zeros(2, 4, dtype=torch.bool), "object_labels": rows.view(2, -1)}
    hued.model.train(), plain.model.train()
    torch.manual_seed(1)  # state dropout and the copies' angles
    # The same weights (the option adds none): only the shape term's maps differ.
    assert all(torch.equal(a, b) for a, b in zip(hued.model.state_dict().values(), plain.model.state_dict().values()))
    with torch.no_grad():
        h, p = hued.forward(batch)[1], plain.forward(batch)[1]
    assert h["object_loss"] > 0 and h["object_loss"] != pytest.approx(p["object_loss"])
    assert LanguageConditionedPolicy.from_pretrained(hued.save_pretrained(tmp_path / "ckpt")).model.config.object_hue
