"""The whole-model analysis: :func:`analyse` and what it returns, :class:`ModelAnalysis`.

Every figure is computed at concrete dims (the requested ones), and its polynomial in the dim names is
recovered from samples (:mod:`~accel_node.models.analysis.poly`) and checked against the direct figures at
the requested point; sizes that are not polynomial show up as ``polynomial_exact = False``. Parameters are
every initializer (``by_dtype`` tells float weights from int64 constants); activations are as
:mod:`~accel_node.models.analysis.memory` counts them; FLOPs as :mod:`~accel_node.models.analysis.flops`
counts them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import onnx

from accel_node.models.analysis.costs import CostPoint, evaluate
from accel_node.models.analysis.flops import KINDS, kind_of
from accel_node.models.analysis.graph import PreparedModel, load_model, prepare_model, resolve_dims
from accel_node.models.analysis.memory import SCHEDULE, peak_bytes, sum_bytes
from accel_node.models.analysis.poly import (
    SAMPLE_STEP,
    Polynomial,
    evaluate_poly,
    interpolate,
    number,
    sum_polys,
    term_text,
)
from accel_node.models.manifest import TensorSpec


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
        kinds = dict.fromkeys(KINDS, 0.0)
        for op, value in self.flops_by_op.items():
            kinds[kind_of(op)] += value
        return kinds

    def poly_text(self, poly: Polynomial) -> dict[str, int | float]:
        """A polynomial as ``{"batch*seq^2": 8192, "1": 10}`` (integer coefficients stay integers)."""
        return {term_text(self.dims, exps): number(coeff) for exps, coeff in sorted(poly.items())}

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
                "schedule": SCHEDULE,
            },
            "shape_inference": self.shape_inference,
            "unresolved_nodes": list(self.unresolved_nodes),
            "notes": list(self.notes),
        }


def _quantities(prep: PreparedModel, point: CostPoint) -> dict[str, int]:
    """The figures that get polynomials: FLOPs per op key and the activation sum."""
    q: Counter[str] = Counter()
    for key, f in zip(prep.node_keys, point.flops, strict=True):
        if f:
            q[f"flops:{key}"] += f
    q["activation_sum"] = sum_bytes(point)
    return dict(q)


def _polynomials(prep: PreparedModel, notes: list[str]) -> tuple[dict[str, Polynomial] | None, bool]:
    names = prep.dim_names

    def sample(point: tuple[int, ...]) -> dict[str, int]:
        return _quantities(prep, evaluate(prep, dict(zip(names, point, strict=True))))

    return interpolate(names, sample, notes)


def analyse(path_or_model: str | os.PathLike[str] | onnx.ModelProto,
            dims: Mapping[str, int] | None = None) -> ModelAnalysis:  # fmt: skip
    """Analyse an ONNX model: a path (read without external data) or a ModelProto (not modified).

    ``dims`` gives values for the symbolic input dims (:func:`resolve_dims` fills in the rest). Raises
    :class:`~accel_node.models.errors.AnalysisError` for unreadable or unsupported models and for unknown
    or invalid dims. CPU-bound (tens of shape inferences): call it off the event loop.
    """
    if isinstance(path_or_model, onnx.ModelProto):
        model, base_dir = path_or_model, None
    else:
        model, base_dir = load_model(path_or_model), Path(path_or_model).parent
    prep = prepare_model(model, base_dir)
    values = resolve_dims(prep.dim_names, dims)
    notes = list(prep.notes)
    point = evaluate(prep, values)
    direct = _quantities(prep, point)
    polys: dict[str, Polynomial] | None
    if prep.dim_names:
        polys, exact = _polynomials(prep, notes)
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
        flops_poly = sum_polys(flops_by_op_poly.values())
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
        activation_peak_bytes=peak_bytes(prep, point),
        activation_sum_bytes=sum_bytes(point),
        activation_sum_poly=act_poly,
        shape_inference=point.engine,
        unresolved_nodes=unresolved,
        notes=tuple(dict.fromkeys(notes)),
    )
