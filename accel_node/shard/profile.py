"""A model's profile for partitioning: structure, boundary types and per-node costs at the chosen dims.

Figures of a stage: ``flops`` is the sum of its nodes' FLOPs (a model without floating-point work costs 1
per node, so that node counts are balanced instead); ``param_bytes`` counts the initializers and constants
it holds; ``activation_bytes`` is the peak of live tensors (incoming frame included) when its nodes run
one at a time.

Boundary types are inferred at two fixed sample points of the symbolic dims, never at the profile's dims,
so that stage bytes do not depend on them: dim ``i`` samples at 32 + 32*i and 48 + 32*i (distinct across
dims), and a boundary dim keeps an input's dim name when it equals that dim at both points.

Everything here is CPU-bound (shape inference): call it off the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import accumulate

import onnx

from accel_node.models.analysis.costs import node_costs
from accel_node.models.analysis.dtypes import tensor_bytes
from accel_node.models.analysis.graph import PreparedModel, prepare_model, resolve_dims
from accel_node.models.analysis.shapes import ShapeMap
from accel_node.models.errors import AnalysisError
from accel_node.shard import balance as solver
from accel_node.shard.candidates import CutPoint, cut_point, cut_points, end_bytes, undominated
from accel_node.shard.errors import PartitionError
from accel_node.shard.extract import Stage, extract_stage, stage_bounds
from accel_node.shard.structure import Dim, GraphStructure, TensorTypes

_SAMPLE_BASE, _SAMPLE_STEP = 32, 32  # dim i samples at 32 + 32*i and 48 + 32*i: distinct across dims


def _prepare(model: onnx.ModelProto) -> PreparedModel:
    try:
        return prepare_model(model)
    except AnalysisError as exc:
        raise PartitionError(f"cannot analyse the model: {exc}") from exc


def _infer(prep: PreparedModel, values: Mapping[str, int]) -> tuple[ShapeMap, dict[str, int]]:
    try:
        shapes, dtypes, _engine = prep.infer(values)
    except AnalysisError as exc:
        raise PartitionError(f"shape inference failed at {dict(values)}: {exc}") from exc
    return shapes, dtypes


class GraphProfile:
    """A model's structure, boundary types and per-node costs at ``dims``: everything the balancer needs.

    Build it with :func:`accel_node.shard.partition.profile_graph`. ``stage_flops``/``stage_memory`` give
    the figures of any node range; :meth:`candidates` the cuts worth considering; :meth:`balance` chooses
    among them; :meth:`extract` builds the stages.
    """

    def __init__(self, model: onnx.ModelProto, dims: Mapping[str, int] | None) -> None:
        self.graph = g = GraphStructure(model)
        prep = _prepare(model)
        try:
            self.dims = resolve_dims(prep.dim_names, dims)
            costs = node_costs(model, self.dims)
        except AnalysisError as exc:
            raise PartitionError(str(exc)) from exc
        if len(costs) != g.n:
            raise PartitionError(f"the analysis returned {len(costs)} node costs for {g.n} nodes")
        flops = [c.flops for c in costs]
        if not any(flops):  # no floating-point work at all: balance node counts
            flops = [0.0 if h else 1.0 for h in g.hoisted]
        self.prefix = list(accumulate(flops, initial=0.0))
        self.total_flops = self.prefix[-1]
        shapes, dtypes = _infer(prep, self.dims)
        self.sizes = {
            name: tensor_bytes(dtypes.get(name, onnx.TensorProto.FLOAT), math.prod(shape))
            for name, shape in shapes.items()
        }
        self.params = dict(g.init_bytes)
        for index, node in enumerate(g.nodes):
            if g.hoisted[index]:
                self.params.update((o, self.sizes.get(o, 0)) for o in node.output if o)
        self.types = self._sample_types(prep)
        self.points = [cut_point(g, self.types, self.sizes, self.prefix[p], p) for p in range(g.n + 1)]
        self._sweeps: dict[int, tuple[list[int], list[int]]] = {}

    def _sample_types(self, prep: PreparedModel) -> TensorTypes:
        """Element type and shape (named dims where they follow an input's named dim) of every tensor."""
        names = prep.dim_names
        at_a = {name: _SAMPLE_BASE + _SAMPLE_STEP * i for i, name in enumerate(names)}
        at_b = {name: value + _SAMPLE_STEP // 2 for name, value in at_a.items()}
        shapes_a, dtypes = _infer(prep, at_a)
        shapes_b, _ = _infer(prep, at_b) if names else (shapes_a, dtypes)
        declared = {
            d.dim_param
            for v in self.graph.input_info.values()
            for d in v.type.tensor_type.shape.dim
            if d.dim_param
        }
        by_pair = {(at_a[n], at_b[n]): n for n in names if n in declared}

        def dim(x: int, y: int) -> Dim:
            return x if x == y else by_pair.get((x, y))

        types: TensorTypes = {}
        for name, shape in shapes_a.items():
            other = shapes_b.get(name)
            if other is not None and len(other) == len(shape) and dtypes.get(name):
                types[name] = (dtypes[name], tuple(dim(x, y) for x, y in zip(shape, other, strict=True)))
        return types

    # -- figures of a node range -------------------------------------------------------------------

    def stage_flops(self, start: int, end: int) -> float:
        return self.prefix[end] - self.prefix[start]

    def _sweep(self, start: int) -> tuple[list[int], list[int]]:
        """Param bytes and peak activation bytes of [start, end) for every end, in one pass from start."""
        if start in self._sweeps:
            return self._sweeps[start]
        g = self.graph
        live = {name: self.sizes.get(name, 0) for name in g.boundaries[start]}
        current = sum(live.values())
        peak, param_total = current, 0
        held: set[str] = set()
        peaks, params = [], []
        for index in range(start, g.n):
            if not g.hoisted[index]:
                for name in g.uses[index]:
                    if name in self.params and name not in held:
                        held.add(name)
                        param_total += self.params[name]
                outs = [o for o in g.nodes[index].output if o]
                for name in outs:
                    live[name] = self.sizes.get(name, 0)
                    current += live[name]
                peak = max(peak, current)
                for name in (*g.uses[index], *outs):
                    if name in live and not g.needed(name, index + 1):
                        current -= live.pop(name)
            peaks.append(peak)
            params.append(param_total)
        self._sweeps[start] = (params, peaks)
        return params, peaks

    def stage_memory(self, start: int, end: int) -> tuple[int, int]:
        """(param bytes, peak activation bytes) of the stage running nodes [start, end)."""
        params, peaks = self._sweep(start)
        return params[end - start - 1], peaks[end - start - 1]

    def memory(self, start: int) -> list[int]:
        """Memory (param + peak activation bytes) of [start, end) for end = start+1 .. n."""
        params, peaks = self._sweep(start)
        return [a + b for a, b in zip(params, peaks, strict=True)]

    def objective(self, cuts: Sequence[int], weights: Sequence[float]) -> float:
        """``max_i(flops_i / weights[i])`` of the stages ``cuts`` make."""
        return solver.objective(self.prefix, cuts, weights)

    # -- choosing cuts -----------------------------------------------------------------------------

    def cut_points(self) -> list[CutPoint]:
        """Every position where a cut is possible (known boundary types; not right after a Constant)."""
        return cut_points(self.graph, self.points)

    def candidates(self) -> list[CutPoint]:
        """The cut points not dominated on both sides (see :mod:`accel_node.shard.candidates`)."""
        g = self.graph
        return undominated(self.cut_points(), end_bytes(g, self.sizes, 0), end_bytes(g, self.sizes, g.n))

    def balance(
        self, stages: int, weights: Sequence[float] | None = None, memory_caps: Sequence[int] | None = None
    ) -> tuple[tuple[int, ...], float]:
        """The optimal cuts among :meth:`candidates` and their objective (:mod:`accel_node.shard.balance`)."""
        return solver.balance(
            self.prefix,
            [p.position for p in self.candidates()],
            stages,
            weights,
            memory_caps=memory_caps,
            memory=self.memory,
            real=self.graph.real_before,
            where=f" at dims {self.dims}",
        )

    def extract(self, cuts: Sequence[int]) -> list[Stage]:
        """The stages for ``cuts`` (strictly increasing positions in (0, n))."""
        stages = []
        for index, (start, end) in enumerate(stage_bounds(self.graph, cuts)):
            param_bytes, activation_bytes = self.stage_memory(start, end)
            stages.append(
                extract_stage(
                    self.graph,
                    self.types,
                    index,
                    start,
                    end,
                    flops=self.stage_flops(start, end),
                    param_bytes=param_bytes,
                    activation_bytes=activation_bytes,
                )
            )
        return stages
