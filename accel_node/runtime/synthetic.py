"""Synthetic inputs: the one generator of reproducible input batches for a signature.

Variants' accuracy batch and benchmark sweeps both use :func:`random_inputs`, so a figure measured
in one place is about the same inputs as a figure measured in the other.
"""

from __future__ import annotations

import numpy as np

from accel_node.runtime.validation import Arrays, Dim, Signature, is_static, numpy_dtype, symbol

RANDOM_INT_HIGH = 16  # synthetic integer inputs are drawn from [0, RANDOM_INT_HIGH)


def _batch_symbols(signature: Signature) -> set[str]:
    """Named dims that sit on some input's first axis: those are the batch."""
    return {name for spec in signature if spec.shape and (name := symbol(spec.shape[0])) is not None}


def _size(dim: Dim, axis: int, batch_symbols: set[str], *, batch: int, seq_len: int) -> int:
    if isinstance(dim, int) and is_static(dim):
        return dim
    name = symbol(dim)
    if name is not None:
        return batch if name in batch_symbols else seq_len
    return batch if axis == 0 else seq_len


def random_inputs(signature: Signature, *, batch: int, seq_len: int, seed: int) -> Arrays:
    """A reproducible input batch for ``signature``.

    Shapes: static dims stay; a named dim that is some input's first dim becomes ``batch`` wherever
    it appears (``state [2, N, 128]`` next to ``input [N, T]`` gets N = ``batch`` on its axis 1),
    every other named dim ``seq_len``; a free dim (``?``, -1, None) becomes ``batch`` on axis 0 and
    ``seq_len`` elsewhere. Values: floats ~ N(0, 1); integers uniform in [0, RANDOM_INT_HIGH) (valid
    token ids for any vocabulary of at least 16); inputs whose name contains ``mask`` are all ones
    (True for bool), and ``token_type``/``segment`` ids are zeros (segment vocabularies are often 2).
    """
    rng = np.random.default_rng(seed)
    batch_symbols = _batch_symbols(signature)
    out: Arrays = {}
    for spec in signature:
        dtype = numpy_dtype(spec)
        shape = tuple(
            _size(d, axis, batch_symbols, batch=batch, seq_len=seq_len) for axis, d in enumerate(spec.shape)
        )
        lowered = spec.name.lower()
        if "mask" in lowered:
            out[spec.name] = np.ones(shape, dtype=dtype)
        elif dtype.kind == "f":
            out[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif "token_type" in lowered or "segment" in lowered:
            out[spec.name] = np.zeros(shape, dtype=dtype)
        elif dtype.kind == "b":
            out[spec.name] = rng.random(shape) < 0.5
        else:
            out[spec.name] = rng.integers(0, RANDOM_INT_HIGH, size=shape).astype(dtype)
    return out
