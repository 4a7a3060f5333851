"""A model's input signature, and checking request tensors against it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from accel_node.runtime.errors import InputError

Dim = int | str | None

# Manifest dtype names numpy can hold. bfloat16 and string inputs are refused with a message.
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name)
    for name in ("float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")
}


class SpecLike(Protocol):
    """What the runtime needs of a tensor in a signature (``accel_node.models.manifest.TensorSpec``)."""

    @property
    def name(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def shape(self) -> tuple[Dim, ...]: ...


Signature = Sequence[SpecLike]
Arrays = dict[str, np.ndarray[Any, Any]]


def is_static(dim: Dim) -> bool:
    """A dimension the model fixes (ONNX ``dim_value`` > 0); str and None dims are dynamic."""
    return isinstance(dim, int) and dim > 0


def numpy_dtype(spec: SpecLike) -> np.dtype[Any]:
    try:
        return NUMPY_DTYPES[spec.dtype]
    except KeyError:
        raise InputError(
            f"input {spec.name!r} has dtype {spec.dtype}, which this runtime does not serve",
            input_name=spec.name,
        ) from None


def check_names(names: Iterable[str], signature: Signature) -> None:
    given = set(names)
    expected = [spec.name for spec in signature]
    unknown = sorted(given.difference(expected))
    if unknown:
        raise InputError(
            f"unknown input {unknown[0]!r}; the model's inputs are {expected}", input_name=unknown[0]
        )
    missing = [name for name in expected if name not in given]
    if missing:
        raise InputError(f"missing input {missing[0]!r}", input_name=missing[0])


def validate(inputs: Mapping[str, Any], signature: Signature) -> Arrays:
    """Check names, dtypes, ranks, static dims and shared symbolic dims; native, contiguous arrays.

    A symbolic dim name used by several inputs (e.g. ``batch`` in ``input_ids`` and
    ``attention_mask``) must have the same size in all of them.
    """
    check_names(inputs.keys(), signature)
    symbols: dict[str, tuple[int, str]] = {}
    out: Arrays = {}
    for spec in signature:
        name = spec.name
        arr = inputs[name]
        if not isinstance(arr, np.ndarray):
            raise InputError(f"input {name!r} is not an array", input_name=name)
        expected = numpy_dtype(spec)
        native = arr.dtype.newbyteorder("=")
        if native != expected:
            raise InputError(
                f"input {name!r} has dtype {arr.dtype.name}; the model expects {spec.dtype}",
                input_name=name,
            )
        if arr.ndim != len(spec.shape):
            raise InputError(
                f"input {name!r} has rank {arr.ndim} (shape {list(arr.shape)}); the model expects rank "
                f"{len(spec.shape)} (shape {list(spec.shape)})",
                input_name=name,
            )
        for axis, (got, want) in enumerate(zip(arr.shape, spec.shape, strict=True)):
            if is_static(want) and got != want:
                raise InputError(
                    f"input {name!r} has size {got} on axis {axis}; the model fixes it to {want}",
                    input_name=name,
                )
            if isinstance(want, str) and want:
                shared = want
                seen = symbols.setdefault(shared, (got, name))
                if seen[0] != got:
                    raise InputError(
                        f"input {name!r} has size {got} on axis {axis} ({shared!r}), but input {seen[1]!r} "
                        f"has {seen[0]} for {shared!r}",
                        input_name=name,
                    )
        if arr.dtype != native:
            arr = arr.astype(native)
        out[name] = np.ascontiguousarray(arr)
    return out
