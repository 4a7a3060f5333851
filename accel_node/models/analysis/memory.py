"""Activation memory: the peak of live tensors when the nodes run one at a time in the graph's order.

Activations are the graph inputs plus every node output (never initializers). A tensor is freed after its
last consumer; graph outputs live to the end. The schedule is the graph's own order, not the best one, so
that the figure is a property of the model file rather than of some runtime's memory planner.
"""

from __future__ import annotations

from accel_node.models.analysis.costs import CostPoint
from accel_node.models.analysis.graph import PreparedModel

SCHEDULE = "graph order, one node at a time; a tensor is freed after its last consumer"


def peak_bytes(prep: PreparedModel, point: CostPoint) -> int:
    """Peak of live activation bytes at the dims ``point`` was evaluated at."""
    keep = set(prep.graph_outputs)
    alive = {spec.name for spec in prep.inputs}
    live = sum(point.sizes.get(name, 0) for name in alive)
    peak = live
    for index, node in enumerate(prep.nodes):
        outs = [n for n in node.output if n]
        alive.update(outs)
        live += sum(point.sizes.get(n, 0) for n in outs)
        peak = max(peak, live)
        for name in (*prep.node_uses[index], *outs):
            if name in alive and prep.last_use.get(name, -1) <= index and name not in keep:
                alive.discard(name)
                live -= point.sizes.get(name, 0)
    return peak


def sum_bytes(point: CostPoint) -> int:
    """Total bytes of every node output (each tensor once, however long it lives)."""
    return sum(point.output_bytes)
