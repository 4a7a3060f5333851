"""Unsigned LEB128 varints: one encoder, one bounded decoder.

The same 7-bits-per-byte encoding appears in three flavours on our wires, which differ only in
their bounds, so they are parameters here rather than three decoders:

- multiformats (CIDs, multihashes): at most 9 bytes (63 bits) and minimally encoded, so that one
  number has exactly one spelling (:data:`MULTIFORMATS`, the default);
- protobuf (dag-pb, UnixFS): at most 10 bytes, values below 2**64, padding allowed
  (:data:`PROTOBUF`);
- Bitswap frame length prefixes: at most 10 bytes, decoded incrementally from a stream
  (:func:`try_decode_uvarint` says "need more bytes" with ``None`` instead of raising).

A decoder never reads more than ``max_bytes`` bytes, so no input makes it loop or allocate.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from p2p.codec.errors import MalformedVarintError, TruncatedVarintError


@dataclass(frozen=True, slots=True)
class VarintRules:
    """The bounds of one varint flavour."""

    max_bytes: int
    """Longest accepted encoding; a longer one is malformed."""
    minimal: bool
    """Refuse a redundant trailing ``0x00`` byte (two spellings of one number)."""
    max_value: int
    """Largest accepted value."""


MULTIFORMATS = VarintRules(max_bytes=9, minimal=True, max_value=(1 << 63) - 1)
"""The multiformats unsigned-varint spec: at most 9 bytes (63 bits), minimal."""
PROTOBUF = VarintRules(max_bytes=10, minimal=False, max_value=(1 << 64) - 1)
"""Protobuf varints: at most 10 bytes, a uint64."""
LENGTH_PREFIX = VarintRules(max_bytes=10, minimal=False, max_value=(1 << 70) - 1)
"""Length prefixes as py-libp2p and Kubo write them (protocols bound the length themselves)."""

Bytes = bytes | bytearray | memoryview
_SMALL = [bytes((i,)) for i in range(0x80)]


@functools.lru_cache(maxsize=4096)
def encode_uvarint(value: int) -> bytes:
    """``value`` (non-negative) as an unsigned LEB128 varint, minimally encoded.

    Cached: an import encodes the same few lengths and sizes (262144, 34, ...) thousands of times.
    """
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        raise ValueError(f"a varint must be non-negative, got {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def try_decode_uvarint(
    data: Bytes, offset: int = 0, *, end: int | None = None, rules: VarintRules = MULTIFORMATS
) -> tuple[int, int] | None:
    """``(value, next_offset)`` of the varint at ``offset``, or None if ``data`` (or ``end``, the
    end of the enclosing message) comes inside it; :class:`MalformedVarintError` when it breaks
    ``rules``, whatever follows."""
    stop = len(data) if end is None else end
    value = 0
    shift = 0
    for index in range(offset, min(offset + rules.max_bytes, stop)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if rules.minimal and byte == 0 and index > offset:
                raise MalformedVarintError("non-minimal varint")
            if value > rules.max_value:
                raise MalformedVarintError(f"varint exceeds {rules.max_value.bit_length()} bits")
            return value, index + 1
        shift += 7
    if stop - offset >= rules.max_bytes:
        raise MalformedVarintError(f"varint longer than {rules.max_bytes} bytes")
    return None


def decode_uvarint(
    data: Bytes, offset: int = 0, *, end: int | None = None, rules: VarintRules = MULTIFORMATS
) -> tuple[int, int]:
    """:func:`try_decode_uvarint` for complete input: truncation is :class:`TruncatedVarintError`."""
    parsed = try_decode_uvarint(data, offset, end=end, rules=rules)
    if parsed is None:
        raise TruncatedVarintError("truncated varint")
    return parsed
