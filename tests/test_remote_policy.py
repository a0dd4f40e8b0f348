"""RemotePolicy against a real policy server on loopback: it drives the shared rollout loop like
the local policy, ``--policy http://...`` works in eval and the app's registry, and an unreachable
server or a refused token fails with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from tests.policy_server import TOKEN, running_server
from tests.serving import free_port
from vla_demo.constants import OBS_IMAGE_FRONT, OBS_STATE, SERVE_TOKEN_ENV, TASK


@pytest.fixture(scope="module")
def local(tiny_policy_dir):
    from vla_demo.policy import LanguageConditionedPolicy

    return LanguageConditionedPolicy.from_pretrained(tiny_policy_dir)


@pytest.fixture(scope="module")
def url(tiny_policy_dir):
    from vla_demo.policy import LanguageConditionedPolicy

    with running_server(LanguageConditionedPolicy.from_pretrained(tiny_policy_dir), token=TOKEN) as base:
        yield base


@pytest.fixture
def token_env(monkeypatch):
    monkeypatch.setenv(SERVE_TOKEN_ENV, TOKEN)


def actions_of(env, policy, steps: int) -> np.ndarray:
    from vla_demo.evaluate import rollout

    records = list(rollout(env, policy, seed=11, options={"family": "pick"}, max_steps=steps))
    assert len(records) == steps
    return np.stack([r.action for r in records])


def test_remote_policy_drives_rollout_like_the_local_policy(env, url, local):
    from vla_demo.remote_policy import RemotePolicy

    remote = RemotePolicy(url, token=TOKEN)
    try:
        got = actions_of(env, remote, 6)  # 6 steps with n_action_steps 4: two /act_chunk round trips
        assert remote.n_action_steps == local.config.n_action_steps
        assert remote.last_prediction is not None and remote.last_prediction.attention is None
    finally:
        remote.close()
    want = actions_of(env, local, 6)
    assert got.shape == (6, 7) and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_predict_and_act_match_the_local_policy(url, local):
    from PIL import Image

    from vla_demo.remote_policy import RemotePolicy

    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    state = np.linspace(-0.1, 0.3, 7).astype(np.float32)
    with_pil = Image.fromarray(image)
    remote = RemotePolicy(url, token=TOKEN)
    try:
        pred = remote.predict(with_pil, "push the blue ball left", state, return_attention=True)
        act = remote.act(image, "push the blue ball left", state)
    finally:
        remote.close()
    want = local.predict(image, "push the blue ball left", state)
    np.testing.assert_allclose(pred.chunk, want.chunk, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred.action, want.action, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(act, want.action, rtol=1e-4, atol=1e-5)
    assert pred.attention is None


def test_load_policy_takes_a_url_and_the_token_from_the_environment(env, url, token_env):
    from vla_demo.evaluate import load_policy
    from vla_demo.remote_policy import RemotePolicy

    policy = load_policy(url + "/", env)
    try:
        assert isinstance(policy, RemotePolicy)
        obs, _ = env.reset(seed=3, options={"family": "reach"})
        policy.reset()
        action = policy.select_action(obs)
        assert action.shape == (7,) and np.all(np.isfinite(action))
    finally:
        policy.close()


def test_unreachable_server_fails_with_the_url_in_the_message(env):
    from vla_demo.evaluate import load_policy
    from vla_demo.remote_policy import RemotePolicyError

    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RemotePolicyError, match=f"cannot reach the policy server at {dead}"):
        load_policy(dead, env)


def test_refused_token_and_refused_input_are_told_apart(url, monkeypatch):
    from vla_demo.remote_policy import RemotePolicy, RemotePolicyError

    monkeypatch.delenv(SERVE_TOKEN_ENV, raising=False)
    image = np.zeros((8, 8, 3), np.uint8)
    for token in (None, "not-the-token"):
        refused = RemotePolicy(url, token=token)
        with pytest.raises(RemotePolicyError, match=f"refused the token.*{SERVE_TOKEN_ENV}"):
            refused.act(image, "pick up the red cube")
        refused.close()
    good = RemotePolicy(url, token=TOKEN)
    try:
        with pytest.raises(ValueError, match="refused the input: instruction is empty"):
            good.act(image, "   ")
        with pytest.raises(ValueError, match=r"refused the input: states\[0\] must be 7 numbers"):
            good.select_action({OBS_IMAGE_FRONT: image, TASK: "pick up the red cube", OBS_STATE: np.zeros(3)})
    finally:
        good.close()


def test_url_checks():
    from vla_demo.remote_policy import RemotePolicy, is_policy_url

    assert is_policy_url("https://gpu-box:8000") and not is_policy_url("expert") and not is_policy_url(None)
    for bad in ({"url": "ftp://x"}, {"url": "http://x", "timeout": 0}, {"url": "http://x", "n_action_steps": 0}):
        with pytest.raises(ValueError):
            RemotePolicy(**bad)


# ----------------------------------------------------------------------------- the app's registry


def test_registry_runs_a_url_default_in_sessions_and_refuses_jobs_on_it(tmp_path, env, url, token_env):
    from vla_demo.remote_policy import RemotePolicy
    from vla_demo.ui.registry import PolicyRegistry

    registry = PolicyRegistry(tmp_path, url)
    assert registry.active == "default"
    row = registry.info("default")
    assert row["path"] == url and row["source"] == "policy server"
    name, policy = registry.make_policy(env)
    _, other = registry.make_policy(env)
    assert name == "default" and isinstance(policy, RemotePolicy) and policy is not other
    obs, _ = env.reset(seed=5, options={"family": "pick"})
    assert policy.select_action(obs).shape == (7,)
    with pytest.raises(ValueError, match="policy server"):
        registry.path_of("default")  # what fine-tune / eval / replay jobs ask for
    registry.activate("expert")
    assert registry.rollback() == "default"


def test_registry_with_an_unreachable_url_fails_at_start(tmp_path):
    from vla_demo.remote_policy import RemotePolicyError
    from vla_demo.ui.registry import PolicyRegistry

    with pytest.raises(RemotePolicyError, match="cannot reach"):
        PolicyRegistry(tmp_path, f"http://127.0.0.1:{free_port()}")


def test_app_session_runs_on_a_url_default(tmp_path, url, token_env):
    from vla_demo.ui.app import make_context

    ctx = make_context(url, tmp_path / "data", camera_size=64, display_size=128, jobs=False)
    try:
        s = ctx.session("tab")
        s.reset(seed=1, family="pick")
        state0 = s._obs[OBS_STATE].copy()
        s.step()
        frames = list(s.stream(max_frames=3))
        assert s._t == 1 and not np.array_equal(s._obs[OBS_STATE], state0)
        assert s.version == "default" and "default" in frames[-1].status
        assert s._prediction is not None and s._prediction.chunk.shape[1] == 7  # the path overlay has its chunk
        image, note = s.webcam(np.zeros((48, 48, 3), np.uint8), "pick up the red cube")
        assert image is not None and note.startswith("action [")
    finally:
        ctx.close()
