"""Synthetic inputs: the one generator of reproducible input batches for a signature.

Variants' accuracy batch and benchmark sweeps both use :func:`random_inputs`, so a figure measured
in one place is about the same inputs as a figure measured in the other.
"""

from __future__ import annotations

import numpy as np

from accel_node.runtime.validation import Arrays, Signature, is_static, numpy_dtype

RANDOM_INT_HIGH = 16  # synthetic integer inputs are drawn from [0, RANDOM_INT_HIGH)


def random_inputs(signature: Signature, *, batch: int, seq_len: int, seed: int) -> Arrays:
    """A reproducible input batch for ``signature``.

    Shapes: a dynamic first dim becomes ``batch``, every other dynamic dim ``seq_len``; static dims
    stay. Values: floats ~ N(0, 1); integers uniform in [0, RANDOM_INT_HIGH) (valid
    token ids for any vocabulary of at least 16); inputs whose name contains ``mask`` are all ones
    (True for bool), and ``token_type``/``segment`` ids are zeros (segment vocabularies are often 2).
    """
    rng = np.random.default_rng(seed)
    out: Arrays = {}
    for spec in signature:
        dtype = numpy_dtype(spec)
        shape = tuple(
            d if isinstance(d, int) and is_static(d) else (batch if axis == 0 else seq_len)
            for axis, d in enumerate(spec.shape)
        )  # fmt: skip
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
