"""The policy server on a real loopback port: OpenVLA's /act request, the batch endpoint, bearer
auth, the size limit, and a clear 4xx JSON answer for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from tests.policy_server import TOKEN, running_server
from tests.serving import free_port
from vla_demo import jsonnumpy

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEXT = "pick up the red cube"


def rng_image(seed: int = 0, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


STATE = np.array([0.4, 0.05, 0.2, 0.0, 0.01, -0.02, 0.08], np.float32)


@pytest.fixture(scope="module")
def local(tiny_policy_dir):
    from vla_demo.policy import LanguageConditionedPolicy

    return LanguageConditionedPolicy.from_pretrained(tiny_policy_dir)


@pytest.fixture(scope="module")
def url(tiny_policy_dir):
    from vla_demo.policy import LanguageConditionedPolicy

    served = LanguageConditionedPolicy.from_pretrained(tiny_policy_dir)
    with running_server(served, token=TOKEN, max_request_mb=1, max_batch=4, name="tiny") as base:
        yield base


@pytest.fixture(scope="module")
def http(url):
    import httpx

    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def post(http, path: str, body, headers=AUTH):
    content = body if isinstance(body, bytes) else jsonnumpy.dumps(body).encode()
    return http.post(path, content=content, headers={**headers, "Content-Type": "application/json"})


def action_of(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(jsonnumpy.loads(response.content), np.float32)


# ----------------------------------------------------------------------------- health and auth


def test_health_needs_no_token_and_describes_the_policy(http):
    r = http.get("/health")
    assert r.status_code == 200
    info = r.json()
    assert info["status"] == "ok" and info["policy"] == "tiny"
    assert info["auth"] is True and info["action_dim"] == 7 and info["chunk_size"] >= 1
    assert info["unnorm_keys"] == ["vla_demo"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer"}],
                         ids=["no-header", "wrong-token", "wrong-scheme", "token-with-suffix", "empty-bearer"])
@pytest.mark.parametrize("path", ["/act", "/act_chunk"])
def test_post_endpoints_refuse_a_missing_or_wrong_token(http, path, headers):
    r = post(http, path, {"image": rng_image(), "instruction": TEXT}, headers=headers)
    assert r.status_code == 401
    assert "token" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"


# ----------------------------------------------------------------------------- /act


@pytest.mark.parametrize("state", [None, STATE], ids=["no-state", "state"])
def test_act_returns_the_local_policys_action_json_numpy_encoded(http, local, state):
    image = rng_image(1)
    body = {"image": image, "instruction": TEXT, "unnorm_key": None}
    if state is not None:
        body["state"] = state.tolist()
    r = post(http, "/act", body)
    raw = json.loads(r.content)
    assert set(raw) == {"__numpy__", "dtype", "shape"} and raw["dtype"] == "<f4" and raw["shape"] == [7]
    action = action_of(r)
    assert action.shape == (7,) and np.all(np.isfinite(action))
    np.testing.assert_allclose(action, local.act(image, TEXT, state), rtol=1e-5, atol=1e-6)


def test_state_changes_the_answer(http):
    """The state is not ignored (guards the comparison above against a server that drops it)."""
    image = rng_image(2)
    a = action_of(post(http, "/act", {"image": image, "instruction": TEXT, "state": STATE}))
    b = action_of(post(http, "/act", {"image": image, "instruction": TEXT}))
    assert not np.allclose(a, b)


def nested(image: np.ndarray) -> list:
    return image.tolist()


ACCEPTED = {
    "nested-list-image": lambda im: {"image": nested(im), "instruction": TEXT},
    "int64-json-numpy-image": lambda im: {"image": im.astype(np.int64), "instruction": TEXT},
    "float-image-in-0-1": lambda im: {"image": im.astype(np.float32) / 255, "instruction": TEXT},
    "unnorm-key-vla-demo": lambda im: {"image": im, "instruction": TEXT, "unnorm_key": "vla_demo"},
    "extra-keys-ignored": lambda im: {"image": im, "instruction": TEXT, "do_sample": False},
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_equivalent_requests_get_the_same_action(http, local, name):
    image = rng_image(3)
    action = action_of(post(http, "/act", ACCEPTED[name](image)))
    np.testing.assert_allclose(action, local.act(image, TEXT), rtol=1e-5, atol=1e-5)


def test_openvla_double_encoded_request_gets_a_double_encoded_answer(http, local):
    image = rng_image(4)
    inner = jsonnumpy.dumps({"image": image, "instruction": TEXT})
    r = post(http, "/act", {"encoded": inner})
    assert r.status_code == 200
    text = r.json()
    assert isinstance(text, str)
    np.testing.assert_allclose(jsonnumpy.loads(text), local.act(image, TEXT), rtol=1e-5, atol=1e-6)


def test_list_format_answers_a_plain_list(http, local):
    image = rng_image(5)
    r = post(http, "/act", {"image": nested(image), "instruction": TEXT, "format": "list"})
    assert r.status_code == 200 and isinstance(r.json(), list) and len(r.json()) == 7
    np.testing.assert_allclose(r.json(), local.act(image, TEXT), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("text", ["Hebe den RÖTEN Würfel 🤖 ☃", "x" * 5000, "pick\x00 up\tthe\nred cube"],
                         ids=["non-ascii", "very-long", "control-characters"])
def test_odd_instructions_are_handled_not_refused(http, text):
    r = post(http, "/act", {"image": rng_image(6), "instruction": text})
    action = action_of(r)
    assert action.shape == (7,) and np.all(np.isfinite(action))
    assert ("truncated" in r.headers.get("x-vla-demo-warning", "")) == (len(text) > 256)


def test_concurrent_requests_are_all_answered(http, local):
    image, results, errors = rng_image(7), [], []

    def one():
        try:
            results.append(action_of(post(http, "/act", {"image": image, "instruction": TEXT})))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 4
    for a in results:
        np.testing.assert_allclose(a, local.act(image, TEXT), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- /act_chunk


def test_act_chunk_returns_every_items_chunk_from_one_batch(http, local):
    images = [rng_image(10 + i, size=32 + 8 * i) for i in range(3)]
    texts = [TEXT, "push the blue ball to the left", "put the green can on the plate"]
    states = [STATE, STATE * 0.5, STATE * 0]
    r = post(http, "/act_chunk", {"images": images, "instructions": texts, "states": states})
    chunks = action_of(r)
    assert chunks.shape == (3, local.model.config.chunk_size, 7) and np.all(np.isfinite(chunks))
    for i in range(3):
        np.testing.assert_allclose(chunks[i], local.predict(images[i], texts[i], states[i]).chunk, rtol=1e-4, atol=1e-5)


def test_act_chunk_takes_a_4d_array_and_no_states(http, local):
    images = np.stack([rng_image(20), rng_image(21)])
    chunks = action_of(post(http, "/act_chunk", {"images": images, "instructions": [TEXT, TEXT]}))
    assert chunks.shape[:1] == (2,) and chunks.shape[2] == 7
    np.testing.assert_allclose(chunks[1], local.predict(images[1], TEXT).chunk, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- refusals


def test_oversize_body_is_refused_with_413_before_parsing(http):
    r = post(http, "/act", b'{"image": [' + b"0, " * 600_000 + b'0], "instruction": "x"}')
    assert r.status_code == 413 and "larger than" in r.json()["error"]


def test_chunked_oversize_body_is_refused_with_413(http):
    def parts():
        for _ in range(20):
            yield b" " * 100_000

    r = http.post("/act", content=parts(), headers=AUTH)
    assert r.status_code == 413 and "larger than" in r.json()["error"]


IMG = rng_image(30, size=16)


def _np(dtype: str, shape: list[int], data: str = "AQL/") -> dict:
    return {"__numpy__": data, "dtype": dtype, "shape": shape}


# name -> (path, body: bytes or JSON-able, expected status, words in the message)
BAD_INPUTS = {
    "not-json": ("/act", b"{not json", 400, "not valid json"),
    "empty-body": ("/act", b"", 400, "empty request body"),
    "body-is-a-list": ("/act", b"[1, 2, 3]", 400, "json object"),
    "deeply-nested-json": ("/act", b"[" * 200_000 + b"]" * 200_000, 400, "nested too deeply"),
    "integer-too-long": ("/act", b'{"image": ' + b"9" * 5000 + b', "instruction": "x"}', 400, "not valid json"),
    "invalid-utf8": ("/act", b'{"image": [], "instruction": "\xff\xfe"}', 400, "not valid json"),
    "missing-image": ("/act", {"instruction": TEXT}, 400, "missing image"),
    "missing-instruction": ("/act", {"image": IMG}, 400, "missing instruction"),
    "image-two-channels": ("/act", {"image": np.zeros((16, 16, 2), np.uint8), "instruction": TEXT}, 400, "shape"),
    "image-1d": ("/act", {"image": np.zeros(48, np.uint8), "instruction": TEXT}, 400, "shape"),
    "image-1x1": ("/act", {"image": np.zeros((1, 1, 3), np.uint8), "instruction": TEXT}, 400, "shape"),
    "image-empty": ("/act", {"image": np.zeros((0, 0, 3), np.uint8), "instruction": TEXT}, 400, "shape"),
    "image-is-a-string": ("/act", {"image": "cat.png", "instruction": TEXT}, 400, "must be an hxwx3"),
    "image-of-strings": ("/act", {"image": [["a", "b"], ["c", "d"]], "instruction": TEXT}, 400, "must hold numbers"),
    "image-ragged-list": ("/act", {"image": [[0, 1], [2]], "instruction": TEXT}, 400, "ragged"),
    "image-int-over-255": ("/act", {"image": [[[300, 0, 0]] * 4] * 4, "instruction": TEXT}, 400, "0..255"),
    "image-negative": ("/act", {"image": [[[-1, 0, 0]] * 4] * 4, "instruction": TEXT}, 400, "0..255"),
    "image-float-over-1": ("/act", {"image": np.full((8, 8, 3), 2.0, np.float32), "instruction": TEXT}, 400, "[0, 1]"),
    "image-float-nan": ("/act", {"image": np.full((8, 8, 3), np.nan, np.float32), "instruction": TEXT}, 400, "nan"),
    "image-bool": ("/act", {"image": np.ones((8, 8, 3), bool), "instruction": TEXT}, 400, "dtype bool"),
    "json-numpy-object-dtype": ("/act", {"image": _np("|O", [1], "AAAAAAAAAAA="), "instruction": TEXT}, 400, "not allowed"),
    "json-numpy-byte-count": ("/act", {"image": _np("|u1", [16, 16, 3]), "instruction": TEXT}, 400, "bytes"),
    "json-numpy-bad-base64": ("/act", {"image": _np("|u1", [3], "@@@@"), "instruction": TEXT}, 400, "base64"),
    "state-nan": ("/act", b'{"image": [[[0,0,0],[0,0,0]],[[0,0,0],[0,0,0]]], "instruction": "go", '
                          b'"state": [0, 0, 0, 0, 0, 0, NaN]}', 400, "nan"),
    "state-infinity": ("/act", b'{"image": [[0, 0], [0, 0]], "instruction": "go", "state": [0, 0, 0, 0, 0, 0, -Infinity]}',
                       400, "infinite"),
    "state-six-numbers": ("/act", {"image": IMG, "instruction": TEXT, "state": [0.0] * 6}, 400, "7 numbers"),
    "state-of-strings": ("/act", {"image": IMG, "instruction": TEXT, "state": ["a"] * 7}, 400, "7 numbers"),
    "state-huge": ("/act", {"image": IMG, "instruction": TEXT, "state": [1e30] * 7}, 400, "within"),
    "instruction-empty": ("/act", {"image": IMG, "instruction": ""}, 400, "empty"),
    "instruction-whitespace": ("/act", {"image": IMG, "instruction": " \t\n "}, 400, "empty"),
    "instruction-number": ("/act", {"image": IMG, "instruction": 42}, 400, "must be a string"),
    "instruction-null": ("/act", {"image": IMG, "instruction": None}, 400, "must be a string"),
    "instruction-lone-surrogate": ("/act", b'{"image": [[0, 0], [0, 0]], "instruction": "go \\ud800"}', 400, "unicode"),
    "unnorm-key-unknown": ("/act", {"image": IMG, "instruction": TEXT, "unnorm_key": "bridge_orig"}, 400, "unnorm_key"),
    "format-unknown": ("/act", {"image": IMG, "instruction": TEXT, "format": "xml"}, 400, "format"),
    "encoded-with-other-keys": ("/act", {"encoded": "{}", "image": IMG}, 400, "only key"),
    "encoded-not-json": ("/act", {"encoded": "{oops"}, 400, "not valid json"),
    "chunk-missing-instructions": ("/act_chunk", {"images": [IMG]}, 400, "missing instructions"),
    "chunk-empty-batch": ("/act_chunk", {"images": [], "instructions": []}, 400, "non-empty"),
    "chunk-length-mismatch": ("/act_chunk", {"images": [IMG, IMG], "instructions": [TEXT]}, 400, "2 images but 1"),
    "chunk-too-many-items": ("/act_chunk", {"images": [IMG] * 5, "instructions": [TEXT] * 5}, 413, "at most 4"),
    "chunk-partial-states": ("/act_chunk", {"images": [IMG, IMG], "instructions": [TEXT, TEXT], "states": [STATE, None]},
                             400, "all or nothing"),
    "chunk-bad-item-image": ("/act_chunk", {"images": [IMG, np.zeros((4, 4, 5), np.uint8)], "instructions": [TEXT, TEXT]},
                             400, "images[1]"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gets_a_4xx_json_error_with_a_clear_message(http, name):
    path, body, status, words = BAD_INPUTS[name]
    r = post(http, path, body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    message = r.json()["error"]
    assert words in message.lower(), message
    assert "traceback" not in r.text.lower()


@pytest.mark.parametrize("method,path,status", [("GET", "/act", 405), ("GET", "/nope", 404), ("POST", "/health", 405)])
def test_unknown_routes_and_methods_answer_json(http, method, path, status):
    r = http.request(method, path, headers=AUTH)
    assert r.status_code == status and r.json()["error"]


def test_server_still_answers_after_the_bad_inputs(http, local):
    image = rng_image(40)
    np.testing.assert_allclose(action_of(post(http, "/act", {"image": image, "instruction": TEXT})),
                               local.act(image, TEXT), rtol=1e-5, atol=1e-6)


class NaNPolicy:
    """The tiny policy's shapes, but every prediction is NaN (a diverged checkpoint)."""

    def __init__(self, real):
        self.model, self.config, self.tokenizer = real.model, real.config, real.tokenizer

    def predict(self, image, instruction, state=None, return_attention=False):
        from vla_demo.policy import Prediction

        chunk = np.full((self.model.config.chunk_size, 7), np.nan, np.float32)
        return Prediction(chunk[0], chunk, None)


