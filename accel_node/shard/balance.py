"""The balance solver: which cuts split a chain of nodes best for peers of given speeds and memory.

Among the allowed cut positions, the ``stages - 1`` cuts minimise ``max_i(flops_i / weights[i])`` (exact
dynamic programming over the positions) subject to ``memory_i <= memory_caps[i]``; among equal optima the
lexicographically smallest cut positions win. A stage must hold at least one *real* node (``real``
counts them: constants hoisted into every stage that reads them are not real).

Pure functions on numbers (prefix sums of FLOPs, node counts, a memory function): nothing here knows about
ONNX, so the solver is tested on small hand-made vectors. The partitioner feeds it a model's figures
(:meth:`accel_node.shard.profile.GraphProfile.balance`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from accel_node.shard.errors import PartitionError
from accel_node.shard.limits import MAX_STAGES

Costs = npt.NDArray[np.float64]
Edges = Callable[[int, int], Costs]
Memory = Callable[[int], Sequence[float] | Costs]
"""``memory(start)[k]``: the memory (bytes) of the stage running nodes [start, start + 1 + k), for every
end from start + 1 to n."""


def check_weights(stages: int, weights: Sequence[float] | None) -> tuple[float, ...]:
    """Validated weights for ``stages`` stages (all 1 when None)."""
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


def check_caps(stages: int, memory_caps: Sequence[int] | None) -> tuple[int, ...] | None:
    """Validated memory caps (bytes) for ``stages`` stages, or None for no caps."""
    if memory_caps is None:
        return None
    if len(memory_caps) != stages:
        raise PartitionError(f"{len(memory_caps)} memory caps given for {stages} stages")
    if any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in memory_caps):
        raise PartitionError(f"memory caps must be positive integers (bytes), not {list(memory_caps)}")
    return tuple(memory_caps)


def objective(prefix: Sequence[float], cuts: Sequence[int], weights: Sequence[float]) -> float:
    """``max_i(flops_i / weights[i])`` of the stages ``cuts`` make, ``prefix[p]`` being the FLOPs of the
    nodes before position ``p`` (``len(prefix) == n + 1``)."""
    bounds = [0, *cuts, len(prefix) - 1]
    return max((prefix[b] - prefix[a]) / w for (a, b), w in zip(pairwise(bounds), weights, strict=True))


def balance(
    prefix: Sequence[float],
    positions: Sequence[int],
    stages: int,
    weights: Sequence[float] | None = None,
    *,
    memory_caps: Sequence[int] | None = None,
    memory: Memory | None = None,
    real: Sequence[int] | None = None,
    where: str = "",
) -> tuple[tuple[int, ...], float]:
    """The optimal ``stages - 1`` cuts among ``positions`` (increasing, within (0, n)) and their objective.

    ``prefix[p]`` is the FLOPs of the nodes before position ``p`` (n + 1 values); ``real[p]`` the number of
    real nodes before ``p`` (default ``p``: every node is real); ``memory`` gives stage memory for the caps
    (required with them). Raises :class:`PartitionError` for bad arguments, too few positions, or caps no
    split fits (saying which cap would; ``where`` is appended to the figures in that message, e.g. the dims).
    """
    w, caps = check_weights(stages, weights), check_caps(stages, memory_caps)
    if len(positions) + 1 < stages:
        raise PartitionError(
            f"the model has {len(positions)} candidate cut point(s); it cannot be split into {stages} stages"
        )
    if caps is not None and memory is None:
        raise TypeError("memory caps need a memory function")
    n = len(prefix) - 1
    q = np.array([0, *positions, n], dtype=np.int64)
    flops = np.asarray(prefix, dtype=np.float64)[q]
    counts = (np.arange(n + 1, dtype=np.int64) if real is None else np.asarray(real, dtype=np.int64))[q]
    totals = None if memory is None else _cached(memory)

    def edges(a: int, i: int) -> Costs:
        costs: Costs = (flops[a + 1 :] - flops[a]) / w[i]
        costs[counts[a + 1 :] <= counts[a]] = np.inf
        if caps is not None and totals is not None:
            costs[totals(int(q[a]))[q[a + 1 :] - q[a] - 1] > caps[i]] = np.inf
        return costs

    cuts, optimum = bottleneck(len(q), stages, edges)
    if optimum == math.inf:
        assert caps is not None and totals is not None  # without caps any stages-1 positions make a split
        needed = _smallest_cap(q, counts, stages, totals)
        raise PartitionError(
            f"no split of the model into {stages} stages fits the memory caps {list(caps)} bytes{where}; "
            f"the smallest cap that works for every peer is {needed} bytes"
        )
    return tuple(int(q[c]) for c in cuts), optimum


def _cached(memory: Memory) -> Callable[[int], Costs]:
    @functools.cache
    def totals(start: int) -> Costs:
        return np.asarray(memory(start), dtype=np.float64)

    return totals


def _smallest_cap(q: npt.NDArray[np.int64], counts: npt.NDArray[np.int64], stages: int,
                  totals: Callable[[int], Costs]) -> int:  # fmt: skip
    """The smallest cap that, given to every stage, lets some split fit."""

    def memory_edges(a: int, _i: int) -> Costs:
        costs: Costs = totals(int(q[a]))[q[a + 1 :] - q[a] - 1].copy()
        costs[counts[a + 1 :] <= counts[a]] = np.inf
        return costs

    return int(bottleneck(len(q), stages, memory_edges)[1])


def bottleneck(count: int, stages: int, edges: Edges) -> tuple[list[int], float]:
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
