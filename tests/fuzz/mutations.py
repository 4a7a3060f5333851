"""Hypothesis strategies for fuzzing: raw bytes, and seeds (valid encodings) with a few structured
mutations (bit flips, boundary values, CBOR heads that announce huge or nested items, cuts, splices)."""

from __future__ import annotations

import cbor2
from hypothesis import strategies as st

INTERESTING = (
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00\x00\x00\x00\x00",
    b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff",  # CBOR uint64 max
    b"\x3b\xff\xff\xff\xff\xff\xff\xff\xff",  # CBOR most negative
    b"\xc2\x59\x08\x00" + b"\xff" * 2048,  # CBOR bignum of 2048 bytes
    b"\x9f\x9f\x9f\x9f",  # CBOR indefinite arrays, never closed
    b"\x81" * 64,  # CBOR arrays nested 64 deep
    b"\xd8\x1c\x81\xd8\x1d\x00",  # CBOR shared reference: a list that contains itself
    b"\x5b\x7f\xff\xff\xff\xff\xff\xff\xff",  # CBOR byte string announcing 2**63 bytes
    b"\xf9\x7e\x00",  # CBOR half-float NaN
    b"\xfb\x7f\xf0\x00\x00\x00\x00\x00\x00",  # CBOR double +inf
)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes], max_len: int) -> bytes:
    """One of ``seeds`` with 1-4 mutations, at most ``max_len`` bytes."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "byte", "insert", "delete", "cut", "splice", "repeat")))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            index = min(at, len(data) - 1)
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and data:
            data[min(at, len(data) - 1)] = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFE, 0xFF)))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "cut":
            del data[at:]
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, len(other)))
            data[at:] = other[start:]
        elif op == "repeat" and data:
            piece = data[at : at + draw(st.integers(1, 32))]
            data[at:at] = piece * draw(st.integers(1, 8))
    return bytes(data[:max_len])


def _hostile_values() -> list[object]:
    nested: list[object] = []
    for _ in range(200):
        nested = [nested]
    cyclic: list[object] = []
    cyclic.append(cyclic)
    return [
        2**20000,  # more digits than str() of an int may have: f"{value}" raises ValueError
        -(2**20000),
        2**64,
        -1,
        float("nan"),
        float("inf"),
        -0.0,
        True,
        None,
        "",
        "\x00" * 3,
        "x" * 5000,
        b"",
        b"\xff" * 300,
        [],
        {},
        {1: 2},
        nested,
        cyclic,  # (a shared reference: the list contains itself)
        cbor2.CBORTag(9999, [1]),
        cbor2.undefined,
        frozenset({1}),
    ]


def _paths(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Paths to every item of a decoded CBOR value (maps by key, lists by index), itself first."""
    out = [path]
    if isinstance(value, dict):
        for key, item in list(value.items())[:64]:
            out += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:64]):
            out += _paths(item, (*path, index))
    return out


def _replaced(value: object, path: tuple[object, ...], new: object) -> object:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: (_replaced(v, rest, new) if k == head else v) for k, v in value.items()}
    assert isinstance(value, list) and isinstance(head, int)
    return [(_replaced(v, rest, new) if i == head else v) for i, v in enumerate(value)]


def cbor_variants(raw: bytes, limit: int = 600) -> list[bytes]:
    """``raw`` (one CBOR item) with each of its items in turn replaced by hostile values (huge integers,
    NaN, wrong types, deep nesting, a self-containing list, unknown tags), and each map given an extra key."""
    doc = cbor2.loads(raw)
    out = []
    for path in _paths(doc):
        for new in _hostile_values():
            out.append(cbor2.dumps(_replaced(doc, path, new), value_sharing=True))
        target_map = doc
        for step in path:
            target_map = target_map[step]  # type: ignore[index]
        if isinstance(target_map, dict):
            out.append(cbor2.dumps(_replaced(doc, path, {**target_map, "zz-extra": 1})))
    return out[:limit]
