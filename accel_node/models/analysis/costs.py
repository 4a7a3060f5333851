"""Costs of every node at one assignment of the dims: FLOPs, parameter bytes, output bytes.

Every figure the analysis reports is a sum of these per-node figures at concrete dims (see
:mod:`accel_node.models.analysis.poly` for how their polynomials in the dims are recovered).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import onnx

from accel_node.models.analysis.dtypes import numel, tensor_bytes
from accel_node.models.analysis.flops import node_flops
from accel_node.models.analysis.graph import PreparedModel, prepare_model, resolve_dims


@dataclass(frozen=True)
class NodeCost:
    """Cost of one node at given dims, for partitioning (``index`` is the node's position in the graph)."""

    index: int
    name: str
    op_type: str
    flops: float
    param_bytes: int
    output_bytes: int


@dataclass
class CostPoint:
    """Costs of every node at one assignment of the dims."""

    flops: list[int]
    output_bytes: list[int]
    sizes: dict[str, int]  # bytes of every graph input and node output with a known shape
    unresolved: list[int]  # nodes with an output of unknown shape
    engine: str  # the shape-inference engine(s) used


def evaluate(prep: PreparedModel, values: Mapping[str, int]) -> CostPoint:
    """Per-node FLOPs and output bytes of ``prep`` with the dims set to ``values`` (every dim given)."""
    shapes, dtypes, engine = prep.infer(values)
    flops, out_bytes, unresolved = [], [], []
    sizes = {
        spec.name: tensor_bytes(dtypes.get(spec.name, onnx.TensorProto.FLOAT), numel(shapes[spec.name]))
        for spec in prep.inputs
        if spec.name in shapes
    }
    for index, node in enumerate(prep.nodes):
        f = node_flops(node, shapes, dtypes)
        known, total = f is not None, 0
        for name in node.output:
            if name in shapes:
                sizes[name] = tensor_bytes(dtypes.get(name, onnx.TensorProto.FLOAT), numel(shapes[name]))
                total += sizes[name]
            elif name:
                known = False
        flops.append(f or 0)
        out_bytes.append(total)
        if not known:
            unresolved.append(index)
    return CostPoint(flops, out_bytes, sizes, unresolved, engine)


def node_costs(model: onnx.ModelProto, dims: Mapping[str, int]) -> list[NodeCost]:
    """Per-node FLOPs, parameter bytes and output bytes at ``dims``, in the graph's node order.

    The graph must already be topologically sorted (the ONNX spec requires it; it is checked, never
    re-sorted, so ``index`` is the position in ``model.graph.node``). Dims missing from ``dims`` take
    :func:`~accel_node.models.analysis.graph.resolve_dims`'s defaults. An initializer read by several nodes
    counts at its first consumer (initializers read only inside a subgraph count at the control-flow node).
    Nodes whose shapes could not be inferred cost 0 FLOPs and report the bytes of the outputs that are known.
    """
    prep = prepare_model(model)
    point = evaluate(prep, resolve_dims(prep.dim_names, dims))
    return [
        NodeCost(
            i, node.name, node.op_type, float(point.flops[i]), prep.node_param_bytes[i], point.output_bytes[i]
        )
        for i, node in enumerate(prep.nodes)
    ]
