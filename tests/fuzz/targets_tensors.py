"""Fuzz targets of the tensor codecs: request bodies (JSON, .npz, .npy) as the API decodes them for a
model's signature, and response bodies as the client decodes them. Request bodies come from the local
API, responses from a node the client talks to; both are untrusted bytes."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from accel_node.models.manifest import TensorSpec
from accel_node.runtime.codecs import (
    JSON_TYPE,
    NPY_TYPE,
    NPZ_TYPE,
    TensorLimits,
    decode_inputs,
    decode_outputs,
    encode_json,
    encode_npy,
    encode_npz,
)
from accel_node.runtime.errors import InputError
from tests.fuzz.harness import accepting, target

SIGNATURE = (
    TensorSpec("x", "float32", ("batch", 4)),
    TensorSpec("ids", "int64", ("batch",)),
    TensorSpec("mask", "bool", (None,)),
)
ONE_INPUT = (TensorSpec("x", "float16", (2, None)),)
LIMITS = TensorLimits(
    max_body_bytes=1 << 20, max_json_bytes=1 << 20, max_elements=1 << 16, max_json_elements=1 << 12
)


def sample_inputs() -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    return {
        "x": np.arange(8, dtype=np.float32).reshape(2, 4),
        "ids": np.array([3, -1], dtype=np.int64),
        "mask": np.array([True, False, True]),
    }


def _json_seeds() -> list[bytes]:
    inputs = sample_inputs()
    return [
        json.dumps({"inputs": {n: a.tolist() for n, a in inputs.items()}}).encode(),
        json.dumps({"inputs": json.loads(encode_json(inputs))["outputs"]}).encode(),
    ]


@target("tensor_json", _json_seeds)
def fuzz_tensor_json(data: bytes) -> None:
    with accepting(InputError):
        decode_inputs(data, JSON_TYPE, SIGNATURE, LIMITS)


def compressed_npz(arrays: dict[str, np.ndarray], compression: int) -> bytes:  # type: ignore[type-arg]
    """What ``numpy.savez_compressed`` writes, with any of zip's compressions."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, array in arrays.items():
            archive.writestr(f"{name}.npy", encode_npy(array))
    return buffer.getvalue()


def _npz_seeds() -> list[bytes]:
    inputs = sample_inputs()
    methods = (zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
    return [encode_npz(inputs), *(compressed_npz(inputs, method) for method in methods)]


@target("tensor_npz", _npz_seeds, max_len=8192)
def fuzz_tensor_npz(data: bytes) -> None:
    with accepting(InputError):
        decode_inputs(data, NPZ_TYPE, SIGNATURE, LIMITS)


def _npy_seeds() -> list[bytes]:
    return [
        encode_npy(np.ones((2, 3), dtype=np.float16)),
        encode_npy(np.asfortranarray(np.ones((2, 3), ">f2"))),
    ]


@target("tensor_npy", _npy_seeds)
def fuzz_tensor_npy(data: bytes) -> None:
    with accepting(InputError):
        decode_inputs(data, NPY_TYPE, ONE_INPUT, LIMITS)


def _outputs_seeds() -> list[bytes]:
    outputs = {**sample_inputs(), "label": np.array(["a", "bc"])}
    return [
        b"\x00" + encode_json(outputs),
        b"\x01" + encode_npz(outputs),
        b"\x02" + encode_npy(outputs["label"]),
    ]


@target("tensor_outputs", _outputs_seeds, max_len=8192)
def fuzz_tensor_outputs(data: bytes) -> None:
    """A response body as the client decodes it; the first byte picks the media type."""
    if not data:
        return
    kind = (JSON_TYPE, NPZ_TYPE, NPY_TYPE)[data[0] % 3]
    with accepting(InputError):
        decode_outputs(data[1:], kind, LIMITS)
