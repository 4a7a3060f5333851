"""Request/response codecs and signature validation of the inference runtime (no model needed)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from accel_node.api.media import decode_request, decode_response, encode_response, response_media_type
from accel_node.models.manifest import TensorSpec
from accel_node.runtime.codecs import (
    JSON_TYPE,
    NPY_TYPE,
    NPZ_TYPE,
    TensorLimits,
    encode_npy,
    encode_npz,
    json_depth,
)
from accel_node.runtime.errors import InputError, PayloadTooLarge, UnsupportedMediaType
from accel_node.runtime.synthetic import random_inputs
from accel_node.runtime.validation import validate

SIG = (
    TensorSpec("x", "float32", ("batch", 4)),
    TensorSpec("ids", "int64", ("batch", None)),
)
ONE = (TensorSpec("x", "float32", ("batch", 4)),)
LIMITS = TensorLimits()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def error_of(body: bytes, content_type: str = JSON_TYPE, sig: tuple[TensorSpec, ...] = SIG,
             limits: TensorLimits = LIMITS) -> InputError:  # fmt: skip
    with pytest.raises(InputError) as info:
        decode_request(body, content_type, sig, limits)
    return info.value


def js(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_json_nested_lists_with_safe_coercion() -> None:
    body = js({"inputs": {"x": [[1, 2.5, 3, 4]], "ids": [[1, 2, 3]]}})
    out = decode_request(body, "application/json; charset=utf-8", SIG, LIMITS)
    assert out["x"].dtype == np.float32 and out["x"].tolist() == [[1.0, 2.5, 3.0, 4.0]]
    assert out["ids"].dtype == np.int64 and out["ids"].shape == (1, 3)


def test_json_explicit_form() -> None:
    body = js({"inputs": {
        "x": {"dtype": "float32", "shape": [2, 4], "data": list(range(8))},
        "ids": {"dtype": "int64", "shape": [2, 0], "data": []},
    }})  # fmt: skip
    out = decode_request(body, None, SIG, LIMITS)
    assert out["x"].shape == (2, 4) and out["x"][1, 3] == 7.0
    assert out["ids"].shape == (2, 0) and out["ids"].dtype == np.int64


@pytest.mark.parametrize(
    ("inputs", "name", "fragment"),
    [
        ({"x": [[0.0] * 4]}, "ids", "missing input"),
        ({"x": [[0.0] * 4], "ids": [[1]], "y": [1]}, "y", "unknown input"),
        ({"x": [[0.0] * 4], "ids": [[1.5]]}, "ids", "holds floats"),  # no float -> int coercion
        ({"x": [[True] * 4], "ids": [[1]]}, "x", "holds booleans"),
        ({"x": [["a"] * 4], "ids": [[1]]}, "x", "holds strings"),
        ({"x": [[0.0] * 4], "ids": [[2**63]]}, "ids", "outside the range"),
        ({"x": [[1e39] * 4], "ids": [[1]]}, "x", "outside the range of float32"),
        ({"x": [[0.0] * 3], "ids": [[1]]}, "x", "fixes it to 4"),
        ({"x": [0.0] * 4, "ids": [[1]]}, "x", "rank 1"),
        ({"x": [[0.0] * 4, [0.0] * 3], "ids": [[1]]}, "x", "rectangular"),
        ({"x": [[0.0] * 4, [0.0] * 4], "ids": [[1]]}, "ids", "'batch'"),  # symbolic dims must agree
        ({"x": {"dtype": "float64", "shape": [1, 4], "data": [0] * 4}, "ids": [[1]]}, "x", "dtype 'float64'"),
        ({"x": {"dtype": "float32", "shape": [1, 4], "data": [0] * 3}, "ids": [[1]]}, "x", "needs 4 values"),
        ({"x": {"dtype": "float32", "shape": [1, -4], "data": []}, "ids": [[1]]}, "x", "non-negative"),
        ({"x": {"dtype": "float32", "shape": [1, 4], "data": [[0] * 4]}, "ids": [[1]]}, "x", "flat list"),
        ({"x": {"dtype": "float32", "shape": [1, 4]}, "ids": [[1]]}, "x", "exactly the keys"),
        ({"x": "zeros", "ids": [[1]]}, "x", "nested list"),
    ],
)
def test_json_input_errors_name_the_input(inputs: dict[str, object], name: str, fragment: str) -> None:
    err = error_of(js({"inputs": inputs}))
    assert err.input_name == name
    assert fragment in str(err) and repr(name) in str(err)
    assert err.status == 400


def test_malformed_bodies() -> None:
    assert "not valid JSON" in str(error_of(b"{not json"))
    assert "must be" in str(error_of(js([1, 2])))
    assert "must be" in str(error_of(js({"inputs": {}, "extra": 1})))
    assert "valid .npz" in str(error_of(b"PK\x03\x04garbage", NPZ_TYPE))
    assert "valid .npy" in str(error_of(b"\x93NUMPY garbage", NPY_TYPE, ONE))
    with pytest.raises(UnsupportedMediaType) as info:
        decode_request(b"x", "text/csv", SIG, LIMITS)
    assert info.value.status == 415


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_json_is_a_400_not_a_crash(depth: int) -> None:
    # issue 11, finding 10: 100k levels made the parser raise RecursionError (a 500 from the API).
    nested = b"[" * depth + b"1" + b"]" * depth
    err = error_of(b'{"inputs": {"x": ' + nested + b', "ids": [[1]]}}')
    assert err.status == 400 and "nested more than" in str(err)
    # Brackets inside strings do not count; escaped quotes do not end a string.
    assert json_depth(js({"a": ["[[[[" * 50, '\\"[[[' * 50]})) == 2


def test_size_bounds() -> None:
    small = TensorLimits(max_body_bytes=1000, max_json_bytes=100, max_elements=10, max_json_elements=5)
    with pytest.raises(PayloadTooLarge):
        decode_request(js({"inputs": {"x": [[0.0] * 4] * 30, "ids": [[1]] * 30}}), JSON_TYPE, SIG, small)
    with pytest.raises(PayloadTooLarge):  # under the byte bound, over the element bound
        decode_request(js({"inputs": {"x": [[0] * 4] * 2, "ids": [[1]] * 2}}), JSON_TYPE, SIG, small)
    with pytest.raises(PayloadTooLarge):
        decode_request(b"\0" * 1001, NPZ_TYPE, SIG, small)
    # A deflated member that would expand far beyond the bound is refused from its header alone.
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.zeros((100_000, 4), np.float32), ids=np.zeros((100_000, 1), np.int64))
    assert len(buf.getvalue()) < 10_000
    with pytest.raises(PayloadTooLarge) as info:
        decode_request(buf.getvalue(), NPZ_TYPE, SIG, TensorLimits(max_elements=1000))
    assert "400000 elements" in str(info.value)


def test_npz_round_trip_and_byte_order() -> None:
    x = np.arange(8, dtype=">f4").reshape(2, 4)  # big-endian is converted, not refused
    ids = np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3))
    out = decode_request(npz_bytes(x=x, ids=ids), NPZ_TYPE, SIG, LIMITS)
    assert out["x"].dtype == np.float32 and out["x"].dtype.isnative
    np.testing.assert_array_equal(out["x"], x)
    np.testing.assert_array_equal(out["ids"], ids)
    assert out["ids"].flags.c_contiguous


def test_npz_and_npy_refusals() -> None:
    objects = np.array([{"a": 1}, None], dtype=object)
    buf = io.BytesIO()
    np.savez(buf, x=objects, ids=np.zeros((2, 1), np.int64))
    err = error_of(buf.getvalue(), NPZ_TYPE)
    assert "object array" in str(err) and err.input_name == "x"
    obj_npy = io.BytesIO()
    np.save(obj_npy, objects, allow_pickle=True)
    assert "object array" in str(error_of(obj_npy.getvalue(), NPY_TYPE, ONE))
    # dtype mismatch: binary tensors get no coercion
    err = error_of(npz_bytes(x=np.zeros((1, 4), np.float64), ids=np.zeros((1, 1), np.int64)), NPZ_TYPE)
    assert err.input_name == "x" and "float64" in str(err)
    # a member that is not an array, a truncated array, trailing bytes
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as archive:
        archive.writestr("x.txt", "hello")
    assert "not a .npy array" in str(error_of(zbuf.getvalue(), NPZ_TYPE))
    good = encode_npy(np.zeros((1, 4), np.float32))
    assert "truncated" in str(error_of(good[:-3], NPY_TYPE, ONE))
    assert "trailing" in str(error_of(good + b"x", NPY_TYPE, ONE))
    assert "one tensor" in str(error_of(good, NPY_TYPE, SIG))  # .npy only for single-input models
    assert decode_request(good, NPY_TYPE, ONE, LIMITS)["x"].shape == (1, 4)


def test_validate_arrays_directly() -> None:
    ok = validate({"x": np.zeros((3, 4), np.float32), "ids": np.zeros((3, 9), np.int64)}, SIG)
    assert ok["ids"].shape == (3, 9)
    with pytest.raises(InputError, match="'ids' has dtype int32"):
        validate({"x": np.zeros((3, 4), np.float32), "ids": np.zeros((3, 9), np.int32)}, SIG)
    with pytest.raises(InputError, match="not an array"):
        validate({"x": [[0.0] * 4], "ids": np.zeros((1, 1), np.int64)}, SIG)
    with pytest.raises(InputError, match="does not serve"):
        validate({"s": np.zeros(1)}, (TensorSpec("s", "string", (1,)),))


def test_response_encoders_round_trip() -> None:
    outputs: dict[str, np.ndarray] = {
        "y": np.arange(6, dtype=np.float32).reshape(2, 3),
        "n": np.array([[1], [2]], dtype=np.int64),
        "s": np.array(["a", "bc"], dtype=object),  # ORT string outputs are object arrays
    }
    for kind in (JSON_TYPE, NPZ_TYPE):
        body = encode_response(outputs, kind)
        back = decode_response(body, kind, LIMITS)
        assert set(back) == {"y", "n", "s"}
        np.testing.assert_array_equal(back["y"], outputs["y"])
        assert back["y"].dtype == np.float32 and back["n"].dtype == np.int64
        assert back["s"].tolist() == ["a", "bc"]
    assert b"pickle" not in encode_npz(outputs)  # strings are stored as fixed-width unicode
    single = {"y": outputs["y"]}
    back = decode_response(encode_response(single, NPY_TYPE), NPY_TYPE, LIMITS, npy_name="y")
    np.testing.assert_array_equal(back["y"], single["y"])
    with pytest.raises(InputError):
        encode_response(outputs, NPY_TYPE)


def test_response_media_type_negotiation() -> None:
    assert response_media_type(None, JSON_TYPE, 1) == JSON_TYPE
    assert response_media_type("*/*", NPZ_TYPE, 2) == NPZ_TYPE
    assert response_media_type(None, NPY_TYPE, 2) == NPZ_TYPE
    assert response_media_type("application/x-npy, application/json", JSON_TYPE, 1) == NPY_TYPE
    assert response_media_type("application/x-npy, application/json", NPZ_TYPE, 3) == JSON_TYPE
    assert response_media_type("text/html", "text/csv", 1) == JSON_TYPE


def test_random_inputs_are_reproducible_and_follow_the_rules() -> None:
    sig = (
        TensorSpec("input_ids", "int64", ("batch", "seq")),
        TensorSpec("attention_mask", "int64", ("batch", "seq")),
        TensorSpec("token_type_ids", "int64", ("batch", "seq")),
        TensorSpec("pixels", "float32", (None, 3, 8)),
    )
    a = random_inputs(sig, batch=3, seq_len=5, seed=7)
    b = random_inputs(sig, batch=3, seq_len=5, seed=7)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert a["input_ids"].shape == (3, 5) and a["input_ids"].min() >= 0 and a["input_ids"].max() < 16
    assert (a["attention_mask"] == 1).all() and (a["token_type_ids"] == 0).all()
    assert a["pixels"].shape == (3, 3, 8) and a["pixels"].dtype == np.float32
    assert not np.array_equal(a["pixels"], random_inputs(sig, batch=3, seq_len=5, seed=8)["pixels"])
