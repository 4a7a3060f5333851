"""Cutting an ONNX graph into contiguous pipeline stages, balanced to the peers that will run them.

Positions and boundaries
    A cut position ``p`` (``0 < p < n``) splits the graph's node list into nodes ``< p`` and ``>= p``. The
    node list is the graph's own order (ONNX requires it to be topologically sorted; that is checked, never
    re-sorted), so positions are the indices of :func:`accel_node.models.analysis.node_costs`. The
    *boundary* at ``p`` is every tensor available before ``p`` (a graph input, or an output of a node
    ``< p``) that a node ``>= p`` reads or that is a graph output, in order of availability (graph inputs in
    graph order, then node outputs in node order); the boundary at ``n`` is the graph outputs in their
    order. Initializers never cross: each stage holds those it reads (a shared one is duplicated). Neither
    do ``Constant`` nodes: each stage gets a copy of the constants it reads.

Stages and frames
    Stage ``i`` runs nodes ``[cuts[i-1], cuts[i])``. It receives the *frame* of its start boundary (a tensor
    per name) and hands on the frame of its end boundary (:attr:`Stage.boundary`): its ONNX model takes
    :attr:`Stage.inputs` (the boundary tensors it reads) and produces :attr:`Stage.outputs` (the end
    boundary tensors it computes); :attr:`Stage.carried` (the rest of the end boundary, such as an
    ``attention_mask`` read by later layers) passes by unchanged. The frame after the last stage holds
    the graph outputs.

Candidate cuts
    A *cut point* is a position where every boundary tensor has a known type and shape and the node before
    it is not a ``Constant``; its crossing bytes are counted at ``dims``. A cut point is a *candidate*
    unless a cut moving less than 1/:data:`CROSSING_FACTOR` (1/1.5) of its bytes exists both before it and
    after it (the graph inputs and outputs count as cuts at both ends). A dominated point sits on a bump
    between two cheaper cuts, e.g. inside an attention block, whose score matrices can be 30x the hidden
    state, or after a LayerNorm (two hidden states); moving the cut to either side transfers much less. A
    plain "at most 2x the global minimum" would instead leave no cut in the first half of a CNN (whose
    activations shrink) and none after a transformer's embedding (whose inputs are 16x smaller than its
    hidden state); a window of FLOPs around each point cannot tell a bump from a trend either. In a
    pre-LN transformer the candidates are the embedding outputs, the layer boundaries and the points
    after each attention residual (hidden state and mask bias cross). Small int64 shape tensors may cross:
    they are ordinary boundary tensors. Limitation: a graph whose middle moves more than 1.5x both of its
    ends (a U-Net's skip connections) has no candidate in the middle, and balances only as well as the
    remaining candidates allow.

Balance
    Among the candidates, the ``stages - 1`` cuts minimise ``max_i(flops_i / weights[i])`` (exact dynamic
    programming over the candidates) subject to ``param_bytes_i + activation_bytes_i <= memory_caps[i]``;
    among equal optima the lexicographically smallest cut positions win. ``param_bytes`` counts the
    initializers and constants a stage holds; ``activation_bytes`` is the peak of live tensors (incoming
    frame included) when its nodes run one at a time. A model without floating-point work costs 1 per node.

Determinism
    A stage's bytes depend only on the model and the cut positions: fixed graph name and producer, no doc
    strings or metadata, nodes and initializers in the original order, boundary types inferred at two fixed
    sample points of the symbolic dims (never at ``dims``; a dim keeps its input's name when it equals that
    dim at both points), deterministic protobuf serialization.

Everything here is CPU-bound (shape inference, serialization): call it off the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, pairwise

import numpy as np
import numpy.typing as npt
import onnx

from accel_node.models import analysis
from accel_node.models.manifest import TensorSpec
from accel_node.shard.errors import PartitionError
from p2p.content import compute_cid

CROSSING_FACTOR = 1.5
MAX_STAGES = 64
PRODUCER_NAME = "accel-node-shard"
PRODUCER_VERSION = "1"  # bump whenever the bytes of extracted stages change
_SAMPLE_BASE, _SAMPLE_STEP = 32, 32  # dim i samples at 32 + 32*i and 48 + 32*i: distinct across dims

Dim = int | str | None
Costs = npt.NDArray[np.float64]
Positions = npt.NDArray[np.int64]
Edges = Callable[[int, int], Costs]


@dataclass(frozen=True)
class CutPoint:
    """A position where the graph can be cut, and what would cross there at the profile's dims."""

    position: int
    crossing: tuple[str, ...]
    crossing_bytes: int
    flops_before: float


