"""The structure of a graph for cutting, independent of dims: uses, producers, hoisted constants, boundaries.

Positions and boundaries
    A cut position ``p`` (``0 < p < n``) splits the graph's node list into nodes ``< p`` and ``>= p``. The
    node list is the graph's own order (ONNX requires it to be topologically sorted; that is checked, never
    re-sorted), so positions are the indices of :func:`accel_node.models.analysis.node_costs`. The
    *boundary* at ``p`` is every tensor available before ``p`` (a graph input, or an output of a node
    ``< p``) that a node ``>= p`` reads or that is a graph output, in order of availability (graph inputs in
    graph order, then node outputs in node order); the boundary at ``n`` is the graph outputs in their
    order. Initializers never cross: each stage holds those it reads (a shared one is duplicated). Neither
    do ``Constant`` nodes ("hoisted"): each stage gets a copy of the constants it reads.
"""

from __future__ import annotations

from itertools import accumulate

import onnx

from accel_node.models.analysis.dtypes import initializer_bytes
from accel_node.models.analysis.graph import outer_names, subgraphs
from accel_node.shard.errors import PartitionError

Dim = int | str | None
TensorTypes = dict[str, tuple[int, tuple[Dim, ...]]]  # tensor name -> (element type, shape)


class GraphStructure:
    """Structure of the graph, independent of dims: uses, producers, hoisted constants, boundaries."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        if graph.sparse_initializer:
            raise PartitionError("models with sparse initializers cannot be partitioned")
        self.model = model
        self.nodes = list(graph.node)
        self.n = len(self.nodes)
        self.init_bytes = {t.name: initializer_bytes(t) for t in graph.initializer}
        self.input_info = {v.name: v for v in graph.input if v.name not in self.init_bytes}
        self.output_info = {v.name: v for v in graph.output}
        self.outputs = tuple(self.output_info)
        for name in self.outputs:
            if name in self.init_bytes:
                raise PartitionError(
                    f"graph output {name!r} is an initializer; such models are not supported"
                )
        available = set(self.input_info) | set(self.init_bytes)
        self.uses: list[tuple[str, ...]] = []
        self.producer: dict[str, int] = {}
        self.last_use: dict[str, int] = {}
        self.hoisted: list[bool] = []
        for index, node in enumerate(self.nodes):
            outer = [name for sub in subgraphs(node) for name in outer_names(sub)]
            uses = tuple(dict.fromkeys([n for n in node.input if n] + outer))
            for name in uses:
                if name not in available:
                    raise PartitionError(
                        f"node {node.name or index} ({node.op_type}) reads {name!r} before any node produces "
                        "it: the graph is not topologically sorted or is incomplete"
                    )
                self.last_use[name] = index
            for name in node.output:
                if name:
                    self.producer[name] = index
                    available.add(name)
            self.uses.append(uses)
            self.hoisted.append(
                node.op_type == "Constant"
                and node.domain in ("", "ai.onnx")
                and not any(o in self.output_info for o in node.output)
            )
        self.real_before = list(accumulate((not h for h in self.hoisted), initial=0))
        self.boundaries = self._boundaries()

    def needed(self, name: str, position: int) -> bool:
        """Whether ``name`` is read at or after ``position`` (graph outputs always are)."""
        return name in self.output_info or self.last_use.get(name, -1) >= position

    def _boundaries(self) -> list[tuple[str, ...]]:
        live = {name: None for name in self.input_info if self.needed(name, 0)}
        result = []
        for position, node in enumerate(self.nodes):
            for name in [name for name in live if not self.needed(name, position)]:
                del live[name]
            result.append(tuple(live))
            if not self.hoisted[position]:
                live.update((o, None) for o in node.output if o and self.needed(o, position + 1))
        result.append(self.outputs)
        return result

    def nonempty(self, start: int, end: int) -> bool:
        """Whether nodes [start, end) hold a node that is not a hoisted constant."""
        return self.real_before[end] > self.real_before[start]
