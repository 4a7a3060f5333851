"""Stage extraction: a node range of the graph as a standalone, deterministic ONNX model.

Stages and frames
    Stage ``i`` runs nodes ``[cuts[i-1], cuts[i])``. It receives the *frame* of its start boundary (a tensor
    per name) and hands on the frame of its end boundary (:attr:`Stage.boundary`): its ONNX model takes
    :attr:`Stage.inputs` (the boundary tensors it reads) and produces :attr:`Stage.outputs` (the end
    boundary tensors it computes); :attr:`Stage.carried` (the rest of the end boundary, such as an
    ``attention_mask`` read by later layers) passes by unchanged. The frame after the last stage holds
    the graph outputs.

Determinism
    A stage's bytes depend only on the model and the cut positions: fixed graph name and producer, no doc
    strings or metadata, nodes and initializers in the original order, boundary types inferred at two fixed
    sample points of the symbolic dims (never at the profile's dims; see
    :meth:`accel_node.shard.profile.GraphProfile`), deterministic protobuf serialization. Bump
    :data:`PRODUCER_VERSION` whenever those bytes change: plans name stages by CID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import onnx

from accel_node.models.analysis.dtypes import dtype_name
from accel_node.models.manifest import TensorSpec
from accel_node.shard.errors import PartitionError
from accel_node.shard.limits import MAX_STAGES
from accel_node.shard.structure import Dim, GraphStructure, TensorTypes
from p2p.content import compute_cid

PRODUCER_NAME = "accel-node-shard"
PRODUCER_VERSION = "1"  # bump whenever the bytes of extracted stages change


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


def stage_bounds(graph: GraphStructure, cuts: Sequence[int]) -> list[tuple[int, int]]:
    """The node ranges ``cuts`` (strictly increasing positions in (0, n)) make; each must hold real work."""
    if any(isinstance(c, bool) or not isinstance(c, int) for c in cuts):
        raise PartitionError("cut positions must be integers")
    bounds = [0, *cuts, graph.n]
    if len(bounds) - 1 > MAX_STAGES:
        raise PartitionError(f"at most {MAX_STAGES} stages are supported")
    for a, b in pairwise(bounds):
        if not 0 <= a < b <= graph.n or not graph.nonempty(a, b):
            raise PartitionError(f"cuts {list(cuts)} do not split the {graph.n} nodes into non-empty stages")
    return list(pairwise(bounds))


def extract_stage(
    graph: GraphStructure,
    types: TensorTypes,
    index: int,
    start: int,
    end: int,
    *,
    flops: float,
    param_bytes: int,
    activation_bytes: int,
) -> Stage:
    """Stage ``index``, running nodes [start, end), with the given figures; ``types`` are the boundary
    tensors' types (those that are not graph inputs or outputs)."""
    g = graph
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
    out = model.graph
    out.name = f"stage{index}"
    for i in sorted(constants | set(members)):
        node = out.node.add()
        node.CopyFrom(g.nodes[i])
        node.doc_string = ""
    input_infos = [_value_info(g, types, name) for name in inputs]
    output_infos = [_value_info(g, types, name) for name in outputs]
    out.input.extend(input_infos)
    out.output.extend(output_infos)
    for tensor in source.graph.initializer:
        if tensor.name in used:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                raise PartitionError(
                    f"initializer {tensor.name!r} is stored outside the model: load its external data first"
                )
            out.initializer.append(tensor)
    if source.ir_version < 4:  # initializers had to be listed as graph inputs then
        out.input.extend(v for v in source.graph.input if v.name in used and v.name in g.init_bytes)
    try:
        onnx.checker.check_model(model)
        data = model.SerializeToString(deterministic=True)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise PartitionError(
            f"stage {index} (nodes {start}..{end - 1}) is not a valid ONNX model: {exc}"
        ) from exc
    return Stage(
        index=index,
        start=start,
        end=end,
        model_bytes=data,
        cid=str(compute_cid(data)),
        inputs=tuple(_spec(v) for v in input_infos),
        outputs=tuple(_spec(v) for v in output_infos),
        carried=tuple(_spec(_value_info(g, types, name)) for name in carried),
        boundary=g.boundaries[end],
        flops=flops,
        param_bytes=param_bytes,
        activation_bytes=activation_bytes,
    )


def _value_info(graph: GraphStructure, types: TensorTypes, name: str) -> onnx.ValueInfoProto:
    original = graph.input_info.get(name) or graph.output_info.get(name)
    info = onnx.ValueInfoProto()
    if original is not None:
        info.CopyFrom(original)
        info.doc_string = ""
        return info
    if name not in types:
        raise PartitionError(f"the type or shape of boundary tensor {name!r} is unknown; cut elsewhere")
    elem_type, shape = types[name]
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
    return TensorSpec(info.name, dtype_name(tensor.elem_type), shape)
