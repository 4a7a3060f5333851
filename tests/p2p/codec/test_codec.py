"""p2p.codec: the one varint codec and the one bounded CBOR reader every wire format uses."""

from __future__ import annotations

import math

import cbor2
import pytest

from p2p.codec.cbor import CborMap, as_int, as_number, load_list, load_map, loads_bounded
from p2p.codec.errors import CborError, CodecError, MalformedVarintError, TruncatedVarintError, VarintError
from p2p.codec.varint import PROTOBUF, decode_uvarint, encode_uvarint, try_decode_uvarint
from p2p.errors import P2PError


def test_varint_codec() -> None:
    for value in (0, 1, 127, 128, 300, 2**63 - 1):
        assert decode_uvarint(encode_uvarint(value)) == (value, len(encode_uvarint(value)))
    assert decode_uvarint(b"\x00\xac\x02", 1) == (300, 3)
    for bad in (b"\x80", b"\x80\x00", b"\xff" * 10):
        with pytest.raises(VarintError):
            decode_uvarint(bad)
    with pytest.raises(TruncatedVarintError):  # a stream reader waits for more bytes ...
        decode_uvarint(b"\xff\xff")
    assert try_decode_uvarint(b"\xff\xff") is None
    assert try_decode_uvarint(b"\xac\x02\x05", end=1) is None  # ... also at the end of a sub-message
    for malformed in (b"\x80\x00", b"\xff" * 9):  # ... but not for what no byte can fix
        with pytest.raises(MalformedVarintError):
            try_decode_uvarint(malformed)
    # protobuf varints: 10 bytes, uint64, padding allowed
    assert decode_uvarint(b"\x80\x00", rules=PROTOBUF) == (0, 2)
    assert decode_uvarint(encode_uvarint(2**64 - 1), rules=PROTOBUF) == (2**64 - 1, 10)
    with pytest.raises(MalformedVarintError, match="64 bits"):
        decode_uvarint(b"\xff" * 9 + b"\x7f", rules=PROTOBUF)
    with pytest.raises(ValueError):
        encode_uvarint(-1)


class CallerError(ValueError):
    """Stands for a caller's own error class (ManifestError, PlanError, ...)."""


def test_cbor_reader_bounds_before_decoding() -> None:
    assert loads_bounded(cbor2.dumps([1, "a"]), max_bytes=16, what="thing") == [1, "a"]
    with pytest.raises(CborError, match="thing is 17 bytes; the limit is 16"):
        loads_bounded(bytes(17), max_bytes=16, what="thing")
    with pytest.raises(CborError, match="not valid CBOR"):
        loads_bounded(b"\xff\x00", max_bytes=16, what="thing")
    with pytest.raises(CborError, match="not valid CBOR"):  # declares 2**62 bytes it does not have
        loads_bounded(b"\x5b" + (1 << 62).to_bytes(8, "big"), max_bytes=16, what="thing")
    with pytest.raises(CborError, match="must be bytes"):
        loads_bounded("text", max_bytes=16, what="thing")  # type: ignore[arg-type]
    with pytest.raises(CallerError, match="manifest must be a map"):
        load_map(cbor2.dumps([1]), max_bytes=64, what="manifest", error=CallerError)
    assert load_list(cbor2.dumps([b"x"]), max_bytes=64, max_len=1, what="wants") == [b"x"]
    with pytest.raises(CborError, match="at most 1 items"):
        load_list(cbor2.dumps([b"x", b"y"]), max_bytes=64, max_len=1, what="wants")
    assert issubclass(CborError, CodecError) and issubclass(CodecError, P2PError | ValueError)


def test_cbor_map_getters() -> None:
    raw = cbor2.dumps(
        {"name": "mlp", "n": 3, "key": b"k" * 4, "ok": True, "items": [1, 2], "io": {"x": 1}, "f": 0.5}
    )
    fields = load_map(raw, max_bytes=1024, what="manifest", error=CallerError)
    assert fields.text("name", max_len=8, min_len=1) == "mlp"
    assert fields.integer("n", max_value=3) == 3
    assert fields.bytes_("key", min_len=4, max_len=4) == b"kkkk"
    assert fields.boolean("ok") is True
    assert fields.list_("items", max_len=2) == [1, 2]
    assert fields.map_("io").integer("x") == 1
    assert fields.number("f", min_value=0) == 0.5
    assert fields.text("missing", max_len=8, default="") == ""  # an optional field
    assert fields.integer("missing", default=7) == 7
    fields.require_within({"name", "n", "key", "ok", "items", "io", "f", "extra"})
    for call, match in [
        (lambda: fields.text("missing", max_len=8), "manifest lacks 'missing'"),
        (lambda: fields.text("name", max_len=2), "manifest field 'name' must be text of at most 2"),
        (lambda: fields.integer("n", max_value=2), "manifest field 'n' must be an integer from 0 to 2"),
        (lambda: fields.integer("ok"), "must be an integer"),  # a bool is not an integer
        (lambda: fields.boolean("n"), "must be a bool"),
        (lambda: fields.bytes_("key", min_len=32, max_len=32), "must be exactly 32 bytes"),
        (lambda: fields.list_("items", max_len=1), "at most 1 items"),
        (lambda: fields.map_("items"), "must be a map"),
        (lambda: fields.map_("io", max_len=0), "more than 0 entries"),
        (lambda: fields.require_exactly({"name"}), "exactly the expected fields"),
        (lambda: fields.require_within({"name"}), "unexpected fields"),
    ]:
        with pytest.raises(CallerError, match=match):
            call()


def test_cbor_value_checkers_and_error_factories() -> None:
    with pytest.raises(CborError):
        as_int(-1, "cut")
    assert as_int(-1, "offset", min_value=-1) == -1
    for bad in (math.nan, math.inf, 10**400, True, "1"):
        with pytest.raises(CborError):
            as_number(bad, "flops")

    seen: list[str] = []

    def error(message: str) -> Exception:  # a factory adding context, as the shard wire does
        seen.append(message)
        return CallerError(f"request 7: {message}")

    with pytest.raises(CallerError, match="request 7: header field 'k'"):
        CborMap({"k": "x"}, what="header", error=error).integer("k")
    assert seen == ["header field 'k' must be an integer from 0 to 18446744073709551615"]
