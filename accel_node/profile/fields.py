"""Strict readers for decoded JSON objects, used by the profile model's ``from_dict`` methods."""

from __future__ import annotations

import math
from typing import cast


class Fields:
    """Typed, strict access to a decoded JSON object: exact key set, no bool-for-int, finite floats."""

    def __init__(self, data: object, what: str, keys: set[str]) -> None:
        if not isinstance(data, dict):
            raise ValueError(f"{what}: expected an object, got {type(data).__name__}")
        missing = keys - data.keys()
        extra = data.keys() - keys
        if missing or extra:
            raise ValueError(
                f"{what}: missing keys {sorted(missing)}, unknown keys {sorted(map(str, extra))}"
            )
        self.data: dict[str, object] = data
        self.what = what

    def _fail(self, key: str, expected: str) -> ValueError:
        return ValueError(f"{self.what}.{key}: expected {expected}, got {self.data[key]!r}")

    def text(self, key: str) -> str:
        value = self.data[key]
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def opt_text(self, key: str) -> str | None:
        return None if self.data[key] is None else self.text(key)

    def integer(self, key: str, minimum: int = 0) -> int:
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._fail(key, f"an integer >= {minimum}")
        return value

    def number(self, key: str) -> float:
        return as_float(self.data[key], f"{self.what}.{key}")

    def opt_number(self, key: str) -> float | None:
        return None if self.data[key] is None else self.number(key)

    def items(self, key: str) -> list[object]:
        value = self.data[key]
        if not isinstance(value, list):
            raise self._fail(key, "a list")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        items = self.items(key)
        if not all(isinstance(item, str) for item in items):
            raise self._fail(key, "a list of strings")
        return tuple(cast(list[str], items))


def as_float(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)