@dataclass(frozen=True)
class Stage:
    """One contiguous piece of the model, as a standalone ONNX model."""

    index: int
    start: int  # node range [start, end) of the original graph
    end: int
    model_bytes: bytes = field(repr=False)
    cid: str  # UnixFS CIDv1 of model_bytes (what `ipfs add --cid-version=1 --raw-leaves` prints)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    carried: tuple[TensorSpec, ...]
    boundary: tuple[str, ...]  # names of the frame handed on: outputs and carried, in boundary order
    flops: float
    param_bytes: int
    activation_bytes: int

    @property
    def memory_bytes(self) -> int:
        return self.param_bytes + self.activation_bytes


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


def _initializer_bytes(t: onnx.TensorProto) -> int:
    if t.data_type == onnx.TensorProto.STRING:
        return sum(len(s) for s in t.string_data)
    return analysis.tensor_bytes(t.data_type, math.prod(t.dims))


class _Graph:
    """Structure of the graph, independent of dims: uses, producers, hoisted constants, boundaries."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        if graph.sparse_initializer:
            raise PartitionError("models with sparse initializers cannot be partitioned")
        self.model = model
        self.nodes = list(graph.node)
        self.n = len(self.nodes)
        self.init_bytes = {t.name: _initializer_bytes(t) for t in graph.initializer}
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
            outer = [name for sub in analysis.subgraphs(node) for name in analysis.outer_names(sub)]
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
        return self.real_before[end] > self.real_before[start]


def _prepare(model: onnx.ModelProto) -> analysis.PreparedModel:
    try:
        return analysis.prepare_model(model)
    except analysis.AnalysisError as exc:
        raise PartitionError(f"cannot analyse the model: {exc}") from exc


def _infer(
    prep: analysis.PreparedModel, values: Mapping[str, int]
) -> tuple[analysis.ShapeMap, dict[str, int]]:
    try:
        shapes, dtypes, _engine = prep.infer(values)
    except analysis.AnalysisError as exc:
        raise PartitionError(f"shape inference failed at {dict(values)}: {exc}") from exc
    return shapes, dtypes


class GraphProfile:
    """A model's structure, boundary types and per-node costs at ``dims``: everything the balancer needs.

    Build it with :func:`profile_graph`. ``stage_flops``/``stage_memory`` give the figures of any node range;
    :meth:`balance` chooses the cuts; :meth:`extract` builds the stages.
    """

    def __init__(self, model: onnx.ModelProto, dims: Mapping[str, int] | None) -> None:
        self.graph = g = _Graph(model)
        prep = _prepare(model)
        try:
            self.dims = analysis.resolve_dims(prep.dim_names, dims)
            costs = analysis.node_costs(model, self.dims)
        except analysis.AnalysisError as exc:
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
            name: analysis.tensor_bytes(dtypes.get(name, onnx.TensorProto.FLOAT), math.prod(shape))
            for name, shape in shapes.items()
        }
        self.params = dict(g.init_bytes)
        for index, node in enumerate(g.nodes):
            if g.hoisted[index]:
                self.params.update((o, self.sizes.get(o, 0)) for o in node.output if o)
        self.types = self._sample_types(prep)
        self.points = [self._point(p) for p in range(g.n + 1)]
        self._prefix = np.array(self.prefix, dtype=np.float64)
        self._real = np.array(g.real_before, dtype=np.int64)
        self._sweeps: dict[int, tuple[list[int], list[int]]] = {}
        self._totals_cache: dict[int, Costs] = {}

    def _sample_types(self, prep: analysis.PreparedModel) -> dict[str, tuple[int, tuple[Dim, ...]]]:
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

        types: dict[str, tuple[int, tuple[Dim, ...]]] = {}
        for name, shape in shapes_a.items():
            other = shapes_b.get(name)
            if other is not None and len(other) == len(shape) and dtypes.get(name):
                types[name] = (dtypes[name], tuple(dim(x, y) for x, y in zip(shape, other, strict=True)))
        return types

    def _point(self, position: int) -> CutPoint | None:
        g = self.graph
        if not 0 < position < g.n:
            return None
        crossing = g.boundaries[position]
        if any(
            name not in self.types and name not in g.input_info and name not in g.output_info
            for name in crossing
        ):
            return None
        if any(name not in self.sizes for name in crossing):
            return None
        total = sum(self.sizes[name] for name in crossing)
        return CutPoint(position, crossing, total, self.prefix[position])

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

    def objective(self, cuts: Sequence[int], weights: Sequence[float]) -> float:
        bounds = [0, *cuts, self.graph.n]
        return max(self.stage_flops(a, b) / w for (a, b), w in zip(pairwise(bounds), weights, strict=True))

    # -- choosing cuts -----------------------------------------------------------------------------

    def cut_points(self) -> list[CutPoint]:
        """Every position where a cut is possible (known boundary types; not right after a Constant)."""
        g = self.graph
        return [
            p
            for p in self.points
            if p is not None and not g.hoisted[p.position - 1] and g.nonempty(p.position, g.n)
        ]

    def _end_bytes(self, position: int) -> float:
        names = self.graph.boundaries[position]
        return float(sum(self.sizes[n] for n in names)) if all(n in self.sizes for n in names) else math.inf

    def candidates(self) -> list[CutPoint]:
        """The cut points not dominated on both sides ("Candidate cuts" in the module docstring)."""
        points = self.cut_points()
        if not points:
            return []
        crossing = [float(p.crossing_bytes) for p in points]
        left = list(accumulate(crossing[:-1], min, initial=self._end_bytes(0)))
        right = list(accumulate(reversed(crossing[1:]), min, initial=self._end_bytes(self.graph.n)))[::-1]
        return [
            p
            for p, c, lo, hi in zip(points, crossing, left, right, strict=True)
            if c <= CROSSING_FACTOR * max(lo, hi)
        ]

    def _totals(self, start: int) -> Costs:
        """Memory (param + peak activation bytes) of [start, end) for end = start+1 .. n."""
        if start not in self._totals_cache:
            params, peaks = self._sweep(start)
            self._totals_cache[start] = np.add(params, peaks, dtype=np.float64)
        return self._totals_cache[start]

    def balance(
        self, stages: int, weights: Sequence[float] | None = None, memory_caps: Sequence[int] | None = None
    ) -> tuple[tuple[int, ...], float]:
        """The optimal cuts among :meth:`candidates` and their objective (see "Balance" above)."""
        w, caps = _weights(stages, weights), _caps(stages, memory_caps)
        chosen = self.candidates()
        if len(chosen) + 1 < stages:
            raise PartitionError(
                f"the model has {len(chosen)} candidate cut point(s); it cannot be split into {stages} stages"
            )
        q = np.array([0, *(p.position for p in chosen), self.graph.n], dtype=np.int64)
        prefix, real = self._prefix[q], self._real[q]

        def edges(a: int, i: int) -> Costs:
            costs: Costs = (prefix[a + 1 :] - prefix[a]) / w[i]
            costs[real[a + 1 :] <= real[a]] = np.inf
            if caps is not None:
                costs[self._totals(int(q[a]))[q[a + 1 :] - q[a] - 1] > caps[i]] = np.inf
            return costs

        cuts, objective = _bottleneck(len(q), stages, edges)
        if objective == math.inf:
            assert caps is not None  # without caps any stages-1 candidates make a valid split
            needed = self._smallest_cap(q, stages)
            raise PartitionError(
                f"no split of the model into {stages} stages fits the memory caps {list(caps)} bytes at dims "
                f"{self.dims}; the smallest cap that works for every peer is {needed} bytes"
            )
        return tuple(int(q[c]) for c in cuts), objective

    def _smallest_cap(self, q: Positions, stages: int) -> int:
        real = self._real[q]

        def memory_edges(a: int, _i: int) -> Costs:
            totals: Costs = self._totals(int(q[a]))[q[a + 1 :] - q[a] - 1].copy()
            totals[real[a + 1 :] <= real[a]] = np.inf
            return totals

        return int(_bottleneck(len(q), stages, memory_edges)[1])

    def extract(self, cuts: Sequence[int]) -> list[Stage]:
        """The stages for ``cuts`` (strictly increasing positions in (0, n))."""
        g = self.graph
        if any(isinstance(c, bool) or not isinstance(c, int) for c in cuts):
            raise PartitionError("cut positions must be integers")
        bounds = [0, *cuts, g.n]
        if len(bounds) - 1 > MAX_STAGES:
            raise PartitionError(f"at most {MAX_STAGES} stages are supported")
        for a, b in pairwise(bounds):
            if not 0 <= a < b <= g.n or not g.nonempty(a, b):
                raise PartitionError(f"cuts {list(cuts)} do not split the {g.n} nodes into non-empty stages")
        return [_extract_stage(self, i, a, b) for i, (a, b) in enumerate(pairwise(bounds))]


def _weights(stages: int, weights: Sequence[float] | None) -> tuple[float, ...]:
    if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= MAX_STAGES:
        raise PartitionError(f"stages must be an integer from 1 to {MAX_STAGES}, not {stages!r}")
    if weights is None:
        return (1.0,) * stages
    if len(weights) != stages:
        raise PartitionError(f"{len(weights)} weights given for {stages} stages")
    values = tuple(float(v) for v in weights)
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise PartitionError(f"weights must be finite and positive, not {list(weights)}")
    return values


def _caps(stages: int, memory_caps: Sequence[int] | None) -> tuple[int, ...] | None:
    if memory_caps is None:
        return None
    if len(memory_caps) != stages:
        raise PartitionError(f"{len(memory_caps)} memory caps given for {stages} stages")
    if any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in memory_caps):
        raise PartitionError(f"memory caps must be positive integers (bytes), not {list(memory_caps)}")
    return tuple(memory_caps)


def _bottleneck(count: int, stages: int, edges: Edges) -> tuple[list[int], float]:
    """Minimise ``max_i edges(c_i, i)[c_{i+1} - c_i - 1]`` over index sequences ``0 = c_0 < c_1 < ... <
    c_stages = count - 1``, where ``edges(a, i)[k]`` is the cost of stage ``i`` running from index ``a`` to
    index ``a + 1 + k``. Returns the lexicographically smallest optimal ``c_1 .. c_{stages-1}`` and the
    optimum (``inf`` when nothing is feasible)."""
    last = count - 1
    # best[j - 1][a]: the optimum of covering [a, last] with the last j stages (stage indices stages-j ...)
    best = [np.array([edges(a, stages - 1)[-1] for a in range(last)], dtype=np.float64)]
    for j in range(2, stages + 1):
        previous, row = best[-1], np.full(last, np.inf)
        for a in range(last if j < stages else 1):
            if a + 1 < last:
                row[a] = np.maximum(edges(a, stages - j)[:-1], previous[a + 1 : last]).min()
        best.append(row)
    optimum = float(best[-1][0])
    if optimum == math.inf:
        return [], optimum
    cuts, a = [], 0
    for j in range(stages, 1, -1):  # the smallest next cut that still allows the optimum
        fits = (edges(a, stages - j)[:-1] <= optimum) & (best[j - 2][a + 1 : last] <= optimum)
        a = a + 1 + int(np.flatnonzero(fits)[0])
        cuts.append(a)
    return cuts, optimum


def _value_info(profile: GraphProfile, name: str) -> onnx.ValueInfoProto:
    g = profile.graph
    original = g.input_info.get(name) or g.output_info.get(name)
    info = onnx.ValueInfoProto()
    if original is not None:
        info.CopyFrom(original)
        info.doc_string = ""
        return info
    if name not in profile.types:
        raise PartitionError(f"the type or shape of boundary tensor {name!r} is unknown; cut elsewhere")
    elem_type, shape = profile.types[name]
    info.name = name
    tensor = info.type.tensor_type
    tensor.elem_type = elem_type
    tensor.shape.SetInParent()
    for d in shape:
        slot = tensor.shape.dim.add()
        if isinstance(d, int):
            slot.dim_value = d
        elif isinstance(d, str):
            slot.dim_param = d
    return info


def _spec(info: onnx.ValueInfoProto) -> TensorSpec:
    tensor = info.type.tensor_type
    shape: tuple[Dim, ...] = tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
    )
    return TensorSpec(info.name, analysis.dtype_name(tensor.elem_type), shape)


def _extract_stage(profile: GraphProfile, index: int, start: int, end: int) -> Stage:
    g = profile.graph
    source = g.model
    members = [i for i in range(start, end) if not g.hoisted[i]]
    used = dict.fromkeys(name for i in members for name in g.uses[i])
    constants = {g.producer[n] for n in used if n in g.producer and g.hoisted[g.producer[n]]}
    produced = {o for i in members for o in g.nodes[i].output if o}
    inputs = [name for name in g.boundaries[start] if name in used]
    outputs = [name for name in g.boundaries[end] if name in produced]
    carried = [name for name in g.boundaries[end] if name not in produced]
    known = produced | set(inputs) | set(g.init_bytes) | {o for i in constants for o in g.nodes[i].output}
    missing = [name for name in used if name not in known]
    if missing or not outputs:
        raise PartitionError(
            f"stage {index} (nodes {start}..{end - 1}) cannot be extracted: "
            + (f"it reads {missing[0]!r} from nowhere" if missing else "it produces nothing used later")
        )

    model = onnx.ModelProto()
    model.ir_version = source.ir_version
    model.opset_import.extend(source.opset_import)
    model.producer_name = PRODUCER_NAME
    model.producer_version = PRODUCER_VERSION
    model.functions.extend(source.functions)
    graph = model.graph
    graph.name = f"stage{index}"
    for i in sorted(constants | set(members)):
        node = graph.node.add()
        node.CopyFrom(g.nodes[i])
        node.doc_string = ""
    input_infos = [_value_info(profile, name) for name in inputs]
    output_infos = [_value_info(profile, name) for name in outputs]
    graph.input.extend(input_infos)
    graph.output.extend(output_infos)
    for tensor in source.graph.initializer:
        if tensor.name in used:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                raise PartitionError(
                    f"initializer {tensor.name!r} is stored outside the model: load its external data first"
                )
            graph.initializer.append(tensor)
    if source.ir_version < 4:  # initializers had to be listed as graph inputs then
        graph.input.extend(v for v in source.graph.input if v.name in used and v.name in g.init_bytes)
    try:
        onnx.checker.check_model(model)
        data = model.SerializeToString(deterministic=True)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise PartitionError(
            f"stage {index} (nodes {start}..{end - 1}) is not a valid ONNX model: {exc}"
        ) from exc
    param_bytes, activation_bytes = profile.stage_memory(start, end)
    return Stage(
        index=index,
        start=start,
        end=end,
        model_bytes=data,
        cid=str(compute_cid(data)),
        inputs=tuple(_spec(v) for v in input_infos),
        outputs=tuple(_spec(v) for v in output_infos),
        carried=tuple(_spec(_value_info(profile, name)) for name in carried),
        boundary=g.boundaries[end],
        flops=profile.stage_flops(start, end),
        param_bytes=param_bytes,
        activation_bytes=activation_bytes,
    )


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
    w = _weights(stages, weights)
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