def test_a_failing_policy_gives_a_500_json_error_without_a_traceback(local):
    import httpx

    with running_server(NaNPolicy(local)) as base, httpx.Client(base_url=base, timeout=60) as client:
        r = post(client, "/act", {"image": rng_image(50), "instruction": TEXT}, headers={})
        assert r.status_code == 500
        assert "RuntimeError" in r.json()["error"] and "traceback" not in r.text.lower()
        assert client.get("/health").status_code == 200  # and it keeps serving


# ----------------------------------------------------------------------------- starting up


def test_config_refuses_a_public_host_without_a_token():
    from vla_demo.serve import ServeConfig

    with pytest.raises(ValueError, match="--insecure"):
        ServeConfig(host="0.0.0.0")
    assert ServeConfig(host="0.0.0.0", token="t0k").token == "t0k"
    assert ServeConfig(host="0.0.0.0", insecure=True).insecure
    assert ServeConfig(host="::1").token is None and ServeConfig(host="localhost").token is None
    for bad in ({"port": 70000}, {"max_request_mb": 0}, {"max_batch": 0}, {"token": "has space"}, {"token": ""},
                {"threads": 0}):
        with pytest.raises(ValueError):
            ServeConfig(**bad)


def test_cli_refuses_0000_without_a_token(tiny_policy_dir):
    env = {k: v for k, v in os.environ.items() if k != "VLA_DEMO_SERVE_TOKEN"}
    env["PYTHONPATH"] = os.getcwd()
    cmd = [sys.executable, "-m", "vla_demo.serve", "--policy", str(tiny_policy_dir), "--host", "0.0.0.0",
           "--port", str(free_port())]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0 without a token" in done.stderr and "--insecure" in done.stderr


