"""The balance solver on small hand-made figures (no ONNX): known optima, lexicographic ties, stages that
must hold real work, memory caps that force a cut, and infeasible caps; checked against brute force."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from accel_node.shard.balance import balance, bottleneck, objective
from accel_node.shard.errors import PartitionError
from accel_node.shard.limits import MAX_STAGES


def prefix_of(flops: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(flops, initial=0.0))


def memory_of(sizes: Sequence[int]) -> Callable[[int], list[int]]:
    """Memory of [start, end) as the sum of per-node sizes, for every end after start."""
    return lambda start: list(itertools.accumulate(sizes[start:]))


def brute_force(
    flops: Sequence[float],
    positions: Sequence[int],
    weights: Sequence[float],
    sizes: Sequence[int],
    caps: Sequence[int] | None,
) -> tuple[tuple[int, ...], float]:
    """The lexicographically smallest optimal cuts by enumeration (combinations come in that order)."""
    prefix, n = prefix_of(flops), len(flops)
    best: tuple[tuple[int, ...], float] = ((), math.inf)
    for cuts in itertools.combinations(positions, len(weights) - 1):
        bounds = [0, *cuts, n]
        stages = itertools.pairwise(bounds)
        if caps is not None and any(sum(sizes[a:b]) > cap for (a, b), cap in zip(stages, caps, strict=True)):
            continue
        value = objective(prefix, cuts, weights)
        if value < best[1]:
            best = (tuple(cuts), value)
    return best


def test_equal_weights_cut_in_the_middle() -> None:
    assert balance(prefix_of([1, 1, 1, 1]), [1, 2, 3], 2) == ((2,), 2.0)
    assert balance(prefix_of([1] * 6), [1, 2, 3, 4, 5], 3) == ((2, 4), 2.0)


def test_weights_shift_the_cut_towards_the_slower_peer() -> None:
    # 8 equal nodes, the second peer 3x faster: 2 nodes for the first, 6 for the second
    assert balance(prefix_of([1] * 8), range(1, 8), 2, [1, 3]) == ((2,), 2.0)


def test_only_the_given_positions_are_cut() -> None:
    assert balance(prefix_of([1] * 8), [1, 6], 2) == ((6,), 6.0)


def test_ties_go_to_the_smallest_cuts() -> None:
    assert balance(prefix_of([2, 0, 0, 2]), [1, 2, 3], 2) == ((1,), 2.0)


def test_a_stage_must_hold_a_real_node() -> None:
    # node 0 is a hoisted constant (not real): a stage of it alone is not allowed
    flops, real = prefix_of([3, 0, 0]), [0, 0, 1, 2]
    assert balance(flops, [1, 2], 2) == ((1,), 3.0)
    assert balance(flops, [1, 2], 2, real=real) == ((2,), 3.0)


def test_one_stage_needs_no_cut() -> None:
    assert balance(prefix_of([1, 2, 3]), [1, 2], 1) == ((), 6.0)


def test_memory_caps_force_a_cut() -> None:
    flops, sizes = [1] * 6, [10, 10, 10, 10, 1, 1]
    assert balance(prefix_of(flops), range(1, 6), 2) == ((3,), 3.0)
    capped = balance(prefix_of(flops), range(1, 6), 2, memory_caps=[25, 100], memory=memory_of(sizes))
    assert capped == ((2,), 4.0)
    # a cap on the second stage pushes the cut the other way
    capped = balance(prefix_of(flops), range(1, 6), 2, memory_caps=[100, 11], memory=memory_of(sizes))
    assert capped == ((4,), 4.0)


def test_infeasible_caps_say_the_smallest_cap_that_fits() -> None:
    sizes = [10, 10, 10, 10, 1, 1]
    prefix, memory = prefix_of([1] * 6), memory_of(sizes)
    # every split leaves a stage of at least 22 bytes ([10, 10] | [10, 10, 1, 1])
    smallest = min(max(sum(sizes[:c]), sum(sizes[c:])) for c in range(1, 6))
    assert smallest == 22
    expected = f"fits the memory caps \\[5, 5\\] bytes at dims x; the smallest cap .* is {smallest} bytes"
    with pytest.raises(PartitionError, match=expected):
        balance(prefix, range(1, 6), 2, memory_caps=[5, 5], memory=memory, where=" at dims x")
    assert balance(prefix, range(1, 6), 2, memory_caps=[smallest] * 2, memory=memory) == ((2,), 4.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stages": 3, "positions": [2]}, "1 candidate cut point"),
        ({"stages": 0}, "integer from 1"),
        ({"stages": MAX_STAGES + 1}, "integer from 1"),
        ({"stages": True}, "integer from 1"),
        ({"stages": 2, "weights": [1.0]}, "1 weights given for 2 stages"),
        ({"stages": 2, "weights": [1.0, 0.0]}, "finite and positive"),
        ({"stages": 2, "weights": [1.0, math.nan]}, "finite and positive"),
        ({"stages": 2, "memory_caps": [10]}, "1 memory caps given"),
        ({"stages": 2, "memory_caps": [10, 0]}, "positive integers"),
        ({"stages": 2, "memory_caps": [10, 1.5]}, "positive integers"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"positions": [1, 2, 3], "memory": memory_of([1, 1, 1, 1]), **kwargs}
    with pytest.raises(PartitionError, match=match):
        balance(prefix_of([1, 1, 1, 1]), **args)  # type: ignore[arg-type]


def test_caps_without_a_memory_function_are_a_programming_error() -> None:
    with pytest.raises(TypeError):
        balance(prefix_of([1, 1]), [1], 2, memory_caps=[1, 1])


@pytest.mark.parametrize("seed", range(40))
def test_the_optimum_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(2, 9)
    flops = [float(rng.choice([0, 1, 2, 3, 5, 8])) for _ in range(n)]
    positions = sorted(rng.sample(range(1, n), rng.randint(1, n - 1)))
    stages = rng.randint(1, len(positions) + 1)
    weights = [float(rng.randint(1, 4)) for _ in range(stages)]
    sizes = [rng.randint(1, 20) for _ in range(n)]
    caps = [rng.randint(10, 60) for _ in range(stages)] if seed % 2 else None
    expected = brute_force(flops, positions, weights, sizes, caps)
    if expected[1] == math.inf:
        with pytest.raises(PartitionError, match="smallest cap"):
            balance(prefix_of(flops), positions, stages, weights, memory_caps=caps, memory=memory_of(sizes))
        return
    got = balance(prefix_of(flops), positions, stages, weights, memory_caps=caps, memory=memory_of(sizes))
    assert got[0] == expected[0]
    assert got[1] == pytest.approx(expected[1])


def test_bottleneck_on_explicit_edge_costs() -> None:
    """Three indices, two stages: the only cut is index 1; costs per (start, stage) are read as given."""
    table = {(0, 0): [5.0, 9.0], (1, 1): [4.0], (0, 1): [7.0, 7.0]}
    cuts, optimum = bottleneck(3, 2, lambda a, i: np.array(table[(a, i)]))
    assert (cuts, optimum) == ([1], 5.0)
