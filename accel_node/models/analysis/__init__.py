"""Static analysis of an ONNX model: parameters, FLOPs, activation memory, operators, I/O signature.

Every figure is computed at concrete values of the model's symbolic input dims, by shape inference on a
copy of the graph without the weights, and its polynomial in the dim names is recovered by exact
interpolation. What lives where (each module's docstring has the details):

- ``dtypes``: ONNX element types, their names and byte sizes.
- ``graph``: loading and checking models, symbolic dims and their defaults, subgraph scopes, and
  :class:`PreparedModel` (one model read once, shapes at any dims); shared with the shard partitioner.
- ``shapes``: the shape-inference engines (ONNX Runtime's symbolic one, onnx's own as fallback).
- ``flops``: the per-operator FLOPs rules.
- ``costs``: per-node costs at one assignment of the dims (:func:`node_costs`, for partitioning).
- ``memory``: activation memory (peak of live tensors, total of node outputs).
- ``poly``: polynomials in the dims: evaluation, text form, exact interpolation from samples.
- ``report``: :func:`analyse` and :class:`ModelAnalysis`, the whole-model report the API serves.

:class:`AnalysisError` lives in :mod:`accel_node.models.errors` with the package's other errors.
"""

from accel_node.models.analysis.costs import NodeCost, node_costs
from accel_node.models.analysis.dtypes import FLOAT_TYPES, dtype_name, tensor_bytes
from accel_node.models.analysis.graph import (
    SEQ_DEFAULT,
    PreparedModel,
    load_model,
    outer_names,
    prepare_model,
    resolve_dims,
    subgraphs,
)
from accel_node.models.analysis.poly import (
    MAX_DEGREE,
    MAX_GRID_POINTS,
    SAMPLE_STEP,
    Polynomial,
    evaluate_poly,
)
from accel_node.models.analysis.report import ModelAnalysis, analyse
from accel_node.models.analysis.shapes import ShapeMap
from accel_node.models.errors import AnalysisError

__all__ = [
    "FLOAT_TYPES",
    "MAX_DEGREE",
    "MAX_GRID_POINTS",
    "SAMPLE_STEP",
    "SEQ_DEFAULT",
    "AnalysisError",
    "ModelAnalysis",
    "NodeCost",
    "Polynomial",
    "PreparedModel",
    "ShapeMap",
    "analyse",
    "dtype_name",
    "evaluate_poly",
    "load_model",
    "node_costs",
    "outer_names",
    "prepare_model",
    "resolve_dims",
    "subgraphs",
    "tensor_bytes",
]
