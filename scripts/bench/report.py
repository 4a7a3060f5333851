"""Printing results: tables of figures with target and verdict, and figures against a baseline.

Every benchmark prints one table a person can read (aligned columns) or paste into
``docs/BENCHMARKS.md`` (``--markdown``: the same rows as markdown), then, with ``--json``, one JSON
document on the last line for machines.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

Row = Sequence[str]


def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def verdict(value: float, target: float | None) -> str:
    """`` (target >= T): ok`` or ``BELOW TARGET``; nothing when there is no target."""
    if target is None:
        return ""
    return f" (target >= {target}): " + ("ok" if value >= target else "BELOW TARGET")


def table(headers: Row, rows: Sequence[Row]) -> list[str]:
    """Aligned columns under a header and a rule."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers).rstrip(), "  ".join("-" * w for w in widths)]
    lines.extend(fmt.format(*r).rstrip() for r in rows)
    return lines


def markdown(headers: Row, rows: Sequence[Row]) -> list[str]:
    """The same rows as a markdown table (``|`` in a cell is escaped)."""

    def line(cells: Row) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(headers), line(["---"] * len(headers)), *(line(r) for r in rows)]


def render_table(headers: Row, rows: Sequence[Row], *, as_markdown: bool = False) -> list[str]:
    return markdown(headers, rows) if as_markdown else table(headers, rows)


def rates_vs_baseline(
    mib: float | Mapping[str, float], times: Mapping[str, list[float]], base: float, base_name: str
) -> dict[str, Any]:
    """Print and return each method's median time, best time, MiB/s and ratio of its rate to
    ``base`` (the baseline's MiB/s, named ``base_name`` in the header)."""
    results = {}
    print(f"{'method':<18} {'median s':>9} {'min s':>8} {'MiB/s':>8} {'ratio':>6}   (ratio: vs {base_name})")
    for name, samples in times.items():
        if not samples:
            continue
        median = statistics.median(samples)
        size = mib[name] if isinstance(mib, Mapping) else mib
        results[name] = {
            "mib": size,
            "median_s": round(median, 4),
            "min_s": round(min(samples), 4),
            "samples_s": [round(s, 4) for s in samples],
            "mib_per_s": round(size / median, 1),
            "ratio": round((size / median) / base, 3),
        }
        row = results[name]
        print(f"{name:<18} {median:>9.4f} {min(samples):>8.4f} {row['mib_per_s']:>8.1f} {row['ratio']:>6.3f}")
    return results
