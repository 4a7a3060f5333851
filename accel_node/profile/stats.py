"""Small statistics and timing helpers shared by every measurement.

Timing policy (same for every CPU figure): one warm-up call (page faults, lazy initialisation,
thread-pool start-up), one calibration call that decides how many calls make up a sample so that a
sample lasts at least ``min_sample_s`` (a single short call is dominated by timer and scheduling
noise), then ``repeats`` timed samples. Each sample is reported as seconds per call.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


def median(samples: Sequence[float]) -> float:
    """The median of ``samples`` (which must not be empty)."""
    if not samples:
        raise ValueError("median of no samples")
    return float(statistics.median(samples))


def cv(samples: Sequence[float]) -> float:
    """Coefficient of variation: sample standard deviation divided by the mean.

    One sample has no spread to speak of, so its CV is 0.0; a zero mean has no defined CV.
    """
    if not samples:
        raise ValueError("cv of no samples")
    if len(samples) == 1:
        return 0.0
    mean = statistics.fmean(samples)
    if mean == 0:
        raise ValueError("cv of samples with zero mean")
    return float(statistics.stdev(samples) / abs(mean))


def all_finite_positive(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) and v > 0 for v in values)


class SampleHook(Protocol):
    """Something read right before and right after each timed sample (e.g. an energy counter)."""

    def begin(self) -> None: ...

    def end(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class Timing:
    """Seconds per call for each timed sample, and how many calls each sample made."""

    seconds_per_call: list[float]
    calls_per_sample: int


def time_calls(
    fn: Callable[[], object],
    *,
    repeats: int,
    min_sample_s: float,
    hook: SampleHook | None = None,
    max_calls_per_sample: int = 1_000_000,
) -> Timing:
    """Time ``fn``: warm up, calibrate, then ``repeats`` samples of at least ``min_sample_s`` each."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    fn()  # warm-up
    start = time.perf_counter()
    fn()  # calibration
    one_call = max(time.perf_counter() - start, 1e-9)
    calls = max(1, min(max_calls_per_sample, math.ceil(min_sample_s / one_call)))
    seconds: list[float] = []
    for _ in range(repeats):
        if hook is not None:
            hook.begin()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if hook is not None:
            hook.end(elapsed)
        seconds.append(elapsed / calls)
    return Timing(seconds, calls)


def rates(work_per_call: float, timing: Timing) -> list[float]:
    """Convert seconds per call into work per second (e.g. flop/s) for each sample."""
    return [work_per_call / s for s in timing.seconds_per_call]
