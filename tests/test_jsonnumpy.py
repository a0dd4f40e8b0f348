"""vla_demo.jsonnumpy writes and reads the json-numpy package's format (checked against encodings
written out by hand, as ``json_numpy.dumps`` produces them) and refuses unsafe objects."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla_demo import jsonnumpy

# What json_numpy 2.x writes (json.dumps' default separators; key order __numpy__, dtype, shape).
PACKAGE_TEXTS = {
    "uint8": ('{"__numpy__": "AQL/", "dtype": "|u1", "shape": [3]}', np.array([1, 2, 255], np.uint8)),
    "float32": ('{"__numpy__": "AACAPwAAAMA=", "dtype": "<f4", "shape": [2]}', np.array([1.0, -2.0], np.float32)),
    "scalar": ('{"__numpy__": "AADAPw==", "dtype": "<f4", "shape": []}', np.array(1.5, np.float32)),
    "int64_2d": ('{"__numpy__": "AQAAAAAAAAACAAAAAAAAAAMAAAAAAAAABAAAAAAAAAA=", "dtype": "<i8", "shape": [2, 2]}',
                 np.array([[1, 2], [3, 4]], np.int64)),
}


@pytest.mark.parametrize("name", list(PACKAGE_TEXTS))
def test_encoding_is_byte_for_byte_the_packages(name):
    text, value = PACKAGE_TEXTS[name]
    assert jsonnumpy.dumps(value) == text


@pytest.mark.parametrize("name", list(PACKAGE_TEXTS))
def test_decodes_the_packages_text(name):
    text, value = PACKAGE_TEXTS[name]
    out = jsonnumpy.loads(text)
    assert out.dtype == value.dtype and out.shape == value.shape
    np.testing.assert_array_equal(out, value)
    assert out.flags.writeable


def test_big_endian_input_is_decoded_to_native_order():
    out = jsonnumpy.loads('{"__numpy__": "PwAAAL+AAAA=", "dtype": ">f4", "shape": [2]}')
    np.testing.assert_array_equal(out, [0.5, -1.0])
    assert out.dtype.isnative


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int16, np.int32, np.float16, np.float32, np.float64])
def test_round_trip_inside_other_json(dtype):
    arr = (np.arange(24).reshape(2, 3, 4) % 2).astype(dtype)
    out = jsonnumpy.loads(jsonnumpy.dumps({"x": [arr, "text", 3], "y": arr[:, ::2]}))  # a non-contiguous view too
    np.testing.assert_array_equal(out["x"][0], arr)
    np.testing.assert_array_equal(out["y"], arr[:, ::2])
    assert out["x"][1:] == ["text", 3] and out["x"][0].dtype == arr.dtype


BAD = {
    "bad-base64": ({"__numpy__": "***", "dtype": "|u1", "shape": [3]}, "base64"),
    "too-few-bytes": ({"__numpy__": "AQL/", "dtype": "|u1", "shape": [4]}, "needs 4"),
    "object-dtype": ({"__numpy__": "AAAAAAAAAAA=", "dtype": "|O", "shape": [1]}, "not allowed"),
    "string-dtype": ({"__numpy__": "YWJj", "dtype": "|S3", "shape": [1]}, "not allowed"),
    "structured-dtype": ({"__numpy__": "AQL/", "dtype": [["a", "|u1"]], "shape": [3]}, "must be a string"),
    "unknown-dtype": ({"__numpy__": "AQL/", "dtype": "potato", "shape": [3]}, "not a numpy dtype"),
    "negative-shape": ({"__numpy__": "AQL/", "dtype": "|u1", "shape": [-3]}, "non-negative"),
    "shape-not-list": ({"__numpy__": "AQL/", "dtype": "|u1", "shape": "3"}, "list"),
    "huge-shape": ({"__numpy__": "AQL/", "dtype": "|u1", "shape": [2**40, 2**40]}, "more than"),
    "extra-key": ({"__numpy__": "AQL/", "dtype": "|u1", "shape": [3], "x": 1}, "exactly the keys"),
    "data-not-string": ({"__numpy__": 5, "dtype": "|u1", "shape": [3]}, "base64 string"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_refuses_unsafe_or_inconsistent_objects(name):
    obj, words = BAD[name]
    with pytest.raises(jsonnumpy.JsonNumpyError, match=words):
        jsonnumpy.loads(json.dumps(obj))


def test_encode_refuses_object_arrays_and_dumps_refuses_nan():
    with pytest.raises(jsonnumpy.JsonNumpyError):
        jsonnumpy.encode(np.array([object()]))
    with pytest.raises(ValueError):
        jsonnumpy.dumps({"x": float("nan")})
