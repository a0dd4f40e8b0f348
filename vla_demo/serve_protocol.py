"""The policy server's wire format, shared by the server (``vla_demo.serve``) and its client
(``vla_demo.remote_policy``).

``POST /act`` takes the request of OpenVLA's REST deploy server (openvla/vla-scripts/deploy.py)::

    {"image": HxWx3 uint8 array, "instruction": "pick up the red cube",
     "unnorm_key": null | "vla_demo",          # optional
     "state": [7 numbers] | null,              # optional, ours: proprioception (metres, radians)
     "format": "json-numpy" | "list"}          # optional, ours: how to write the answer

and answers, as OpenVLA does, with the bare json-numpy encoded (7,) action (float32 here;
``{"__numpy__": ..., "dtype": "<f4", "shape": [7]}``), or a plain list with ``"format": "list"``.
OpenVLA's double encoding for clients without json-numpy works too: ``{"encoded": "<the request as
a JSON string>"}`` is answered with a JSON string holding the json-numpy text.

``POST /act_chunk`` takes a batch, ``{"images": [B images] or a (B, H, W, 3) array,
"instructions": [B strings], "states": null | B x 7}``, and answers with every item's full
predicted chunk, a json-numpy (B, H, 7) float32 array, from one forward pass. ``states`` is all or
nothing: one forward pass either has the proprioceptive token for every item or for none.

Inputs, and what is refused (every refusal is a :class:`RequestError`, answered 4xx with
``{"error": message}``):

* images: json-numpy objects (:mod:`vla_demo.jsonnumpy`) or nested lists; uint8, integers in
  0..255, or floats in [0, 1]; HxW, HxWx1, HxWx3 or HxWx4 (alpha dropped) of any size of at least
  2x2, resized by the policy (what ``LanguageConditionedPolicy`` accepts);
* instructions: any Unicode text (unknown words become the tokenizer's ``[UNK]``); empty or
  whitespace-only text is refused; text longer than ``MAX_INSTRUCTION_CHARS`` is cut to it (the
  answer then carries an ``X-VLA-Demo-Warning`` header), as the app and the env do;
* state: 7 finite numbers of magnitude at most ``STATE_LIMIT`` (or null);
* ``unnorm_key``: in OpenVLA it picks which dataset's statistics un-normalise the action. A
  checkpoint here has exactly one set (its training data's, stored with the weights), named
  ``SERVE_UNNORM_KEY``; null, absent or that name are accepted, any other key is refused (400)
  rather than silently answered in units the client did not ask for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_demo import jsonnumpy
from vla_demo.constants import MAX_INSTRUCTION_CHARS, SERVE_UNNORM_KEY

STATE_LIMIT = 1e4  # metres / radians; anything larger is garbage that would overflow the normaliser
FORMATS = ("json-numpy", "list")
WARNING_HEADER = "X-VLA-Demo-Warning"


class RequestError(ValueError):
    """A request the server refuses: ``status`` (4xx) and a message for the client."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass
class ActRequest:
    """A validated ``/act`` request."""

    image: np.ndarray
    instruction: str
    state: np.ndarray | None
    as_list: bool = False
    encoded: bool = False
    truncated: bool = False


@dataclass
class ChunkRequest:
    """A validated ``/act_chunk`` request (B items)."""

    images: list[np.ndarray]
    instructions: list[str]
    states: np.ndarray | None  # (B, state_dim) or None
    as_list: bool = False
    truncated: bool = False


# ----------------------------------------------------------------------------- bodies


