"""Static analysis of an ONNX model: parameters, FLOPs, activation memory, operators, I/O signature.

How sizes are found: symbolic shape inference of torch-exported ``Shape -> Gather -> Concat -> Reshape``
chains fails, so every figure is computed with *concrete* values for the model's symbolic input dims: shape
inference per point (ONNX Runtime's symbolic shape inference, which follows shape arithmetic and ``Slice``;
onnx's ``infer_shapes(data_prop=True)`` fills in where it gives up, e.g. custom ops), on a copy of the graph
without the weights (see :class:`_Prepared`). Figures that depend on the dims (FLOPs, activation bytes) are
exact at the requested point, and their polynomial in the dim names is recovered by exact interpolation: the
degree in each dim is found from finite differences along that dim (at most :data:`MAX_DEGREE`), then a
tensor-product grid of that degree is solved exactly (fractions). The polynomial is checked against the
direct figures at the requested point; sizes that are not polynomial (``floor(h / 2)`` of a pooled dynamic
image size) show up as ``polynomial_exact = False``. Sample points are multiples of :data:`SAMPLE_STEP` up to
``SAMPLE_STEP * (MAX_DEGREE + 2)`` (80), so that strides up to 16 divide exactly there.

Unnamed dynamic input dims are named ``<input>_<axis>``. Dims the caller does not give default to 128 when
the name looks like a sequence length (contains ``seq``, ``len`` or ``token``), else to 1.

Counting rules (FLOPs: a multiply-add counts 2):

- ``MatMul``/``MatMulInteger``/``QLinearMatMul``: ``2 * K * numel(Y)`` with ``K`` the reduced dim. A MatMul
  (or Einsum) whose inputs are all activations (no input derives from initializers/constants only), such as
  ``Q @ K^T`` and ``probs @ V``, is reported under ``"attention"`` instead of its op type.
- ``Gemm``: ``2 * M * N * K`` plus ``M * N`` when it has a bias ``C``.
- ``Conv``/``ConvInteger``/``QLinearConv``: ``2 * numel(Y) * (C_in / group) * prod(kernel)`` plus
  ``numel(Y)`` with a bias; ``ConvTranspose``: ``2 * numel(X) * (C_out / group) * prod(kernel)`` (+ bias).
- ``Einsum``: ``2 * numel(Y) * prod(contracted dims)``.
- Pools: ``numel(Y) * prod(kernel)``; global pools and ``Reduce*``/``ArgMax``/``ArgMin``: ``numel(X)``.
- Data movement (``Reshape``, ``Transpose``, ``Gather``, ``Concat``, ``Slice``, ``Cast``, ``Shape``, ...):
  0. Every other op: 1 per element of its first output (rough: ``Softmax``/``LayerNormalization`` cost more),
  and 0 when none of its inputs or outputs is floating point (shape arithmetic on int64).
- Control-flow subgraphs (``If``/``Loop``/``Scan``) are not counted inside; they are listed in ``notes``.

Activation memory: graph inputs plus every node output (not initializers), at the requested dims.
``sum_bytes`` is the total of all node outputs; ``peak_bytes`` the largest total of live tensors when the
nodes run one at a time in the graph's order, a tensor being freed after its last consumer (graph outputs
live to the end). Parameters: every initializer (``by_dtype`` tells float weights from int64 constants).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise, product
from pathlib import Path
from typing import Any

import onnx

from accel_node.models.errors import ModelError
from accel_node.models.manifest import TensorSpec

SAMPLE_STEP = 16
MAX_DEGREE = 3
MAX_GRID_POINTS = 256
SEQ_DEFAULT = 128
_SEQ_LIKE = re.compile(r"seq|len|token", re.IGNORECASE)

_MOVEMENT = frozenset({  # data movement and shape ops: 0 FLOPs
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Concat", "Split", "SplitToSequence", "Slice",
    "Gather", "GatherElements", "GatherND", "ScatterND", "ScatterElements", "Scatter", "Expand", "Tile",
    "Pad", "Shape", "Size", "Constant", "ConstantOfShape", "Identity", "Cast", "CastLike", "Range", "Dropout",
    "DepthToSpace", "SpaceToDepth", "Where", "NonZero", "Compress", "Trilu", "EyeLike", "OneHot", "Optional",
    "OptionalGetElement", "OptionalHasElement", "ReverseSequence",
    "If", "Loop", "Scan",  # control flow: the subgraphs inside are not counted (see notes)
})  # fmt: skip
_POOLS = frozenset({"MaxPool", "AveragePool", "LpPool"})
_READ_ALL = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "ArgMax", "ArgMin"})
_MATMULS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}  # (A index, B index)
_CONVS = {"Conv": (1, 2), "ConvInteger": (1, None), "QLinearConv": (3, 8)}  # (W index, bias index)
_KINDS = {"MatMul": "matmul", "MatMulInteger": "matmul", "QLinearMatMul": "matmul", "Gemm": "matmul",
          "Einsum": "matmul", "Conv": "conv", "ConvInteger": "conv", "QLinearConv": "conv",
          "ConvTranspose": "conv", "attention": "attention"}  # fmt: skip


class AnalysisError(ModelError):
    """The model cannot be read or analysed (unreadable file, unsupported construct, bad dims)."""


@dataclass(frozen=True)
class NodeCost:
    """Cost of one node at given dims, for partitioning (``index`` is the node's position in the graph)."""

    index: int
    name: str
    op_type: str
    flops: float
    param_bytes: int
    output_bytes: int


Polynomial = dict[tuple[int, ...], Fraction]  # exponents (one per dim, in ModelAnalysis.dims order) -> coeff


@dataclass(frozen=True)
class ModelAnalysis:
    """What :func:`analyse` found; ``to_dict`` gives the JSON served at ``/v1/models/{cid}/analysis``."""

    ir_version: int
    producer: str
    opsets: dict[str, int]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: tuple[str, ...]  # symbolic dim names of the inputs, in order of appearance
    dim_values: dict[str, int]  # the values the evaluated figures are for
    node_count: int
    op_histogram: dict[str, int]
    param_count: int
    param_bytes: int
    params_by_dtype: dict[str, tuple[int, int]]  # dtype -> (elements, bytes)
    flops: float  # total at dim_values
    flops_by_op: dict[str, float]  # op type (or "attention") -> FLOPs at dim_values
    flops_poly: Polynomial | None  # None when the dims were too many to interpolate
    flops_by_op_poly: dict[str, Polynomial] | None
    polynomial_exact: bool
    activation_peak_bytes: int
    activation_sum_bytes: int
    activation_sum_poly: Polynomial | None
    shape_inference: str  # which engine resolved the shapes
    unresolved_nodes: tuple[str, ...] = ()  # nodes whose cost is unknown (counted as 0)
    notes: tuple[str, ...] = field(default=())

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Tensor name -> axis -> dim name, for inputs and outputs."""
        return {
            spec.name: {axis: dim for axis, dim in enumerate(spec.shape) if isinstance(dim, str)}
            for spec in (*self.inputs, *self.outputs)
            if any(isinstance(dim, str) for dim in spec.shape)
        }

    def flops_by_kind(self) -> dict[str, float]:
        """FLOPs grouped as ``matmul`` (weights), ``attention``, ``conv`` and ``other``."""
        kinds: dict[str, float] = {"matmul": 0.0, "attention": 0.0, "conv": 0.0, "other": 0.0}
        for op, value in self.flops_by_op.items():
            kinds[_KINDS.get(op, "other")] += value
        return kinds

    def poly_text(self, poly: Polynomial) -> dict[str, int | float]:
        """A polynomial as ``{"batch*seq^2": 8192, "1": 10}`` (integer coefficients stay integers)."""
        return {_term(self.dims, exps): _number(coeff) for exps, coeff in sorted(poly.items())}

    def to_dict(self) -> dict[str, Any]:
        def spec(t: TensorSpec) -> dict[str, Any]:
            return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}

        polynomial: dict[str, Any] | None = None
        if self.flops_poly is not None and self.flops_by_op_poly is not None:
            polynomial = {
                "total": self.poly_text(self.flops_poly),
                "by_op": {op: self.poly_text(p) for op, p in self.flops_by_op_poly.items()},
            }
        return {
            "format": "onnx",
            "ir_version": self.ir_version,
            "producer": self.producer,
            "opsets": dict(self.opsets),
            "inputs": [spec(t) for t in self.inputs],
            "outputs": [spec(t) for t in self.outputs],
            "dynamic_axes": {
                name: {str(a): d for a, d in axes.items()} for name, axes in self.dynamic_axes.items()
            },
            "dims": list(self.dims),
            "dim_values": dict(self.dim_values),
            "nodes": self.node_count,
            "op_histogram": dict(self.op_histogram),
            "parameters": {
                "count": self.param_count,
                "bytes": self.param_bytes,
                "by_dtype": {k: {"count": c, "bytes": b} for k, (c, b) in self.params_by_dtype.items()},
            },
            "flops": {
                "total": self.flops,
                "by_op": dict(self.flops_by_op),
                "by_kind": self.flops_by_kind(),
                "polynomial": polynomial,
                "polynomial_exact": self.polynomial_exact,
            },
            "activations": {
                "peak_bytes": self.activation_peak_bytes,
                "sum_bytes": self.activation_sum_bytes,
                "sum_bytes_polynomial": (
                    None if self.activation_sum_poly is None else self.poly_text(self.activation_sum_poly)
                ),
                "schedule": "graph order, one node at a time; a tensor is freed after its last consumer",
            },
            "shape_inference": self.shape_inference,
            "unresolved_nodes": list(self.unresolved_nodes),
            "notes": list(self.notes),
        }


def _term(names: Sequence[str], exps: Sequence[int]) -> str:
    parts = [name if e == 1 else f"{name}^{e}" for name, e in zip(names, exps, strict=True) if e]
    return "*".join(parts) or "1"


def _number(value: Fraction) -> int | float:
    return int(value) if value.denominator == 1 else float(value)


def evaluate_poly(poly: Polynomial, values: Sequence[int]) -> Fraction:
    """Value of ``poly`` with the dims set to ``values`` (in the analysis' dims order)."""
    total = Fraction(0)
    for exps, coeff in poly.items():
        total += coeff * math.prod(v**e for v, e in zip(values, exps, strict=True))
    return total


# -- dtypes ------------------------------------------------------------------------------------------

_T = onnx.TensorProto
_DTYPE_NAMES = {
    _T.FLOAT: "float32", _T.UINT8: "uint8", _T.INT8: "int8", _T.UINT16: "uint16", _T.INT16: "int16",
    _T.INT32: "int32", _T.INT64: "int64", _T.STRING: "string", _T.BOOL: "bool", _T.FLOAT16: "float16",
    _T.DOUBLE: "float64", _T.UINT32: "uint32", _T.UINT64: "uint64", _T.COMPLEX64: "complex64",
    _T.COMPLEX128: "complex128", _T.BFLOAT16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz",
    19: "float8e5m2", 20: "float8e5m2fnuz", 21: "uint4", 22: "int4", 23: "float4e2m1",
}  # fmt: skip
_BITS = {_T.FLOAT: 32, _T.UINT8: 8, _T.INT8: 8, _T.UINT16: 16, _T.INT16: 16, _T.INT32: 32, _T.INT64: 64,
         _T.BOOL: 8, _T.FLOAT16: 16, _T.DOUBLE: 64, _T.UINT32: 32, _T.UINT64: 64, _T.COMPLEX64: 64,
         _T.COMPLEX128: 128, _T.BFLOAT16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4}  # fmt: skip
FLOAT_TYPES = frozenset({_T.FLOAT, _T.FLOAT16, _T.DOUBLE, _T.BFLOAT16, 17, 18, 19, 20, 23})


def dtype_name(elem_type: int) -> str:
    """The numpy-style name of an ONNX element type (``float32``, ``int64``, ...)."""
    return _DTYPE_NAMES.get(elem_type, f"onnx:{elem_type}")


def tensor_bytes(elem_type: int, elements: int) -> int:
    """Bytes of a dense tensor (sub-byte types rounded up; strings count 0 here)."""
    return (elements * _BITS.get(elem_type, 0) + 7) // 8


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


# -- loading and dims ------------------------------------------------------------------------------


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Read an ONNX model without its external data (sizes come from the tensors' dims)."""
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except FileNotFoundError as exc:
        raise AnalysisError(f"{path}: no such model file") from exc
    except Exception as exc:  # protobuf DecodeError, onnx's own errors
        raise AnalysisError(f"{Path(path).name} is not a readable ONNX model: {exc}") from exc
    _check_model(model, Path(path).name)
    return model


def _check_model(model: onnx.ModelProto, label: str) -> None:
    if not model.HasField("graph") or not model.opset_import or model.ir_version <= 0:
        raise AnalysisError(f"{label} is not an ONNX model (no graph, opset or IR version)")


def resolve_dims(names: Sequence[str], dims: Mapping[str, int] | None) -> dict[str, int]:
    """Values for every symbolic dim: the given ones, else 128 for seq-like names (containing seq, len or
    token, any case), else 1."""
    given = dict(dims or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise AnalysisError(
            f"unknown dim(s) {', '.join(unknown)}; the model's dims are {', '.join(names) or 'none'}"
        )
    resolved = {}
    for name in names:
        value = given.get(name, SEQ_DEFAULT if _SEQ_LIKE.search(name) else 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AnalysisError(f"dim {name} must be a positive integer, not {value!r}")
        resolved[name] = value
    return resolved


# -- the prepared graph: structure, parameters and shape inference -----------------------------------

ShapeMap = dict[str, tuple[int, ...]]
_SMALL_INITIALIZER = 1024  # elements; bigger initializers enter shape inference as shape-only inputs
_RANDOM = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli"})  # fmt: skip


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    graphs: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            graphs.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attr.graphs)
    return graphs


def outer_names(graph: onnx.GraphProto) -> list[str]:
    """Names a subgraph reads from enclosing scopes, in first-use order."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    used: dict[str, None] = {}
    for node in graph.node:
        for name in (*node.input, *(n for sub in subgraphs(node) for n in outer_names(sub))):
            if name not in defined:
                used[name] = None
        defined.update(node.output)
    used.update((o.name, None) for o in graph.output if o.name not in defined)
    return list(used)


def _op_name(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _spec(value: onnx.ValueInfoProto, *, name_unnamed: bool = False) -> TensorSpec:
    tensor = value.type.tensor_type
    dims: list[int | str | None] = [
        d.dim_value
        if d.HasField("dim_value")
        else (d.dim_param or (f"{value.name}_{axis}" if name_unnamed else None))
        for axis, d in enumerate(tensor.shape.dim)
    ]
    return TensorSpec(value.name, dtype_name(tensor.elem_type), tuple(dims))


class _Prepared:
    """One model, read once: graph structure, parameters, and a light copy for shape inference.

    The shape-inference copy ("skeleton") keeps the nodes and the small initializers (shape constants) but
    turns every big initializer into a shape-only graph input, so that running inference at many points
    never copies the weights.
    """

    def __init__(self, model: onnx.ModelProto, base_dir: Path | None) -> None:
        graph = model.graph
        if graph.sparse_initializer:
            raise AnalysisError("models with sparse initializers are not supported")
        self.nodes = list(graph.node)
        self.notes: list[str] = []
        self.init_shapes: ShapeMap = {t.name: tuple(t.dims) for t in graph.initializer}
        self.init_types = {t.name: t.data_type for t in graph.initializer}
        real_inputs = [v for v in graph.input if v.name not in self.init_shapes]
        for value in (*real_inputs, *graph.output):
            if not value.type.HasField("tensor_type"):
                raise AnalysisError(
                    f"{value.name} is not a tensor; only tensor inputs and outputs are supported"
                )
        for value in real_inputs:
            if not value.type.tensor_type.HasField("shape"):
                raise AnalysisError(
                    f"input {value.name} has no shape (not even a rank); it cannot be analysed"
                )
        self.inputs = tuple(_spec(v, name_unnamed=True) for v in real_inputs)
        self.outputs = tuple(_spec(v) for v in graph.output)
        self.graph_outputs = tuple(o.name for o in graph.output)
        self._find_dims(real_inputs)
        init_bytes = self._count_parameters(graph)
        self._walk({v.name for v in real_inputs}, init_bytes)
        self.op_names = [_op_name(n) for n in self.nodes]
        self.skeleton = self._skeleton(model, real_inputs, base_dir)

    def _find_dims(self, real_inputs: Sequence[onnx.ValueInfoProto]) -> None:
        """Symbolic dims: named ones by name, unnamed dynamic ones as ``<input>_<axis>``."""
        names: list[str] = []
        self.dim_slots: list[tuple[int, int, str]] = []  # (input position, axis, dim name)
        for position, value in enumerate(real_inputs):
            for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                if not dim.HasField("dim_value"):
                    name = dim.dim_param or f"{value.name}_{axis}"
                    self.dim_slots.append((position, axis, name))
                    names.append(name)
        self.dim_names = tuple(dict.fromkeys(names))

    def _count_parameters(self, graph: onnx.GraphProto) -> dict[str, int]:
        self.params_by_dtype: dict[str, tuple[int, int]] = {}
        init_bytes: dict[str, int] = {}
        for t in graph.initializer:
            count = _numel(t.dims)
            if t.data_type == _T.STRING:
                size = sum(len(s) for s in t.string_data)
            else:
                size = tensor_bytes(t.data_type, count)
            init_bytes[t.name] = size
            c, b = self.params_by_dtype.get(dtype_name(t.data_type), (0, 0))
            self.params_by_dtype[dtype_name(t.data_type)] = (c + count, b + size)
        return init_bytes

    def _walk(self, input_names: set[str], init_bytes: Mapping[str, int]) -> None:
        """Check the node order; find each tensor's last use, each initializer's first consumer, and which
        MatMuls multiply two activations (no operand derives from initializers and constants alone)."""
        self.node_uses: list[tuple[str, ...]] = []
        self.node_param_bytes: list[int] = []
        self.node_keys: list[str] = []
        self.last_use: dict[str, int] = {}
        available = input_names | set(init_bytes) | {""}
        attributed: set[str] = set()
        constant = set(init_bytes)
        for index, node in enumerate(self.nodes):
            nested = subgraphs(node)
            outer = sorted(set().union(*map(outer_names, nested)))
            uses = tuple(dict.fromkeys([n for n in node.input if n] + outer))
            for name in uses:
                if name not in available:
                    raise AnalysisError(
                        f"node {node.name or index} ({node.op_type}) reads {name!r} before any node "
                        "produces it: the graph is not topologically sorted or is incomplete"
                    )
                self.last_use[name] = index
            available.update(node.output)
            fresh = [n for n in uses if n in init_bytes and n not in attributed]
            attributed.update(fresh)
            self.node_uses.append(uses)
            self.node_param_bytes.append(sum(init_bytes[n] for n in fresh))
            all_constant = node.op_type not in _RANDOM and all(n in constant for n in uses)
            if node.op_type == "Constant" or (uses and all_constant):
                constant.update(node.output)
            operands = [n for n in node.input if n]
            two_activations = len(operands) > 1 and not any(n in constant for n in operands)
            is_product = node.op_type in ("MatMul", "Einsum") and node.domain in ("", "ai.onnx")
            self.node_keys.append("attention" if is_product and two_activations else _op_name(node))
            if nested:
                self.notes.append(f"{node.op_type} node {node.name or index}: its subgraphs are not counted")

    def _skeleton(self, model: onnx.ModelProto, real_inputs: Sequence[onnx.ValueInfoProto],
                  base_dir: Path | None) -> onnx.ModelProto:  # fmt: skip
        sk = onnx.ModelProto()
        sk.ir_version = model.ir_version
        sk.opset_import.extend(model.opset_import)
        sk.functions.extend(model.functions)
        graph = sk.graph
        graph.name = model.graph.name
        graph.node.extend(model.graph.node)
        graph.input.extend(real_inputs)
        for position, axis, name in self.dim_slots:
            graph.input[position].type.tensor_type.shape.dim[axis].dim_param = name
        for t in model.graph.initializer:
            if _numel(t.dims) <= _SMALL_INITIALIZER:
                if t.data_location != _T.EXTERNAL:
                    graph.initializer.append(t)
                    continue
                if base_dir is not None:
                    from onnx.external_data_helper import load_external_data_for_tensor

                    copy = onnx.TensorProto()
                    copy.CopyFrom(t)
                    try:
                        load_external_data_for_tensor(copy, str(base_dir))
                    except Exception as exc:
                        raise AnalysisError(f"initializer {t.name}: external data unreadable: {exc}") from exc
                    graph.initializer.append(copy)
                    continue
            graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        for out in model.graph.output:  # shapes dropped: stale symbolic names would clash with concrete ones
            graph.output.append(
                onnx.helper.make_tensor_value_info(out.name, out.type.tensor_type.elem_type, None)
            )
        return sk

    def infer(self, values: Mapping[str, int]) -> tuple[ShapeMap, dict[str, int], str]:
        """Shapes (fully known ones only) and element types of every tensor, the dims set to ``values``."""
        model = onnx.ModelProto()
        model.CopyFrom(self.skeleton)
        for position, axis, name in self.dim_slots:
            model.graph.input[position].type.tensor_type.shape.dim[axis].dim_value = values[name]
        shapes: ShapeMap = dict(self.init_shapes)
        dtypes: dict[str, int] = dict(self.init_types)
        engines = []
        complete = False
        try:
            inferred, complete = _symbolic_inference(model)
            _collect(inferred, shapes, dtypes)
            engines.append("onnxruntime-symbolic")
        except Exception:  # unsupported ops, opset < 7, internal errors: fall back to onnx's own inference
            complete = False
        if not complete:
            try:
                inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
            except Exception as exc:
                if not engines:
                    raise AnalysisError(f"shape inference failed: {exc}") from exc
            else:
                known = dict(shapes)
                _collect(inferred, shapes, dtypes)
                shapes.update(known)  # where both engines know a shape, the symbolic one wins
                engines.append("onnx")
        return shapes, dtypes, "+".join(engines)


@functools.cache
def _ort_symbolic_module() -> Any:
    """ONNX Runtime's ``symbolic_shape_infer`` module, loaded from its file: importing it by name runs the
    ``onnxruntime.tools`` package ``__init__``, which imports torch whenever torch is installed (~300 MB and
    seconds). The module itself needs only numpy, onnx, sympy and packaging (ONNX Runtime's dependencies)."""
    package = importlib.util.find_spec("onnxruntime")
    if package is None or not package.submodule_search_locations:
        raise ImportError("onnxruntime is not installed")
    path = Path(next(iter(package.submodule_search_locations))) / "tools" / "symbolic_shape_infer.py"
    spec = importlib.util.spec_from_file_location("_accel_node_ort_symbolic_shape_infer", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _symbolic_inference(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """ONNX Runtime's symbolic shape inference, driven step by step: its ``infer_shapes`` writes a debug
    model into the current directory when inference is incomplete."""
    engine = _ort_symbolic_module().SymbolicShapeInference(2**31 - 1, False, False, 0)
    engine._preprocess(model)
    complete = False
    while engine.run_:
        complete = bool(engine._infer_impl())
    engine._update_output_from_vi()
    out: onnx.ModelProto = engine.out_mp_
    return out, complete


def _collect(model: onnx.ModelProto, shapes: ShapeMap, dtypes: dict[str, int]) -> None:
    graph = model.graph
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor = value.type.tensor_type
        if tensor.elem_type:
            dtypes.setdefault(value.name, tensor.elem_type)
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes[value.name] = tuple(d.dim_value for d in tensor.shape.dim)


def _prepare(model: onnx.ModelProto, base_dir: Path | None = None) -> _Prepared:
    _check_model(model, "the model")
    return _Prepared(model, base_dir)


# Public names for callers that need shapes at many points (the shard partitioner): ``prepare_model(model)``
# then ``.infer(dims) -> (shapes, dtypes, engine)``, ``.dim_names``, ``.nodes``, ``.node_param_bytes``.
PreparedModel = _Prepared
prepare_model = _prepare


# -- per-node costs ---------------------------------------------------------------------------------


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _einsum_contracted(equation: str, shapes: Sequence[tuple[int, ...]]) -> int | None:
    """Product of the sizes of an Einsum's summed-over letters; None when the equation is not understood."""
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    operands = lhs.split(",")
    if len(operands) != len(shapes):
        return None
    letters = "".join(op.replace("...", "") for op in operands)
    if not arrow:
        rhs = "".join(c for c in sorted(set(letters)) if letters.count(c) == 1)
    sizes: dict[str, int] = {}
    for op, shape in zip(operands, shapes, strict=True):
        head, ellipsis, tail = op.partition("...")
        if not ellipsis and len(op) != len(shape):
            return None
        pairs = list(zip(head, shape, strict=False))
        if tail:
            pairs += list(zip(tail, shape[len(shape) - len(tail) :], strict=True))
        for letter, size in pairs:
            sizes[letter] = max(sizes.get(letter, 1), size)
    return math.prod(size for letter, size in sizes.items() if letter not in rhs)


def _node_flops(node: onnx.NodeProto, shapes: ShapeMap, dtypes: Mapping[str, int]) -> int | None:
    """FLOPs of one node at the shapes in ``shapes``; None when a shape it needs is unknown."""
    if node.domain not in ("", "ai.onnx"):
        return _elementwise(node, shapes, dtypes)
    if node.op_type in _MOVEMENT:
        return 0
    rule = _RULES.get(node.op_type)
    if rule is None:
        return _elementwise(node, shapes, dtypes)
    y = shapes.get(node.output[0]) if node.output else None
    ins = [shapes.get(name) if name else None for name in node.input]
    return None if y is None else rule(node, ins, y)


def _matmul(node: onnx.NodeProto, ins: Sequence[tuple[int, ...] | None], y: tuple[int, ...]) -> int | None:
    a = ins[_MATMULS[node.op_type][0]]
    return None if a is None else 2 * a[-1] * _numel(y)


def _gemm(node: onnx.NodeProto, ins: Sequence[tuple[int, ...] | None], y: tuple[int, ...]) -> int | None:
    a = ins[0]
    if a is None:
        return None
    k = a[0] if _attr(node, "transA", 0) else a[-1]
    return 2 * k * _numel(y) + (_numel(y) if len(node.input) > 2 and node.input[2] else 0)


def _conv(node: onnx.NodeProto, ins: Sequence[tuple[int, ...] | None], y: tuple[int, ...]) -> int | None:
    w_index, b_index = _CONVS.get(node.op_type, (1, 2))
    x, w = ins[0], ins[w_index]
    if w is None or x is None:
        return None
    macs = _numel(x if node.op_type == "ConvTranspose" else y) * _numel(w[1:])
    has_bias = b_index is not None and b_index < len(node.input) and bool(node.input[b_index])
    return 2 * macs + (_numel(y) if has_bias else 0)


def _einsum(node: onnx.NodeProto, ins: Sequence[tuple[int, ...] | None], y: tuple[int, ...]) -> int | None:
    known = [s for s in ins if s is not None]
    if len(known) != len(ins):
        return None
    equation = _attr(node, "equation", b"")
    text = equation.decode() if isinstance(equation, bytes) else str(equation)
    contracted = _einsum_contracted(text, known)
    if contracted is None:
        return None
    return 2 * _numel(y) * contracted if contracted > 1 else _numel(y)


_Rule = Callable[[onnx.NodeProto, Sequence[tuple[int, ...] | None], tuple[int, ...]], int | None]
_RULES: dict[str, _Rule] = {
    **dict.fromkeys(_MATMULS, _matmul),
    "Gemm": _gemm,
    **dict.fromkeys([*_CONVS, "ConvTranspose"], _conv),
    "Einsum": _einsum,
}


def _elementwise(node: onnx.NodeProto, shapes: ShapeMap, dtypes: Mapping[str, int]) -> int | None:
    if not any(dtypes.get(n) in FLOAT_TYPES for n in (*node.input, *node.output) if n):
        return 0
    op = node.op_type
    if op in _READ_ALL or op.startswith("Reduce"):
        x = shapes.get(node.input[0]) if node.input else None
        return None if x is None else _numel(x)
    y = shapes.get(node.output[0]) if node.output else None
    if y is None:
        return None
    if op in _POOLS:
        return _numel(y) * _numel(_attr(node, "kernel_shape", []) or [1])
    return _numel(y)


@dataclass
class _Point:
    """Costs of every node at one assignment of the dims."""

    flops: list[int]
    output_bytes: list[int]
    sizes: dict[str, int]  # bytes of every graph input and node output with a known shape
    unresolved: list[int]
    engine: str


def _evaluate(prep: _Prepared, values: Mapping[str, int]) -> _Point:
    shapes, dtypes, engine = prep.infer(values)
    flops, out_bytes, unresolved = [], [], []
    sizes = {
        spec.name: tensor_bytes(dtypes.get(spec.name, _T.FLOAT), _numel(shapes[spec.name]))
        for spec in prep.inputs
        if spec.name in shapes
    }
    for index, node in enumerate(prep.nodes):
        f = _node_flops(node, shapes, dtypes)
        known, total = f is not None, 0
        for name in node.output:
            if name in shapes:
                sizes[name] = tensor_bytes(dtypes.get(name, _T.FLOAT), _numel(shapes[name]))
                total += sizes[name]
            elif name:
                known = False
        flops.append(f or 0)
        out_bytes.append(total)
        if not known:
            unresolved.append(index)
    return _Point(flops, out_bytes, sizes, unresolved, engine)


def node_costs(model: onnx.ModelProto, dims: Mapping[str, int]) -> list[NodeCost]:
    """Per-node FLOPs, parameter bytes and output bytes at ``dims``, in the graph's node order.

    The graph must already be topologically sorted (the ONNX spec requires it; it is checked, never
    re-sorted, so ``index`` is the position in ``model.graph.node``). Dims missing from ``dims`` take
    :func:`resolve_dims`'s defaults. An initializer read by several nodes counts at its first consumer
    (initializers read only inside a subgraph count at the control-flow node). Nodes whose shapes could not
    be inferred cost 0 FLOPs and report the bytes of the outputs that are known.
    """
    prep = _prepare(model)
    point = _evaluate(prep, resolve_dims(prep.dim_names, dims))
    return [
        NodeCost(
            i, node.name, node.op_type, float(point.flops[i]), prep.node_param_bytes[i], point.output_bytes[i]
        )
        for i, node in enumerate(prep.nodes)
    ]


# -- the whole-model analysis ----------------------------------------------------------------------


def _quantities(prep: _Prepared, point: _Point) -> dict[str, int]:
    q: Counter[str] = Counter()
    for key, f in zip(prep.node_keys, point.flops, strict=True):
        if f:
            q[f"flops:{key}"] += f
    q["activation_sum"] = sum(point.output_bytes)
    return dict(q)


def _degree(seq: Sequence[int]) -> int:
    """Degree of the lowest polynomial through equally spaced samples (at most len(seq) - 1)."""
    degree, diffs = 0, list(seq)
    for k in range(1, len(seq)):
        diffs = [b - a for a, b in pairwise(diffs)]
        if any(diffs):
            degree = k
    return degree


def _solve_vandermonde(xs: Sequence[int], ys: Sequence[Fraction]) -> list[Fraction]:
    """Coefficients c of sum(c[k] * x**k) through the points (xs, ys), exactly (Gauss-Jordan on fractions)."""
    n = len(xs)
    rows = [[Fraction(x) ** k for k in range(n)] + [y] for x, y in zip(xs, ys, strict=True)]
    for col in range(n):
        pivot = rows[col][col]  # distinct positive xs: the Vandermonde matrix needs no row swaps
        rows[col] = [v / pivot for v in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col], strict=True)]
    return [rows[k][n] for k in range(n)]


def _interpolate(prep: _Prepared, notes: list[str]) -> tuple[dict[str, Polynomial] | None, bool]:
    """Polynomials (in prep.dim_names) of every quantity of :func:`_quantities`, and whether all fit."""
    names = prep.dim_names
    cache: dict[tuple[int, ...], dict[str, int]] = {}

    def sample(point: tuple[int, ...]) -> dict[str, int]:
        if point not in cache:
            cache[point] = _quantities(prep, _evaluate(prep, dict(zip(names, point, strict=True))))
        return cache[point]

    base = tuple(SAMPLE_STEP for _ in names)
    degrees, exact = [], True
    for i, name in enumerate(names):
        line = [sample((*base[:i], SAMPLE_STEP * (j + 1), *base[i + 1 :])) for j in range(MAX_DEGREE + 2)]
        keys: set[str] = set().union(*line)
        degree = max((_degree([s.get(k, 0) for s in line]) for k in keys), default=0)
        if degree > MAX_DEGREE:
            exact = False
            notes.append(f"figures grow faster than {name}^{MAX_DEGREE}: the polynomial is not exact")
            degree = MAX_DEGREE
        degrees.append(degree)
    grid_size = math.prod(d + 1 for d in degrees)
    if grid_size > MAX_GRID_POINTS:
        notes.append(
            f"{len(names)} symbolic dims would need {grid_size} sample points: no polynomial computed"
        )
        return None, False
    grid = list(product(*(range(d + 1) for d in degrees)))
    samples = {idx: sample(tuple(SAMPLE_STEP * (j + 1) for j in idx)) for idx in grid}
    polys: dict[str, Polynomial] = {}
    for key in sorted(set().union(*samples.values())):
        table = {idx: Fraction(samples[idx].get(key, 0)) for idx in grid}
        for axis, degree in enumerate(degrees):  # tensor-product solve, one axis at a time
            xs = [SAMPLE_STEP * (j + 1) for j in range(degree + 1)]
            for rest in {idx[:axis] + idx[axis + 1 :] for idx in grid}:
                line_idx = [(*rest[:axis], j, *rest[axis:]) for j in range(degree + 1)]
                table.update(zip(line_idx, _solve_vandermonde(xs, [table[i] for i in line_idx]), strict=True))
        polys[key] = {exps: c for exps, c in table.items() if c != 0}
    return polys, exact


def analyse(path_or_model: str | os.PathLike[str] | onnx.ModelProto,
            dims: Mapping[str, int] | None = None) -> ModelAnalysis:  # fmt: skip
    """Analyse an ONNX model: a path (read without external data) or a ModelProto (not modified).

    ``dims`` gives values for the symbolic input dims (:func:`resolve_dims` fills in the rest). Raises
    :class:`AnalysisError` for unreadable or unsupported models and for unknown or invalid dims.
    CPU-bound (tens of shape inferences): call it off the event loop.
    """
    if isinstance(path_or_model, onnx.ModelProto):
        model, base_dir = path_or_model, None
    else:
        model, base_dir = load_model(path_or_model), Path(path_or_model).parent
    prep = _prepare(model, base_dir)
    values = resolve_dims(prep.dim_names, dims)
    notes = list(prep.notes)
    point = _evaluate(prep, values)
    direct = _quantities(prep, point)
    polys: dict[str, Polynomial] | None
    if prep.dim_names:
        polys, exact = _interpolate(prep, notes)
    else:
        polys, exact = {k: {(): Fraction(v)} for k, v in direct.items() if v}, True
    if polys is not None:
        at = [values[n] for n in prep.dim_names]
        if any(evaluate_poly(polys.get(k, {}), at) != direct.get(k, 0) for k in set(polys) | set(direct)):
            if exact:
                notes.append(
                    "the polynomial does not reproduce the figures at the requested dims: some sizes are not "
                    f"polynomial in the dims (e.g. strided pooling); it holds at multiples of {SAMPLE_STEP}"
                )
            exact = False
    by_op = {k.removeprefix("flops:"): float(v) for k, v in sorted(direct.items()) if k.startswith("flops:")}
    flops_by_op_poly = flops_poly = act_poly = None
    if polys is not None:
        flops_by_op_poly = {
            k.removeprefix("flops:"): p for k, p in sorted(polys.items()) if k.startswith("flops:")
        }
        flops_poly = _sum_polys(flops_by_op_poly.values())
        act_poly = polys.get("activation_sum", {})
    unresolved = tuple(prep.nodes[i].name or f"#{i}:{prep.nodes[i].op_type}" for i in point.unresolved)
    if unresolved:
        notes.append(f"{len(unresolved)} node(s) have unknown output shapes; their FLOPs count as 0")
    return ModelAnalysis(
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        opsets={(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        inputs=prep.inputs,
        outputs=prep.outputs,
        dims=prep.dim_names,
        dim_values=values,
        node_count=len(prep.nodes),
        op_histogram=dict(sorted(Counter(prep.op_names).items(), key=lambda kv: (-kv[1], kv[0]))),
        param_count=sum(c for c, _ in prep.params_by_dtype.values()),
        param_bytes=sum(b for _, b in prep.params_by_dtype.values()),
        params_by_dtype=dict(sorted(prep.params_by_dtype.items())),
        flops=float(sum(point.flops)),
        flops_by_op=by_op,
        flops_poly=flops_poly,
        flops_by_op_poly=flops_by_op_poly,
        polynomial_exact=exact,
        activation_peak_bytes=_peak_bytes(prep, point),
        activation_sum_bytes=sum(point.output_bytes),
        activation_sum_poly=act_poly,
        shape_inference=point.engine,
        unresolved_nodes=unresolved,
        notes=tuple(dict.fromkeys(notes)),
    )


def _sum_polys(polys: Iterable[Polynomial]) -> Polynomial:
    total: dict[tuple[int, ...], Fraction] = {}
    for poly in polys:
        for exps, coeff in poly.items():
            total[exps] = total.get(exps, Fraction(0)) + coeff
    return {exps: c for exps, c in total.items() if c != 0}


def _peak_bytes(prep: _Prepared, point: _Point) -> int:
    """Peak of live activation bytes: nodes run in graph order, a tensor is freed after its last consumer,
    graph outputs live to the end."""
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
