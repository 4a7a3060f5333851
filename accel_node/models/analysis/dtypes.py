"""ONNX element types: their numpy-style names and their sizes in bytes.

Sizes come from the element type and the element count alone, so that the analysis and the partitioner
never need the tensors' data (weights stay on disk or in external files).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import onnx

_T = onnx.TensorProto
_DTYPE_NAMES = {
    _T.FLOAT: "float32", _T.UINT8: "uint8", _T.INT8: "int8", _T.UINT16: "uint16", _T.INT16: "int16",
    _T.INT32: "int32", _T.INT64: "int64", _T.STRING: "string", _T.BOOL: "bool", _T.FLOAT16: "float16",
    _T.DOUBLE: "float64", _T.UINT32: "uint32", _T.UINT64: "uint64", _T.COMPLEX64: "complex64",
    _T.COMPLEX128: "complex128", _T.BFLOAT16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz",
    19: "float8e5m2", 20: "float8e5m2fnuz", 21: "uint4", 22: "int4", 23: "float4e2m1",
}  # fmt: skip
_BITS = {_T.FLOAT: 32, _T.UINT8: 8, _T.INT8: 8, _T.UINT16: 16, _T.INT16: 16, _T.INT32: 32, _T.INT64: 64,
         _T.BOOL: 8, _T.FLOAT16: 16, _T.DOUBLE: 64, _T.UINT32: 32, _T.UINT64: 64, _T.COMPLEX64: 64,
         _T.COMPLEX128: 128, _T.BFLOAT16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4}  # fmt: skip
FLOAT_TYPES = frozenset({_T.FLOAT, _T.FLOAT16, _T.DOUBLE, _T.BFLOAT16, 17, 18, 19, 20, 23})


def dtype_name(elem_type: int) -> str:
    """The numpy-style name of an ONNX element type (``float32``, ``int64``, ...)."""
    return _DTYPE_NAMES.get(elem_type, f"onnx:{elem_type}")


def tensor_bytes(elem_type: int, elements: int) -> int:
    """Bytes of a dense tensor (sub-byte types rounded up; strings count 0 here)."""
    return (elements * _BITS.get(elem_type, 0) + 7) // 8


def numel(shape: Sequence[int]) -> int:
    """Number of elements of a tensor of ``shape`` (1 for a scalar)."""
    return math.prod(shape)


def initializer_bytes(t: onnx.TensorProto) -> int:
    """Bytes an initializer takes (strings by their length), from its dims: the data need not be loaded."""
    if t.data_type == _T.STRING:
        return sum(len(s) for s in t.string_data)
    return tensor_bytes(t.data_type, numel(t.dims))