def parse_body(raw: bytes, allow_encoded: bool = True) -> tuple[dict[str, Any], bool]:
    """Request bytes -> (JSON object, whether it came double-encoded)."""
    if not raw.strip():
        raise RequestError("empty request body: send a JSON object")
    try:
        payload = jsonnumpy.loads(raw)
    except jsonnumpy.JsonNumpyError as e:
        raise RequestError(f"bad json-numpy array: {e}") from None
    except RecursionError:
        raise RequestError("request body is not usable JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, over-long integers
        raise RequestError(f"request body is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(payload, dict):
        raise RequestError(f"request body must be a JSON object, got a JSON {type(payload).__name__}")
    if allow_encoded and "encoded" in payload:
        if set(payload) != {"encoded"} or not isinstance(payload["encoded"], str):
            raise RequestError("'encoded' must be the only key, holding the request as a JSON string")
        return parse_body(payload["encoded"].encode("utf-8", "surrogatepass"), allow_encoded=False)[0], True
    return payload, False


def require(payload: dict[str, Any], keys: tuple[str, ...], endpoint: str) -> None:
    missing = [k for k in keys if k not in payload]
    if missing:
        raise RequestError(f"{endpoint} needs {', '.join(repr(k) for k in keys)}; missing {', '.join(missing)}")


# ----------------------------------------------------------------------------- fields


def parse_image(value: Any, field: str) -> np.ndarray:
    """An image field -> (H, W, 3) uint8 (what the policy accepts, see the module docstring)."""
    if isinstance(value, list):
        try:
            value = np.asarray(value)
        except ValueError:
            raise RequestError(f"{field} is a ragged nested list: every row needs the same length") from None
    if not isinstance(value, np.ndarray):
        raise RequestError(f"{field} must be an HxWx3 uint8 array (json-numpy) or a nested list, got a JSON {type(value).__name__}")
    if value.dtype.kind not in "biuf":
        raise RequestError(f"{field} must hold numbers, got {value.dtype.kind!r} values ({value.dtype})")
    if value.dtype.kind in "iu" and value.dtype != np.uint8:
        if value.size and (value.min() < 0 or value.max() > 255):
            raise RequestError(f"{field} integer values must be in 0..255, got [{value.min()}, {value.max()}]")
        value = value.astype(np.uint8)
    from vla_demo.policy import to_image_array

    try:
        return to_image_array(value)
    except ValueError as e:
        raise RequestError(f"{field}: {e}") from None


def parse_instruction(value: Any, field: str) -> tuple[str, bool]:
    """An instruction field -> (text, whether it was truncated)."""
    if not isinstance(value, str):
        raise RequestError(f"{field} must be a string, got a JSON {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{field} is not valid Unicode text (it holds a lone surrogate escape)") from None
    if not value.strip():
        raise RequestError(f"{field} is empty: say what the robot should do")
    if len(value) > MAX_INSTRUCTION_CHARS:
        return value[:MAX_INSTRUCTION_CHARS], True
    return value, False


def parse_state(value: Any, dim: int, field: str) -> np.ndarray | None:
    """A state field -> (dim,) float32, or None when absent / null."""
    if value is None:
        return None
    try:
        s = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise RequestError(f"{field} must be {dim} numbers or null") from None
    if s.shape != (dim,):
        raise RequestError(f"{field} must be {dim} numbers or null, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise RequestError(f"{field} has NaN or infinite values")
    if np.abs(s).max() > STATE_LIMIT:
        raise RequestError(f"{field} values must be within +-{STATE_LIMIT:g} (metres, radians, metres)")
    return s.astype(np.float32)


def parse_options(payload: dict[str, Any]) -> bool:
    """Check ``unnorm_key`` and ``format``; returns whether the answer is a plain list."""
    key = payload.get("unnorm_key")
    if key is not None and key != SERVE_UNNORM_KEY:
        raise RequestError(f"unknown unnorm_key {str(key)[:40]!r}: this server has one action normalisation, "
                           f"the checkpoint's; pass null or {SERVE_UNNORM_KEY!r}")
    fmt = payload.get("format", FORMATS[0])
    if fmt not in FORMATS:
        raise RequestError(f"format must be one of {', '.join(FORMATS)}, got {str(fmt)[:40]!r}")
    return fmt == "list"


# ----------------------------------------------------------------------------- requests


def parse_act(payload: dict[str, Any], state_dim: int, encoded: bool = False) -> ActRequest:
    """A ``/act`` JSON object -> :class:`ActRequest`."""
    require(payload, ("image", "instruction"), "/act")
    as_list = parse_options(payload)
    image = parse_image(payload["image"], "image")
    text, truncated = parse_instruction(payload["instruction"], "instruction")
    state = parse_state(payload.get("state"), state_dim, "state")
    return ActRequest(image, text, state, as_list, encoded, truncated)


def _items(value: Any, field: str, max_batch: int) -> list[Any]:
    if isinstance(value, np.ndarray) and value.ndim >= 1:
        value = list(value)
    if not isinstance(value, list) or not value:
        raise RequestError(f"{field} must be a non-empty list")
    if len(value) > max_batch:
        raise RequestError(f"{field} has {len(value)} items; this server takes at most {max_batch} per request",
                           status=413)
    return value


def parse_chunk(payload: dict[str, Any], state_dim: int, max_batch: int) -> ChunkRequest:
    """A ``/act_chunk`` JSON object -> :class:`ChunkRequest`."""
    require(payload, ("images", "instructions"), "/act_chunk")
    as_list = parse_options(payload)
    images = _items(payload["images"], "images", max_batch)
    texts = _items(payload["instructions"], "instructions", max_batch)
    if len(texts) != len(images):
        raise RequestError(f"got {len(images)} images but {len(texts)} instructions")
    parsed = [parse_instruction(t, f"instructions[{i}]") for i, t in enumerate(texts)]
    states = payload.get("states")
    if states is not None:
        states = _items(states, "states", max_batch)
        if len(states) != len(images):
            raise RequestError(f"got {len(images)} images but {len(states)} states (give one per item, or null)")
        states = np.stack([_state_item(s, state_dim, i) for i, s in enumerate(states)])
    return ChunkRequest([parse_image(im, f"images[{i}]") for i, im in enumerate(images)], [t for t, _ in parsed],
                        states, as_list, any(cut for _, cut in parsed))


def _state_item(value: Any, dim: int, i: int) -> np.ndarray:
    s = parse_state(value, dim, f"states[{i}]")
    if s is None:
        raise RequestError(f"states[{i}] is null: 'states' is all or nothing (null for the whole batch)")
    return s


# ----------------------------------------------------------------------------- answers


def encode_actions(actions: np.ndarray, as_list: bool = False, encoded: bool = False) -> bytes:
    """An action array -> the response body (json-numpy, or a list; double-encoded on request)."""
    arr = np.asarray(actions, dtype=np.float32)
    text = json.dumps(arr.tolist() if as_list else jsonnumpy.encode(arr), allow_nan=False)
    return (json.dumps(text) if encoded else text).encode("utf-8")


def decode_actions(body: bytes | str) -> np.ndarray:
    """A response body -> float32 array (json-numpy, a plain list, or double-encoded)."""
    value = jsonnumpy.loads(body)
    if isinstance(value, str):
        value = jsonnumpy.loads(value)
    return np.asarray(value, dtype=np.float32)


def error_message(body: bytes) -> str:
    """The ``{"error": ...}`` message of a refused request (or the body's start)."""
    try:
        value = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    return str(value.get("error", value)) if isinstance(value, dict) else str(value)[:200]


def act_payload(image: np.ndarray, instruction: str, state: Any = None) -> dict[str, Any]:
    """A ``/act`` request for one observation."""
    body: dict[str, Any] = {"image": np.asarray(image), "instruction": instruction}
    if state is not None:
        body["state"] = np.asarray(state, dtype=np.float32)
    return body


def chunk_payload(images: list[np.ndarray], instructions: list[str], states: list[Any] | None = None) -> dict[str, Any]:
    """A ``/act_chunk`` request for a batch."""
    body: dict[str, Any] = {"images": [np.asarray(im) for im in images], "instructions": list(instructions)}
    if states is not None:
        body["states"] = [np.asarray(s, dtype=np.float32) for s in states]
    return body
