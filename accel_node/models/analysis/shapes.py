"""Shape inference at concrete dims: ONNX Runtime's symbolic engine first, onnx's own where it gives up.

Symbolic shape inference of torch-exported ``Shape -> Gather -> Concat -> Reshape`` chains fails, so the
analysis never infers with symbolic dims: it sets every input dim to a number and infers once per point.
ONNX Runtime's symbolic shape inference follows shape arithmetic and ``Slice``; onnx's
``infer_shapes(data_prop=True)`` fills in where it gives up (custom ops, opset < 7). Where both engines
know a shape, the symbolic one wins. The models given here are light copies without the big weights
(:class:`~accel_node.models.analysis.graph.PreparedModel` builds them), so each run copies no weights.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from accel_node.models.errors import AnalysisError

ShapeMap = dict[str, tuple[int, ...]]


def infer_shapes(
    model: onnx.ModelProto, known_shapes: Mapping[str, tuple[int, ...]], known_types: Mapping[str, int]
) -> tuple[ShapeMap, dict[str, int], str]:
    """Shapes (fully known ones only) and element types of every tensor of ``model``, whose inputs must
    have concrete dims, starting from ``known_shapes``/``known_types`` (the initializers'); and which
    engines resolved them (``onnxruntime-symbolic``, ``onnx`` or both, joined by ``+``)."""
    shapes: ShapeMap = dict(known_shapes)
    dtypes: dict[str, int] = dict(known_types)
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