@pytest.mark.parametrize("spec,words", [("expert", "cannot be served"), ("http://127.0.0.1:9", "already a policy server"),
                                        ("/no/such/folder", "no policy checkpoint")])
def test_cli_refuses_what_it_cannot_serve(spec, words, capsys):
    from vla_demo.serve import main

    assert main(["--policy", spec, "--port", str(free_port())]) == 2
    assert words in capsys.readouterr().err


def test_cli_refuses_a_wrist_camera_policy(tmp_path, capsys):
    from vla_demo.policy import LanguageConditionedPolicy
    from vla_demo.serve import main

    path = LanguageConditionedPolicy.build("default", image_size=32, d_model=32, n_heads=2, n_layers=1, head_hidden=32,
                                           wrist=True).save_pretrained(tmp_path / "wrist")
    assert main(["--policy", str(path), "--port", str(free_port())]) == 2
    assert "wrist camera" in capsys.readouterr().err


def test_bench_rows_compare_the_round_trip_with_the_local_call():
    from vla_demo import bench

    rows = {r["name"]: r for r in bench.bench_serve(repeats=2)}
    assert set(rows) == {"serve.local_act_ms", "serve.act_roundtrip_ms"}
    trip, local = rows["serve.act_roundtrip_ms"], rows["serve.local_act_ms"]
    assert local["reference"] is None and trip["reference"] == "serve.local_act_ms" and trip["unit"] == "ms"
    assert trip["value"] > 0 and trip["ratio"] == pytest.approx(trip["value"] / local["value"], rel=1e-2)
