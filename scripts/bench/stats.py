"""Statistics of benchmark samples: medians, percentiles, latency summaries, CV and ratios.

Benchmarks on a shared machine report medians (robust to the odd slow run) and percentiles of
sorted samples; NaN marks a figure that could not be measured and is left out, not averaged in.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def median(values: Iterable[float]) -> float:
    """The median of the finite values; NaN when there are none."""
    finite = [v for v in values if v == v]  # drop NaN
    return statistics.median(finite) if finite else float("nan")


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return float("nan")
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize_ms(values_ms: list[float]) -> dict[str, float]:
    """n, p50/p90/p99, mean, min and max of latencies already in milliseconds."""
    s = sorted(values_ms)
    return {
        "n": len(s),
        "p50_ms": percentile(s, 0.50),
        "p90_ms": percentile(s, 0.90),
        "p99_ms": percentile(s, 0.99),
        "mean_ms": statistics.fmean(s) if s else float("nan"),
        "min_ms": s[0] if s else float("nan"),
        "max_ms": s[-1] if s else float("nan"),
    }


def latency_ms(latencies_s: list[float]) -> dict[str, float]:
    """n, p50, p99 and mean in milliseconds of latencies in seconds."""
    ordered = sorted(latencies_s)
    return {
        "n": len(ordered),
        "p50_ms": percentile(ordered, 0.5) * 1e3,
        "p99_ms": percentile(ordered, 0.99) * 1e3,
        "mean_ms": statistics.fmean(ordered) * 1e3 if ordered else float("nan"),
    }


def cv(values: list[float]) -> float | None:
    """Coefficient of variation (sample stdev / mean); None for fewer than two values."""
    return statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else None


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN where the denominator is zero or not a number."""
    if denominator == 0 or math.isnan(denominator):
        return float("nan")
    return numerator / denominator
