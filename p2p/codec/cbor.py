"""A bounded CBOR reader and one typed field-getter style for the maps it returns.

Every CBOR message on our wires is decoded the same way: the size bound is checked before cbor2
sees a byte, any decoder failure becomes one error, the top-level type is checked, and fields are
read through :class:`CborMap`, whose getters check type *and* bounds in one call::

    fields = load_map(raw, max_bytes=MAX_MANIFEST, what="manifest", error=ManifestError)
    name = fields.text("name", max_len=128)
    version = fields.integer("version")
    note = fields.text("note", max_len=200, default="")   # optional field

Errors are built by ``error`` (a callable taking the message: an exception class or a function
that adds context, e.g. a request id), so callers keep the error types their own callers expect;
the default is :class:`~p2p.codec.errors.CborError`. Booleans are never integers here (CBOR tells
them apart; Python's ``bool`` subclassing ``int`` must not blur that).

The value checkers (:func:`as_int`, :func:`as_text`, ...) are the same checks for values that are
not map fields (list items, map keys). Error messages never format a peer's value whole: CBOR
integers are unbounded, and ``repr`` of one with more than 4300 digits raises ``ValueError`` (Python's
int-to-text limit) instead of the error the caller expects; :func:`describe` is the safe way to name a
value in a message.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator, Set
from typing import Any, Final, Literal

import cbor2

from p2p.codec.errors import CborError

ErrorFactory = Callable[[str], Exception]
"""Builds the exception to raise from a message (an exception class, usually)."""
MAX_UINT64: Final = (1 << 64) - 1


class _Required(enum.Enum):
    REQUIRED = enum.auto()


REQUIRED: Final = _Required.REQUIRED
"""The default of a getter's ``default``: the field must be present."""
_Req = Literal[_Required.REQUIRED]


