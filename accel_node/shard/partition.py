"""Cutting an ONNX graph into contiguous pipeline stages, balanced to the peers that will run them.

The public entry of the partitioner; the parts live in their own modules:

- :mod:`~accel_node.shard.structure`: positions, boundaries and hoisted constants of a graph (dims-free).
- :mod:`~accel_node.shard.profile`: :class:`GraphProfile`, a model's costs and boundary types at the dims.
- :mod:`~accel_node.shard.candidates`: :class:`CutPoint` and which cuts are worth considering.
- :mod:`~accel_node.shard.balance`: the exact balance solver, pure arithmetic on the figures.
- :mod:`~accel_node.shard.extract`: :class:`Stage`, each a standalone deterministic ONNX model with a CID.

:func:`partition` does it all: profile the model, choose the cuts that minimise ``max_i(flops_i /
weights[i])`` within the memory caps, extract the stages. Everything here is CPU-bound (shape inference,
serialization): call it off the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx

from accel_node.shard.balance import check_weights
from accel_node.shard.candidates import CutPoint
from accel_node.shard.extract import Stage
from accel_node.shard.profile import GraphProfile

__all__ = ["CutPoint", "GraphProfile", "Partition", "Stage", "extract_stages", "partition", "profile_graph"]


@dataclass(frozen=True)
class Partition:
    """The result of :func:`partition`."""

    stages: tuple[Stage, ...]
    cuts: tuple[int, ...]
    dims: dict[str, int]
    weights: tuple[float, ...]
    memory_caps: tuple[int, ...] | None
    objective: float  # max_i(flops_i / weights[i])
    candidates: tuple[CutPoint, ...]


def profile_graph(model: onnx.ModelProto, dims: Mapping[str, int] | None = None) -> GraphProfile:
    """Analyse ``model`` for partitioning; ``dims`` as for :func:`accel_node.models.analysis.resolve_dims`."""
    return GraphProfile(model, dims)


def extract_stages(
    model: onnx.ModelProto, cuts: Sequence[int], *, dims: Mapping[str, int] | None = None
) -> list[Stage]:
    """The stages of ``model`` cut at ``cuts``; their bytes do not depend on ``dims``, their figures do."""
    return profile_graph(model, dims).extract(cuts)


def partition(
    model: onnx.ModelProto,
    *,
    stages: int,
    weights: Sequence[float] | None = None,
    memory_caps: Sequence[int] | None = None,
    dims: Mapping[str, int] | None = None,
) -> Partition:
    """Cut ``model`` into ``stages`` stages balanced to ``weights`` (relative peer throughputs, default
    equal) within ``memory_caps`` (bytes per stage, default none), with figures at ``dims``."""
    w = check_weights(stages, weights)
    profile = profile_graph(model, dims)
    cuts, objective = profile.balance(stages, w, memory_caps)
    return Partition(
        stages=tuple(profile.extract(cuts)),
        cuts=cuts,
        dims=dict(profile.dims),
        weights=w,
        memory_caps=None if memory_caps is None else tuple(memory_caps),
        objective=objective,
        candidates=tuple(profile.candidates()),
    )
