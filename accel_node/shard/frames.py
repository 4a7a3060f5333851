"""Frames as the router handles them: a batch split into micro-batches along axis 0 and merged back, and
two frames compared within a tolerance (spot checks).

A batch is split only where the model's signature says axis 0 is the batch axis of every input
(:func:`accel_node.runtime.batcher.batch_axis_ok`): a model with ``state [2, N, 128]`` next to
``input [N, T]`` (a VAD) has first dims that may agree by chance, and cutting them would cut the
state's layers apart. Such a batch runs whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from accel_node.runtime.batcher import batch_axis_ok
from accel_node.runtime.validation import Signature
from accel_node.shard.errors import ShardRequestError

Arrays = dict[str, np.ndarray[Any, Any]]


def frames_agree(a: Arrays, b: Arrays, *, atol: float, rtol: float) -> tuple[bool, float]:
    """Whether two frames agree (same names, shapes, dtypes; floats within tolerance, others exactly),
    and the largest absolute difference of float tensors."""
    if list(a) != list(b):
        return False, math.inf
    worst = 0.0
    for name, x in a.items():
        y = b[name]
        if x.shape != y.shape or x.dtype != y.dtype:
            return False, math.inf
        if x.dtype.kind == "f":
            if x.size:
                diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
                worst = max(worst, float(np.nanmax(diff)) if not np.isnan(diff).all() else 0.0)
            if not np.allclose(x, y, atol=atol, rtol=rtol, equal_nan=True):
                return False, worst
        elif not np.array_equal(x, y):
            return False, math.inf
    return True, worst


def split_batch(
    inputs: Mapping[str, np.ndarray[Any, Any]], micro_batch: int | None, signature: Signature | None = None
) -> list[Arrays]:
    """``inputs`` cut along axis 0 into pieces of ``micro_batch`` rows (views, not copies); one piece when
    ``micro_batch`` is None or covers the batch, or when ``signature`` (the specs of the frame's tensors)
    does not say that axis 0 is the batch axis of every input. ``signature`` None: the caller vouches
    that it is."""
    arrays = dict(inputs)
    if not arrays:
        raise ShardRequestError("no inputs given")
    if micro_batch is None or (signature is not None and not batch_axis_ok(signature)):
        return [arrays]
    if micro_batch < 1:
        raise ShardRequestError(f"micro_batch must be >= 1, not {micro_batch}")
    sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
    if len(sizes) != 1 or None in sizes:
        raise ShardRequestError("micro-batching needs every input to have the same size on axis 0")
    (batch,) = sizes
    assert batch is not None
    if batch <= micro_batch:
        return [arrays]
    return [{n: a[i : i + micro_batch] for n, a in arrays.items()} for i in range(0, batch, micro_batch)]


def merge_batches(results: list[Arrays]) -> Arrays:
    """The outputs of the micro-batches joined along axis 0, in order."""
    if len(results) == 1:
        return results[0]
    if any(list(r) != list(results[0]) for r in results):  # (results come from peers: never assume)
        raise ShardRequestError("micro-batch results name different outputs: cannot merge them")
    merged: Arrays = {}
    for name in results[0]:
        parts = [r[name] for r in results]
        if any(p.ndim == 0 for p in parts):
            raise ShardRequestError(f"output {name!r} has no batch axis: cannot merge micro-batches")
        if any(p.shape[1:] != parts[0].shape[1:] or p.dtype != parts[0].dtype for p in parts):
            raise ShardRequestError(f"output {name!r} differs in shape or dtype between micro-batches")
        merged[name] = np.concatenate(parts, axis=0)
    return merged
