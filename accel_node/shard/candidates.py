"""Where a graph may be cut: cut points, and the candidates among them by the bytes that cross.

A *cut point* is a position where every boundary tensor has a known type and shape and the node before it
is not a ``Constant``; its crossing bytes are counted at the profile's dims. A cut point is a *candidate*
unless a cut moving less than 1/:data:`CROSSING_FACTOR` (1/1.5) of its bytes exists both before it and
after it (the graph inputs and outputs count as cuts at both ends). A dominated point sits on a bump
between two cheaper cuts, e.g. inside an attention block, whose score matrices can be 30x the hidden
state, or after a LayerNorm (two hidden states); moving the cut to either side transfers much less. A
plain "at most 2x the global minimum" would instead leave no cut in the first half of a CNN (whose
activations shrink) and none after a transformer's embedding (whose inputs are 16x smaller than its hidden
state); a window of FLOPs around each point cannot tell a bump from a trend either. In a pre-LN transformer
the candidates are the embedding outputs, the layer boundaries and the points after each attention
residual (hidden state and mask bias cross). Small int64 shape tensors may cross: they are ordinary
boundary tensors. Limitation: a graph whose middle moves more than 1.5x both of its ends (a U-Net's skip
connections) has no candidate in the middle, and balances only as well as the remaining candidates allow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate

from accel_node.shard.structure import GraphStructure, TensorTypes

CROSSING_FACTOR = 1.5


@dataclass(frozen=True)
class CutPoint:
    """A position where the graph can be cut, and what would cross there at the profile's dims."""

    position: int
    crossing: tuple[str, ...]
    crossing_bytes: int
    flops_before: float


def cut_point(
    graph: GraphStructure, types: TensorTypes, sizes: Mapping[str, int], flops_before: float, position: int
) -> CutPoint | None:
    """The cut at ``position`` if every tensor crossing there has a known type and size, else None (also
    for the ends, 0 and n, which are not cuts)."""
    if not 0 < position < graph.n:
        return None
    crossing = graph.boundaries[position]
    if any(
        name not in types and name not in graph.input_info and name not in graph.output_info
        for name in crossing
    ):
        return None
    if any(name not in sizes for name in crossing):
        return None
    total = sum(sizes[name] for name in crossing)
    return CutPoint(position, crossing, total, flops_before)


def cut_points(graph: GraphStructure, points: Sequence[CutPoint | None]) -> list[CutPoint]:
    """The usable cuts among ``points`` (one per position): not right after a Constant, and leaving real
    work after them."""
    return [
        p
        for p in points
        if p is not None and not graph.hoisted[p.position - 1] and graph.nonempty(p.position, graph.n)
    ]


def end_bytes(graph: GraphStructure, sizes: Mapping[str, int], position: int) -> float:
    """Bytes of the boundary at ``position`` (inf when a size is unknown), for the ends 0 and n."""
    names = graph.boundaries[position]
    return float(sum(sizes[n] for n in names)) if all(n in sizes for n in names) else math.inf


def undominated(points: Sequence[CutPoint], first: float, last: float) -> list[CutPoint]:
    """The points (in position order) without a cut moving less than 1/:data:`CROSSING_FACTOR` of their
    bytes on both sides; ``first``/``last`` are the bytes at the graph's ends."""
    if not points:
        return []
    crossing = [float(p.crossing_bytes) for p in points]
    left = list(accumulate(crossing[:-1], min, initial=first))
    right = list(accumulate(reversed(crossing[1:]), min, initial=last))[::-1]
    return [
        p
        for p, c, lo, hi in zip(points, crossing, left, right, strict=True)
        if c <= CROSSING_FACTOR * max(lo, hi)
    ]