def loads_bounded(
    raw: bytes | bytearray | memoryview, *, max_bytes: int, what: str, error: ErrorFactory = CborError
) -> Any:
    """Decode ``raw`` after checking it is bytes of at most ``max_bytes``; one error for any failure."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise error(f"{what} must be bytes")
    if len(raw) > max_bytes:
        raise error(f"{what} is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        return cbor2.loads(raw if isinstance(raw, bytes) else bytes(raw))
    except Exception as exc:  # cbor2 raises several decoder error types (and ValueError, TypeError)
        raise error(f"{what} is not valid CBOR: {exc}") from exc


def load_map(
    raw: bytes | bytearray | memoryview, *, max_bytes: int, what: str, error: ErrorFactory = CborError
) -> CborMap:
    """:func:`loads_bounded`, then check that the top level is a map."""
    return CborMap(loads_bounded(raw, max_bytes=max_bytes, what=what, error=error), what=what, error=error)


def load_list(
    raw: bytes | bytearray | memoryview,
    *,
    max_bytes: int,
    max_len: int,
    what: str,
    error: ErrorFactory = CborError,
) -> list[Any]:
    """:func:`loads_bounded`, then check that the top level is a list of at most ``max_len`` items."""
    return as_list(loads_bounded(raw, max_bytes=max_bytes, what=what, error=error), what, max_len, error)


def describe(value: object, limit: int = 40) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters, for any decoded value: the repr
    of an integer of more than 4300 digits raises ValueError, and a peer can send one (a CBOR bignum)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"  # its repr may be refused, and says nothing
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- value checkers ------------------------------------------------------------------------------------


def as_int(
    value: object,
    what: str,
    *,
    min_value: int = 0,
    max_value: int = MAX_UINT64,
    error: ErrorFactory = CborError,
) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not min_value <= value <= max_value:
        raise error(f"{what} must be an integer from {min_value} to {max_value}")
    return value


def as_number(
    value: object,
    what: str,
    *,
    min_value: float = -math.inf,
    max_abs_int: int = MAX_UINT64,
    error: ErrorFactory = CborError,
) -> float:
    """A finite float (an integer of magnitude up to ``max_abs_int`` counts) of at least ``min_value``."""
    if isinstance(value, bool) or not isinstance(value, float | int):
        raise error(f"{what} must be a number")
    if isinstance(value, int) and abs(value) > max_abs_int:
        raise error(f"{what} must be a finite number")
    number = float(value)
    if not math.isfinite(number) or number < min_value:
        raise error(f"{what} must be a finite number of at least {min_value}")
    return number


def as_text(
    value: object, what: str, *, max_len: int, min_len: int = 0, error: ErrorFactory = CborError
) -> str:
    if not isinstance(value, str) or not min_len <= len(value) <= max_len:
        span = f"at most {max_len}" if min_len == 0 else f"{min_len} to {max_len}"
        raise error(f"{what} must be text of {span} characters")
    return value


def as_bytes(
    value: object, what: str, *, max_len: int, min_len: int = 0, error: ErrorFactory = CborError
) -> bytes:
    if not isinstance(value, bytes) or not min_len <= len(value) <= max_len:
        span = f"exactly {max_len}" if min_len == max_len else f"{min_len} to {max_len}"
        raise error(f"{what} must be {span} bytes")
    return value


def as_bool(value: object, what: str, *, error: ErrorFactory = CborError) -> bool:
    if not isinstance(value, bool):
        raise error(f"{what} must be a bool")
    return value


def as_list(value: object, what: str, max_len: int, error: ErrorFactory = CborError) -> list[Any]:
    if not isinstance(value, list) or len(value) > max_len:
        raise error(f"{what} must be a list of at most {max_len} items")
    return value


# -- maps ------------------------------------------------------------------------------------------------


class CborMap:
    """A decoded CBOR map with typed, bounded getters; ``what`` names it in error messages.

    A getter raises when the field is missing unless it is given a ``default`` (returned as is, so
    ``default=None`` makes an optional field); a present field must always pass the checks.
    """

    def __init__(self, obj: object, *, what: str, error: ErrorFactory = CborError) -> None:
        if not isinstance(obj, dict):
            raise error(f"{what} must be a map")
        self.data: dict[Any, Any] = obj
        self.what = what
        self.error = error

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def get(self, key: str, default: Any = None) -> Any:
        """The raw value (unchecked), for fields that need a check of their own."""
        return self.data.get(key, default)

    def require_exactly(self, keys: Set[str]) -> None:
        """The map has exactly ``keys``, no more, no fewer."""
        if set(self.data) != keys:
            raise self.error(f"{self.what} does not have exactly the expected fields")

    def require_within(self, keys: Set[str]) -> None:
        """The map has no key outside ``keys``."""
        unknown = set(self.data) - keys
        if unknown:
            raise self.error(f"{self.what} has unexpected fields: {sorted(map(str, unknown))[:8]}")

    def field_name(self, key: str) -> str:
        return f"{self.what} field {key!r}"

    def _lookup(self, key: str, default: object) -> object:
        if key in self.data:
            return self.data[key]
        if default is REQUIRED:
            raise self.error(f"{self.what} lacks {key!r}")
        return default

    def integer(
        self, key: str, *, min_value: int = 0, max_value: int = MAX_UINT64, default: int | _Req = REQUIRED
    ) -> int:
        value = self._lookup(key, default)
        return as_int(value, self.field_name(key), min_value=min_value, max_value=max_value, error=self.error)

    def number(self, key: str, *, min_value: float = -math.inf, default: float | _Req = REQUIRED) -> float:
        value = self._lookup(key, default)
        return as_number(value, self.field_name(key), min_value=min_value, error=self.error)

    def text(self, key: str, *, max_len: int, min_len: int = 0, default: str | _Req = REQUIRED) -> str:
        value = self._lookup(key, default)
        return as_text(value, self.field_name(key), max_len=max_len, min_len=min_len, error=self.error)

    def bytes_(self, key: str, *, max_len: int, min_len: int = 0, default: bytes | _Req = REQUIRED) -> bytes:
        value = self._lookup(key, default)
        return as_bytes(value, self.field_name(key), max_len=max_len, min_len=min_len, error=self.error)

    def boolean(self, key: str, *, default: bool | _Req = REQUIRED) -> bool:
        return as_bool(self._lookup(key, default), self.field_name(key), error=self.error)

    def list_(self, key: str, *, max_len: int, default: list[Any] | _Req = REQUIRED) -> list[Any]:
        return as_list(self._lookup(key, default), self.field_name(key), max_len, self.error)

    def map_(self, key: str, *, max_len: int | None = None, what: str | None = None) -> CborMap:
        """The nested map at ``key`` (named ``what`` in errors, by default after this one)."""
        inner = CborMap(self._lookup(key, REQUIRED), what=what or self.field_name(key), error=self.error)
        if max_len is not None and len(inner) > max_len:
            raise self.error(f"{inner.what} has more than {max_len} entries")
        return inner
