"""A model's input signature, and checking request tensors against it.

The rule is to be never stricter than ONNX Runtime, which checks names, dtypes, ranks and fixed
dims, and nothing else. On top of that this module keeps one promise ORT does not: a symbolic dim
that the model really shares (the same meaningful name on several axes, e.g. ``batch`` on
``input_ids`` and ``attention_mask``) has the same size everywhere it appears, so that a mismatch is
a clear 400 naming the input instead of an ORT error deep in a graph (or a silently wrong answer).

Exporters write placeholders that share nothing: ``?`` on every dynamic axis (paddle2onnx),
``dim_value`` -1 or 0, an empty ``dim_param``, or tf2onnx's ``unk__N`` (one per axis). Those are
free axes (:func:`is_free`), never tied to each other; treating ``?`` as a name would refuse a
paddle export at its standard input shape, which ORT runs.
"""

from __future__ import annotations

import re
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
PLACEHOLDER_NAMES = frozenset({"", "?", "-1"})
_GENERATED = re.compile(r"unk__\d+")  # tf2onnx names every unknown axis unk__<counter>


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


def is_free(dim: Dim) -> bool:
    """A dynamic dim that ties this axis to no other: None, an int <= 0 (``dim_value`` -1 or 0),
    or a placeholder name (``?``, empty, ``unk__N``)."""
    if isinstance(dim, int):
        return dim <= 0
    if dim is None:
        return True
    name = dim.strip()
    return name in PLACEHOLDER_NAMES or _GENERATED.fullmatch(name) is not None


def symbol(dim: Dim) -> str | None:
    """The name of a symbolic dim the model may share between axes; None for static or free dims."""
    if isinstance(dim, str) and not is_free(dim):
        return dim
    return None


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

    A symbolic dim name used on several axes (see the module docstring) must have the same size on
    all of them; free dims take any size. A rank-0 input stays rank 0.
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
            shared = symbol(want)
            if shared is not None:
                seen = symbols.setdefault(shared, (got, name))
                if seen[0] != got:
                    raise InputError(
                        f"input {name!r} has size {got} on axis {axis} ({shared!r}), but input {seen[1]!r} "
                        f"has {seen[0]} for {shared!r}",
                        input_name=name,
                    )
        if arr.dtype != native:
            arr = arr.astype(native)
        # np.ascontiguousarray would turn a 0-d array into shape (1,): copy only when needed.
        out[name] = arr if arr.flags.c_contiguous else arr.copy(order="C")
    return out
