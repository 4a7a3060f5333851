"""Per-operator FLOPs rules, at concrete shapes (a multiply-add counts 2).

- ``MatMul``/``MatMulInteger``/``QLinearMatMul``: ``2 * K * numel(Y)`` with ``K`` the reduced dim. A MatMul
  (or Einsum) whose inputs are all activations (no input derives from initializers/constants only), such as
  ``Q @ K^T`` and ``probs @ V``, is reported under ``"attention"`` instead of its op type (the prepared
  model's ``node_keys`` say which).
- ``Gemm``: ``2 * M * N * K`` plus ``M * N`` when it has a bias ``C``.
- ``Conv``/``ConvInteger``/``QLinearConv``: ``2 * numel(Y) * (C_in / group) * prod(kernel)`` plus
  ``numel(Y)`` with a bias; ``ConvTranspose``: ``2 * numel(X) * (C_out / group) * prod(kernel)`` (+ bias).
- ``Einsum``: ``2 * numel(Y) * prod(contracted dims)``.
- Pools: ``numel(Y) * prod(kernel)``; global pools and ``Reduce*``/``ArgMax``/``ArgMin``: ``numel(X)``.
- Data movement (``Reshape``, ``Transpose``, ``Gather``, ``Concat``, ``Slice``, ``Cast``, ``Shape``, ...):
  0. Every other op: 1 per element of its first output (rough: ``Softmax``/``LayerNormalization`` cost more),
  and 0 when none of its inputs or outputs is floating point (shape arithmetic on int64).
- Control-flow subgraphs (``If``/``Loop``/``Scan``) are not counted inside; the analysis lists them in
  its notes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import onnx

from accel_node.models.analysis.dtypes import FLOAT_TYPES, numel
from accel_node.models.analysis.shapes import ShapeMap

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
KINDS = ("matmul", "attention", "conv", "other")


def kind_of(op: str) -> str:
    """The kind an op type (or ``"attention"``) counts under: one of :data:`KINDS`."""
    return _KINDS.get(op, "other")


def node_flops(node: onnx.NodeProto, shapes: ShapeMap, dtypes: Mapping[str, int]) -> int | None:
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


def _matmul(node: onnx.NodeProto, ins: Sequence[tuple[int, ...] | None], y: tuple[int, ...]) -> int | None:
    a = ins[_MATMULS[node.op_type][0]]
    return None if a is None else 2 * a[-1] * numel(y)


def _gemm(node: onnx.NodeProto, ins: Sequence[tuple[int, ...] | None], y: tuple[int, ...]) -> int | None:
    a = ins[0]
    if a is None:
        return None
    k = a[0] if _attr(node, "transA", 0) else a[-1]
    return 2 * k * numel(y) + (numel(y) if len(node.input) > 2 and node.input[2] else 0)


def _conv(node: onnx.NodeProto, ins: Sequence[tuple[int, ...] | None], y: tuple[int, ...]) -> int | None:
    w_index, b_index = _CONVS.get(node.op_type, (1, 2))
    x, w = ins[0], ins[w_index]
    if w is None or x is None:
        return None
    macs = numel(x if node.op_type == "ConvTranspose" else y) * numel(w[1:])
    has_bias = b_index is not None and b_index < len(node.input) and bool(node.input[b_index])
    return 2 * macs + (numel(y) if has_bias else 0)


def _einsum(node: onnx.NodeProto, ins: Sequence[tuple[int, ...] | None], y: tuple[int, ...]) -> int | None:
    known = [s for s in ins if s is not None]
    if len(known) != len(ins):
        return None
    equation = _attr(node, "equation", b"")
    text = equation.decode() if isinstance(equation, bytes) else str(equation)
    contracted = _einsum_contracted(text, known)
    if contracted is None:
        return None
    return 2 * numel(y) * contracted if contracted > 1 else numel(y)


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
        return None if x is None else numel(x)
    y = shapes.get(node.output[0]) if node.output else None
    if y is None:
        return None
    if op in _POOLS:
        return numel(y) * numel(_attr(node, "kernel_shape", []) or [1])
    return numel(y)
