"""Polynomials in the symbolic dims: evaluation, text form, and exact recovery from samples.

Figures that depend on the dims (FLOPs, activation bytes) are computed exactly at concrete points; their
polynomial in the dim names is recovered by exact interpolation: the degree in each dim is found from
finite differences along that dim (at most :data:`MAX_DEGREE`), then a tensor-product grid of that degree
is solved exactly (fractions). The caller checks the polynomial against the direct figures at the requested
point: sizes that are not polynomial (``floor(h / 2)`` of a pooled dynamic image size) fail that check.
Sample points are multiples of :data:`SAMPLE_STEP` up to ``SAMPLE_STEP * (MAX_DEGREE + 2)`` (80), so that
strides up to 16 divide exactly there.

Pure arithmetic on :class:`fractions.Fraction`: nothing here knows about ONNX.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from itertools import pairwise, product

SAMPLE_STEP = 16
MAX_DEGREE = 3
MAX_GRID_POINTS = 256

Polynomial = dict[tuple[int, ...], Fraction]  # exponents (one per dim, in the dims' order) -> coefficient
Sampler = Callable[[tuple[int, ...]], dict[str, int]]  # a point (one value per dim) -> named quantities


def evaluate_poly(poly: Polynomial, values: Sequence[int]) -> Fraction:
    """Value of ``poly`` with the dims set to ``values`` (in the analysis' dims order)."""
    total = Fraction(0)
    for exps, coeff in poly.items():
        total += coeff * math.prod(v**e for v, e in zip(values, exps, strict=True))
    return total


def term_text(names: Sequence[str], exps: Sequence[int]) -> str:
    """One monomial as text: ``batch*seq^2``; the constant term is ``1``."""
    parts = [name if e == 1 else f"{name}^{e}" for name, e in zip(names, exps, strict=True) if e]
    return "*".join(parts) or "1"


def number(value: Fraction) -> int | float:
    """A coefficient for JSON: integers stay integers."""
    return int(value) if value.denominator == 1 else float(value)


def sum_polys(polys: Iterable[Polynomial]) -> Polynomial:
    """The sum of ``polys`` (zero terms dropped)."""
    total: dict[tuple[int, ...], Fraction] = {}
    for poly in polys:
        for exps, coeff in poly.items():
            total[exps] = total.get(exps, Fraction(0)) + coeff
    return {exps: c for exps, c in total.items() if c != 0}


def degree(seq: Sequence[int]) -> int:
    """Degree of the lowest polynomial through equally spaced samples (at most len(seq) - 1)."""
    found, diffs = 0, list(seq)
    for k in range(1, len(seq)):
        diffs = [b - a for a, b in pairwise(diffs)]
        if any(diffs):
            found = k
    return found


def solve_vandermonde(xs: Sequence[int], ys: Sequence[Fraction]) -> list[Fraction]:
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


def interpolate(
    names: Sequence[str], sample: Sampler, notes: list[str]
) -> tuple[dict[str, Polynomial] | None, bool]:
    """Polynomials in ``names`` of every quantity ``sample`` returns, and whether every degree was within
    :data:`MAX_DEGREE`; None when the grid would exceed :data:`MAX_GRID_POINTS`. Each point is sampled
    once; ``notes`` receives the reasons a polynomial is inexact or missing."""
    cache: dict[tuple[int, ...], dict[str, int]] = {}

    def at(point: tuple[int, ...]) -> dict[str, int]:
        if point not in cache:
            cache[point] = sample(point)
        return cache[point]

    base = tuple(SAMPLE_STEP for _ in names)
    degrees, exact = [], True
    for i, name in enumerate(names):
        line = [at((*base[:i], SAMPLE_STEP * (j + 1), *base[i + 1 :])) for j in range(MAX_DEGREE + 2)]
        keys: set[str] = set().union(*line)
        found = max((degree([s.get(k, 0) for s in line]) for k in keys), default=0)
        if found > MAX_DEGREE:
            exact = False
            notes.append(f"figures grow faster than {name}^{MAX_DEGREE}: the polynomial is not exact")
            found = MAX_DEGREE
        degrees.append(found)
    grid_size = math.prod(d + 1 for d in degrees)
    if grid_size > MAX_GRID_POINTS:
        notes.append(
            f"{len(names)} symbolic dims would need {grid_size} sample points: no polynomial computed"
        )
        return None, False
    grid = list(product(*(range(d + 1) for d in degrees)))
    samples = {idx: at(tuple(SAMPLE_STEP * (j + 1) for j in idx)) for idx in grid}
    polys: dict[str, Polynomial] = {}
    for key in sorted(set().union(*samples.values())):
        table = {idx: Fraction(samples[idx].get(key, 0)) for idx in grid}
        for axis, deg in enumerate(degrees):  # tensor-product solve, one axis at a time
            xs = [SAMPLE_STEP * (j + 1) for j in range(deg + 1)]
            for rest in {idx[:axis] + idx[axis + 1 :] for idx in grid}:
                line_idx = [(*rest[:axis], j, *rest[axis:]) for j in range(deg + 1)]
                table.update(zip(line_idx, solve_vandermonde(xs, [table[i] for i in line_idx]), strict=True))
        polys[key] = {exps: c for exps, c in table.items() if c != 0}
    return polys, exact
