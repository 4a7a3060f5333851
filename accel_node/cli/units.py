"""Figures for people: units and a sensible precision, never a raw float.

Every number the CLI shows goes through one of these, so ``134.62658473049643`` reads
``134.6 GFLOP/s`` everywhere: four significant digits (enough to compare two machines, few enough
to read), thousands separators for large values, sizes in binary units (KiB, MiB, GiB: what memory
and files are counted in) and durations in µs, ms, s or min as fits. A missing figure is ``-``.
"""

from __future__ import annotations

import math
import time

MISSING = "-"
_BINARY_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
_SI_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def fmt_number(value: float | None, digits: int = 4) -> str:
    """``value`` to ``digits`` significant digits (at least all of its integer part)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_rate(value: float | None, unit: str) -> str:
    """A measured figure with its unit: ``fmt_rate(134.62658, "GFLOP/s") == "134.6 GFLOP/s"``."""
    return MISSING if value is None else f"{fmt_number(value)} {unit}"


def fmt_bytes(count: float | None) -> str:
    """A size in bytes, KiB, MiB, GiB or TiB (1 KiB = 1024 bytes)."""
    if count is None:
        return MISSING
    if abs(count) < 1024:
        return f"{count:.0f} B"
    value = float(count)
    for unit in _BINARY_UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == _BINARY_UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def fmt_gb(gigabytes: float | None) -> str:
    """A size given in GB (1e9 bytes, as hardware summaries count) shown in binary units."""
    return MISSING if gigabytes is None else fmt_bytes(gigabytes * 1e9)


def fmt_duration(seconds: float | None) -> str:
    """A duration in µs, ms, s, or minutes and seconds."""
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    if seconds < 1e-3:
        return f"{fmt_number(seconds * 1e6, 3)} µs"
    if seconds < 1:
        return f"{fmt_number(seconds * 1e3, 3)} ms"
    if seconds < 60:
        return f"{fmt_number(seconds, 3)} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def fmt_ms(milliseconds: float | None) -> str:
    return MISSING if milliseconds is None else fmt_duration(milliseconds / 1e3)


def fmt_count(value: float | None, unit: str = "") -> str:
    """A large count with an SI prefix: ``fmt_count(2.5e9, "FLOP") == "2.5 GFLOP"``."""
    if value is None:
        return MISSING
    for scale, prefix in _SI_PREFIXES:
        if abs(value) >= scale:
            return f"{fmt_number(value / scale)} {prefix}{unit}".rstrip()
    return f"{fmt_number(value)} {unit}".rstrip()


def fmt_percent(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{fraction:.0%}" if fraction >= 0.1 else f"{fraction:.1%}"


def fmt_age(timestamp: float | None, now: float | None = None) -> str:
    """How long ago a unix time was: ``12 s ago``."""
    if timestamp is None:
        return MISSING
    return f"{fmt_duration(max(0.0, (time.time() if now is None else now) - timestamp))} ago"
