"""json-numpy's wire format for numpy arrays, implemented here (no extra dependency).

The ``json-numpy`` package (github.com/Crimson-Crow/json-numpy, the format OpenVLA's REST deploy
server speaks) writes an array or numpy scalar as a JSON object::

    {"__numpy__": "<base64 of the C-order bytes>", "dtype": "<f4", "shape": [7]}

``dtype`` is ``numpy.lib.format.dtype_to_descr(dtype)``, which for plain dtypes is ``dtype.str``
(``"|u1"`` for uint8, ``"<f4"`` for little-endian float32); a numpy scalar has ``"shape": []``.
:func:`encode` produces exactly that (same keys, same order), so ``json_numpy.loads`` reads our
output and :func:`loads` reads theirs.

Decoding is stricter than the package, because it reads untrusted request bodies: only plain
bool, integer and float dtypes (no objects, strings or structured records), a shape of
non-negative integers that matches the number of bytes, and at most ``max_elements`` values.
Every violation raises :class:`JsonNumpyError` (a ``ValueError``) saying what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import numpy as np

NUMPY_KEY = "__numpy__"
ALLOWED_KINDS = "biuf"  # bool, signed and unsigned integers, floats
DEFAULT_MAX_ELEMENTS = 64 * 1024 * 1024


class JsonNumpyError(ValueError):
    """A json-numpy object that cannot (or may not) be decoded."""


def encode(value: Any) -> dict[str, Any]:
    """An array (or numpy scalar) -> the json-numpy object, keys in the package's order."""
    arr = np.asarray(value)
    if arr.dtype.kind not in ALLOWED_KINDS:
        raise JsonNumpyError(f"cannot encode dtype {arr.dtype}: only bool, integer and float arrays")
    data = np.ascontiguousarray(arr).tobytes()
    return {NUMPY_KEY: base64.b64encode(data).decode("ascii"), "dtype": arr.dtype.str, "shape": list(arr.shape)}


def _dtype(descr: Any) -> np.dtype:
    if not isinstance(descr, str):
        raise JsonNumpyError(f"json-numpy 'dtype' must be a string such as '|u1' or '<f4', got {type(descr).__name__}")
    try:
        dtype = np.dtype(descr)
    except TypeError:
        raise JsonNumpyError(f"json-numpy 'dtype' {descr[:20]!r} is not a numpy dtype") from None
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise JsonNumpyError(f"json-numpy dtype {descr[:20]!r} is not allowed: only bool, integer and float arrays")
    return dtype


def _shape(shape: Any, max_elements: int) -> tuple[int, ...]:
    ok = isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    if not ok or len(shape) > 32:
        raise JsonNumpyError(f"json-numpy 'shape' must be a list of non-negative integers, got {str(shape)[:40]}")
    if math.prod(shape) > max_elements:
        raise JsonNumpyError(f"json-numpy array of shape {tuple(shape)} has more than {max_elements} elements")
    return tuple(shape)


def decode(obj: dict[str, Any], max_elements: int = DEFAULT_MAX_ELEMENTS) -> np.ndarray:
    """A json-numpy object -> a writeable, native-byte-order array (0-d for a scalar)."""
    if set(obj) != {NUMPY_KEY, "dtype", "shape"}:
        raise JsonNumpyError(f"a json-numpy object has exactly the keys __numpy__, dtype and shape, got {sorted(obj)}")
    dtype, shape = _dtype(obj["dtype"]), _shape(obj["shape"], max_elements)
    if not isinstance(obj[NUMPY_KEY], str):
        raise JsonNumpyError("json-numpy '__numpy__' must be a base64 string")
    try:
        data = base64.b64decode(obj[NUMPY_KEY], validate=True)
    except (binascii.Error, ValueError):
        raise JsonNumpyError("json-numpy '__numpy__' is not valid base64") from None
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise JsonNumpyError(f"json-numpy data has {len(data)} bytes but shape {shape} of {dtype} needs {expected}")
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def object_hook(obj: dict[str, Any]) -> Any:
    """``json.loads`` hook: json-numpy objects become arrays, other objects stay dicts."""
    return decode(obj) if NUMPY_KEY in obj else obj


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return encode(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(obj: Any) -> str:
    """``json.dumps`` with numpy arrays and scalars written in json-numpy's format."""
    return json.dumps(obj, default=_default, allow_nan=False)


def loads(text: str | bytes) -> Any:
    """``json.loads`` with json-numpy objects decoded (strictly, see the module docstring)."""
    return json.loads(text, object_hook=object_hook)
