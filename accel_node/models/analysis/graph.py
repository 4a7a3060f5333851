"""Reading an ONNX graph: loading and checking, symbolic dims, scopes of subgraphs, and the prepared model.

This is the part of the analysis that the shard partitioner shares: :func:`prepare_model` reads a model
once (structure, parameters, symbolic dims) and :meth:`PreparedModel.infer` gives the shapes and element
types of every tensor at any assignment of the dims, cheaply enough to call tens of times.

Unnamed dynamic input dims are named ``<input>_<axis>``. Dims the caller does not give default to 128 when
the name looks like a sequence length (contains ``seq``, ``len`` or ``token``), else to 1.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx

from accel_node.models.analysis.dtypes import dtype_name, initializer_bytes, numel
from accel_node.models.analysis.shapes import ShapeMap, infer_shapes
from accel_node.models.errors import AnalysisError
from accel_node.models.manifest import TensorSpec

SEQ_DEFAULT = 128
_SEQ_LIKE = re.compile(r"seq|len|token", re.IGNORECASE)
_SMALL_INITIALIZER = 1024  # elements; bigger initializers enter shape inference as shape-only inputs
_RANDOM = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli"})  # fmt: skip


# -- loading and dims ------------------------------------------------------------------------------


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Read an ONNX model without its external data (sizes come from the tensors' dims)."""
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except FileNotFoundError as exc:
        raise AnalysisError(f"{path}: no such model file") from exc
    except Exception as exc:  # protobuf DecodeError, onnx's own errors
        raise AnalysisError(f"{Path(path).name} is not a readable ONNX model: {exc}") from exc
    check_model(model, Path(path).name)
    return model


def check_model(model: onnx.ModelProto, label: str) -> None:
    """Refuse what is not an ONNX model at all (``label`` names it in the message)."""
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


# -- scopes and names ------------------------------------------------------------------------------


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held in ``node``'s attributes (the branches and bodies of ``If``/``Loop``/``Scan``)."""
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


def op_name(node: onnx.NodeProto) -> str:
    """The op type, prefixed with its domain unless it is the default one (``com.microsoft.Attention``)."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def tensor_spec(value: onnx.ValueInfoProto, *, name_unnamed: bool = False) -> TensorSpec:
    """The spec of a graph input or output; ``name_unnamed`` names dynamic dims ``<input>_<axis>``."""
    tensor = value.type.tensor_type
    dims: list[int | str | None] = [
        d.dim_value
        if d.HasField("dim_value")
        else (d.dim_param or (f"{value.name}_{axis}" if name_unnamed else None))
        for axis, d in enumerate(tensor.shape.dim)
    ]
    return TensorSpec(value.name, dtype_name(tensor.elem_type), tuple(dims))


# -- the prepared model ----------------------------------------------------------------------------


class PreparedModel:
    """One model, read once: graph structure, parameters, and a light copy for shape inference.

    The shape-inference copy ("skeleton") keeps the nodes and the small initializers (shape constants) but
    turns every big initializer into a shape-only graph input, so that running inference at many points
    never copies the weights. Build it with :func:`prepare_model`; the shard partitioner reads
    ``dim_names``, ``nodes`` and ``node_param_bytes`` and calls :meth:`infer`.
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
        self.inputs = tuple(tensor_spec(v, name_unnamed=True) for v in real_inputs)
        self.outputs = tuple(tensor_spec(v) for v in graph.output)
        self.graph_outputs = tuple(o.name for o in graph.output)
        self._find_dims(real_inputs)
        init_bytes = self._count_parameters(graph)
        self._walk({v.name for v in real_inputs}, init_bytes)
        self.op_names = [op_name(n) for n in self.nodes]
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
            count, size = numel(t.dims), initializer_bytes(t)
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
            self.node_keys.append("attention" if is_product and two_activations else op_name(node))
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
            if numel(t.dims) <= _SMALL_INITIALIZER:
                if t.data_location != onnx.TensorProto.EXTERNAL:
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
        """Shapes (fully known ones only) and element types of every tensor, the dims set to ``values``,
        and the shape-inference engine(s) that found them."""
        model = onnx.ModelProto()
        model.CopyFrom(self.skeleton)
        for position, axis, name in self.dim_slots:
            model.graph.input[position].type.tensor_type.shape.dim[axis].dim_value = values[name]
        return infer_shapes(model, self.init_shapes, self.init_types)


def prepare_model(model: onnx.ModelProto, base_dir: Path | None = None) -> PreparedModel:
    """Check and prepare ``model`` (not modified); ``base_dir`` is where its external data lives, if it is
    to be read (only small external initializers are, as shape constants)."""
    check_model(model, "the model")
    return PreparedModel(model, base_dir)
