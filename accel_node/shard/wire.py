"""Activation messages of sharded inference: sans-IO encoding and decoding, bounded and zero-copy.

One message::

    prefix   "ASH1" | header length: u32 LE | body length: u64 LE          (16 bytes)
    header   canonical CBOR map (at most ``WireLimits.max_header_bytes``)
    body     the tensors' raw little-endian bytes, each starting at a multiple of 8 from the start of
             the message (zero padding between), in the order of the header's tensor table

Header keys (short, since a small ACK is mostly header):

    v      1                    format version
    k      uint                 kind: RUN 1, RESULT 2, ACK 3, FAIL 4, AUDIT 5, RETAINED 6
    t      uint                 tag: the sender's correlation id on its channel; ACK/FAIL echo it
    r      bytes(16)            request id, random, end to end (replays and duplicates keep it)
    s      uint                 stage index (RUN: the stage to run; RESULT: the last stage; ACK/FAIL:
                                the stage the answer is about; FAIL "exhausted": the stage left without
                                a usable replica)
    m      text                 model CID (RUN, RESULT)
    b      uint                 micro-batch index (RUN, RESULT)
    route  [[bytes]]            RUN: for each stage after ``s``, its replicas' peer ids, best first
    reply  bytes                RUN: the peer id the last stage sends the RESULT to
    addrs  {bytes: [bytes]}     RUN: multiaddrs of peers named in route/reply (optional)
    ttl    uint                 RUN: milliseconds the requester still waits
    f16    bool                 RUN/RESULT: float32 tensors travel as float16 (lossy, opt-in); the
                                receiver casts them back to float32, and each hop compresses its output
    code   text, why text       FAIL: a code from :data:`FAIL_CODES` and a human-readable reason
    rc     [bytes]              RUN/RESULT/RETAINED: signed stage receipts (:mod:`accel_node.shard.receipts`),
                                stages 0..s-1 on a RUN, every stage on a RESULT, the audited stage's on
                                RETAINED; at most ``max_receipts`` of at most ``max_receipt_bytes`` each
    x      [[name, dtype, [dims], nbytes]]   RUN/RESULT/RETAINED: the tensor table

AUDIT (``r``, ``s``, ``m``) asks a stage server for what it retained of request ``r`` at stage ``s``
(:mod:`accel_node.shard.retention`); it answers RETAINED with the receipt and the tensors, inputs named
``in/<name>`` and outputs ``out/<name>``, or FAIL.

Decoding is zero-copy: each tensor is ``numpy.frombuffer`` over the received bytes (read-only), after
checking that ``prod(shape) * itemsize == nbytes`` and that the table covers the body exactly. Dtypes come
from an allow-list (no object arrays; no pickle anywhere), ranks, dims, names, counts, the header and the
whole message are bounded. Anything malformed raises :class:`ShardWireError`.

A message larger than a channel's frame limit travels in parts (:mod:`accel_node.shard.parts`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import cbor2
import numpy as np
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from accel_node.shard.errors import (  # re-exported: the wire's errors live with the others
    ShardWireError,
)
from accel_node.shard.limits import MAX_STAGES
from p2p.codec.cbor import CborMap, as_bytes, as_list, describe, loads_bounded

Buffer = bytes | bytearray | memoryview
Arrays = dict[str, np.ndarray[Any, Any]]

FORMAT_VERSION = 1
MAGIC = b"ASH1"
PREFIX = struct.Struct("<4sIQ")
ALIGN = 8
REQUEST_ID_BYTES = 16
NO_REQUEST = bytes(REQUEST_ID_BYTES)
"""Request id of a FAIL answering a message whose own id could not be read."""


WIRE_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
}
"""The dtypes activations may have (little-endian on the wire)."""

# FAIL codes
MALFORMED = "malformed"  # the message could not be decoded (the sender is penalised)
INVALID = "invalid"  # decoded, but the tensors do not fit the stage
UNKNOWN_STAGE = "unknown-stage"  # the peer does not serve this model/stage
FAILED = "failed"  # running the stage failed
EXHAUSTED = "exhausted"  # no replica of stage ``s`` answered (``s`` names it)
TIMEOUT = "timeout"  # the request's time ran out at this hop
UNDELIVERABLE = "undeliverable"  # the last stage could not deliver the RESULT
BUSY = "busy"  # the peer refuses work for now
FAIL_CODES = frozenset({MALFORMED, INVALID, UNKNOWN_STAGE, FAILED, EXHAUSTED, TIMEOUT, UNDELIVERABLE, BUSY})


# -- limits and messages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WireLimits:
    """Bounds on what a decoder accepts (and an encoder produces)."""

    max_message_bytes: int = 256 << 20
    max_header_bytes: int = 64 << 10
    max_tensors: int = 256
    max_rank: int = 16
    max_dim: int = 1 << 31
    max_name_chars: int = 1024
    max_stages: int = MAX_STAGES
    max_replicas: int = 16
    max_peer_id_bytes: int = 128
    max_addrs_per_peer: int = 8
    max_addr_bytes: int = 256
    max_text_chars: int = 2048
    max_receipts: int = MAX_STAGES
    max_receipt_bytes: int = 1024


DEFAULT_LIMITS = WireLimits()


class Kind(IntEnum):
    RUN = 1
    RESULT = 2
    ACK = 3
    FAIL = 4
    AUDIT = 5
    RETAINED = 6


@dataclass(frozen=True)
class Message:
    """One shard message (see the module docstring for the meaning of each field)."""

    kind: Kind
    request_id: bytes
    stage: int = 0
    tag: int = 0
    model: str = ""
    micro_batch: int = 0
    route: tuple[tuple[ID, ...], ...] = ()
    reply_to: ID | None = None
    addrs: Mapping[ID, tuple[Multiaddr, ...]] = field(default_factory=dict)
    ttl_ms: int = 0
    fp16: bool = False
    code: str = ""
    reason: str = ""
    tensors: Mapping[str, np.ndarray[Any, Any]] = field(default_factory=dict)
    receipts: tuple[bytes, ...] = ()


def ack(request: Message) -> Message:
    """The ACK answering ``request``."""
    return Message(Kind.ACK, request.request_id, stage=request.stage, tag=request.tag)


def fail(
    request_id: bytes | None, tag: int | None, *, stage: int, code: str, reason: str, limit: int = 2048
) -> Message:
    """A FAIL with ``code`` (one of :data:`FAIL_CODES`) and ``reason`` (truncated to ``limit``)."""
    assert code in FAIL_CODES, code
    return Message(
        Kind.FAIL, request_id or NO_REQUEST, stage=stage, tag=tag or 0, code=code, reason=reason[:limit]
    )


def reject(request: Message, code: str, reason: str, *, stage: int | None = None) -> Message:
    """The FAIL answering ``request`` (about ``stage``, by default the request's)."""
    return fail(request.request_id, request.tag, stage=request.stage if stage is None else stage,
                code=code, reason=reason)  # fmt: skip


def _align(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


_ZEROS = bytes(ALIGN)


# -- encoding -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """A message ready to send: buffers (the tensors' own memory, not copied) and their total size."""

    buffers: list[Buffer]
    size: int


def _wire_array(
    name: str, array: np.ndarray[Any, Any], fp16: bool, limits: WireLimits
) -> np.ndarray[Any, Any]:
    if not isinstance(array, np.ndarray):
        raise ShardWireError(f"tensor {name!r} is a {type(array).__name__}, not a numpy array")
    dtype_name = array.dtype.name
    if dtype_name not in WIRE_DTYPES:
        raise ShardWireError(f"tensor {name!r} has dtype {dtype_name}, not one of {sorted(WIRE_DTYPES)}")
    if array.ndim > limits.max_rank:
        raise ShardWireError(f"tensor {name!r} has rank {array.ndim} > {limits.max_rank}")
    wire = WIRE_DTYPES["float16"] if fp16 and dtype_name == "float32" else WIRE_DTYPES[dtype_name]
    out = array.astype(wire, copy=False)
    return out if out.flags.c_contiguous else out.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)


def _peer_bytes(peer: ID, limits: WireLimits) -> bytes:
    raw = peer.to_bytes()
    if not 0 < len(raw) <= limits.max_peer_id_bytes:
        raise ShardWireError(f"peer id of {len(raw)} bytes")
    return raw


def _run_header(message: Message, limits: WireLimits) -> dict[str, Any]:
    if len(message.route) > limits.max_stages or any(len(h) > limits.max_replicas for h in message.route):
        raise ShardWireError(
            f"a route has at most {limits.max_stages} stages of {limits.max_replicas} replicas each"
        )
    if len(message.addrs) > limits.max_stages * limits.max_replicas + 1:
        raise ShardWireError(f"addresses of {len(message.addrs)} peers are too many")
    header: dict[str, Any] = {
        "route": [[_peer_bytes(p, limits) for p in hop] for hop in message.route],
        "ttl": message.ttl_ms,
    }
    if message.reply_to is not None:
        header["reply"] = _peer_bytes(message.reply_to, limits)
    if message.addrs:
        header["addrs"] = {
            _peer_bytes(p, limits): [a.to_bytes() for a in addrs[: limits.max_addrs_per_peer]]
            for p, addrs in message.addrs.items()
        }
    return header


def _data_header(message: Message, limits: WireLimits) -> dict[str, Any]:
    """The model, micro-batch, fp16 and receipt fields of a message that has them."""
    header: dict[str, Any] = {}
    if message.kind in (Kind.RUN, Kind.RESULT, Kind.RETAINED):
        header.update(m=message.model, b=message.micro_batch, f16=message.fp16)
    if message.kind == Kind.AUDIT:
        header.update(m=message.model)
    if message.receipts:
        header["rc"] = _receipts(message, limits)
    return header


def _receipts(message: Message, limits: WireLimits) -> list[bytes]:
    if message.kind not in (Kind.RUN, Kind.RESULT, Kind.RETAINED):
        raise ShardWireError(f"a {message.kind.name} carries no receipts")
    if len(message.receipts) > limits.max_receipts or any(
        not 0 < len(r) <= limits.max_receipt_bytes for r in message.receipts
    ):
        raise ShardWireError(
            f"at most {limits.max_receipts} receipts of {limits.max_receipt_bytes} bytes each"
        )
    return list(message.receipts)


def encode_message(message: Message, limits: WireLimits = DEFAULT_LIMITS) -> Encoded:
    """Encode ``message``; the tensor bytes are referenced, not copied (fp16 compression makes one copy)."""
    if len(message.request_id) != REQUEST_ID_BYTES:
        raise ShardWireError(f"request id must be {REQUEST_ID_BYTES} bytes")
    if len(message.tensors) > limits.max_tensors:
        raise ShardWireError(f"{len(message.tensors)} tensors > {limits.max_tensors}")
    header: dict[str, Any] = {"v": FORMAT_VERSION, "k": int(message.kind), "t": message.tag,
                              "r": message.request_id, "s": message.stage}  # fmt: skip
    header.update(_data_header(message, limits))
    if message.kind == Kind.RUN:
        header.update(_run_header(message, limits))
    if message.kind == Kind.FAIL:
        header.update(code=message.code, why=message.reason[: limits.max_text_chars])
    arrays = [_wire_array(name, a, message.fp16, limits) for name, a in message.tensors.items()]
    if arrays:
        header["x"] = [
            [name, array.dtype.name, list(wire.shape), wire.nbytes]
            for (name, array), wire in zip(message.tensors.items(), arrays, strict=True)
        ]
    head = cbor2.dumps(header, canonical=True)
    if len(head) > limits.max_header_bytes:
        raise ShardWireError(f"message header of {len(head)} bytes > {limits.max_header_bytes}")
    buffers: list[Buffer] = [b"", head]
    offset = PREFIX.size + len(head)
    for wire in arrays:
        start = _align(offset)
        if start > offset:
            buffers.append(_ZEROS[: start - offset])
        if wire.nbytes:
            buffers.append(wire.reshape(-1).view(np.uint8).data)
        offset = start + wire.nbytes
    if offset > limits.max_message_bytes:
        raise ShardWireError(f"message of {offset} bytes > the limit of {limits.max_message_bytes}")
    buffers[0] = PREFIX.pack(MAGIC, len(head), offset - PREFIX.size - len(head))
    return Encoded(buffers, offset)


def encode_bytes(message: Message, limits: WireLimits = DEFAULT_LIMITS) -> bytes:
    """``message`` as one ``bytes`` (tests, small messages)."""
    return b"".join(bytes(b) for b in encode_message(message, limits).buffers)


# -- decoding -----------------------------------------------------------------------------------------


class _Fields(CborMap):
    """The decoded header map; its errors are ShardWireErrors that carry the request id and tag
    as soon as those are known (so the sender can be answered with a FAIL it can match)."""

    def __init__(self, header: object, limits: WireLimits) -> None:
        self.limits = limits
        self.request_id: bytes | None = None
        self.tag: int | None = None
        super().__init__(header, what="header", error=self.error)

    def error(self, message: str) -> ShardWireError:
        return ShardWireError(message, request_id=self.request_id, tag=self.tag)

    def list(self, value: object, what: str, limit: int) -> list[Any]:
        return as_list(value, what, limit, self.error)

    def peer(self, value: object, what: str) -> ID:
        return ID(as_bytes(value, what, min_len=1, max_len=self.limits.max_peer_id_bytes, error=self.error))


_MAX_INT = (1 << 63) - 1
_KEYS = {
    Kind.RUN: {"v", "k", "t", "r", "s", "m", "b", "f16", "route", "ttl", "reply", "addrs", "x", "rc"},
    Kind.RESULT: {"v", "k", "t", "r", "s", "m", "b", "f16", "x", "rc"},
    Kind.ACK: {"v", "k", "t", "r", "s"},
    Kind.FAIL: {"v", "k", "t", "r", "s", "code", "why"},
    Kind.AUDIT: {"v", "k", "t", "r", "s", "m"},
    Kind.RETAINED: {"v", "k", "t", "r", "s", "m", "b", "f16", "x", "rc"},
}


def _parse_receipts(f: _Fields) -> tuple[bytes, ...]:
    items = f.list(f.get("rc", []), "receipts", f.limits.max_receipts)
    if any(not isinstance(r, bytes) or not 0 < len(r) <= f.limits.max_receipt_bytes for r in items):
        raise f.error(f"a receipt must be 1 to {f.limits.max_receipt_bytes} bytes")
    return tuple(items)


def _parse_header(raw: bytes, limits: WireLimits) -> tuple[_Fields, Kind]:
    header = loads_bounded(
        raw, max_bytes=limits.max_header_bytes, what="message header", error=ShardWireError
    )
    f = _Fields(header, limits)
    request_id = f.get("r")
    if isinstance(request_id, bytes) and len(request_id) == REQUEST_ID_BYTES:
        f.request_id = request_id
    tag = f.get("t")
    if isinstance(tag, int) and not isinstance(tag, bool) and 0 <= tag < (1 << 63):
        f.tag = tag
    if not {"v", "k", "t", "r", "s"} <= set(f):
        raise f.error("header lacks one of v, k, t, r, s")
    if f.get("v") != FORMAT_VERSION or isinstance(f.get("v"), bool):
        raise f.error(f"unsupported message version {describe(f.get('v'))}")
    if f.request_id is None or f.tag is None:
        raise f.error(f"header needs a {REQUEST_ID_BYTES}-byte request id and an integer tag")
    code = f.integer("k", max_value=_MAX_INT)
    if code not in {k.value for k in Kind}:
        raise f.error(f"unknown message kind {code}")
    kind = Kind(code)
    f.require_within(_KEYS[kind])
    return f, kind


def _parse_route(f: _Fields) -> tuple[tuple[ID, ...], ...]:
    hops = f.list(f.get("route", []), "route", f.limits.max_stages)
    route = []
    for hop in hops:
        peers = f.list(hop, "route hop", f.limits.max_replicas)
        route.append(tuple(f.peer(p, "route replica") for p in peers))
    return tuple(route)


def _parse_addrs(f: _Fields) -> dict[ID, tuple[Multiaddr, ...]]:
    raw = f.get("addrs", {})
    limit = f.limits.max_stages * f.limits.max_replicas + 1
    if not isinstance(raw, dict) or len(raw) > limit:
        raise f.error(f"addrs must be a map of at most {limit} peers")
    addrs: dict[ID, tuple[Multiaddr, ...]] = {}
    for peer, items in raw.items():
        parsed = []
        for item in f.list(items, "addrs entry", f.limits.max_addrs_per_peer):
            if not isinstance(item, bytes) or len(item) > f.limits.max_addr_bytes:
                raise f.error(f"a multiaddr must be at most {f.limits.max_addr_bytes} bytes")
            try:  # Multiaddr(bytes) parses lazily and leniently: insist on a canonical round trip
                addr = Multiaddr(str(Multiaddr(item)))
                valid = addr.to_bytes() == item
            except Exception:  # multiaddr raises several error types
                valid = False
            if not valid:
                raise f.error("malformed multiaddr")
            parsed.append(addr)
        addrs[f.peer(peer, "addrs peer")] = tuple(parsed)
    return addrs


def _parse_tensors(f: _Fields, data: memoryview, start: int, fp16: bool) -> dict[str, np.ndarray[Any, Any]]:
    limits = f.limits
    table = f.list(f.get("x", []), "tensor table", limits.max_tensors)
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    offset = start
    for entry in table:
        if not isinstance(entry, list) or len(entry) != 4:
            raise f.error("a tensor table entry must be [name, dtype, shape, nbytes]")
        name, dtype_name, shape, nbytes = entry
        if not isinstance(name, str) or not 0 < len(name) <= limits.max_name_chars:
            raise f.error(f"tensor names must be text of 1 to {limits.max_name_chars} characters")
        if name in tensors:
            raise f.error(f"tensor {name!r} appears twice")
        if not isinstance(dtype_name, str) or dtype_name not in WIRE_DTYPES:
            raise f.error(
                f"tensor {name!r}: dtype {describe(dtype_name)} is not one of {sorted(WIRE_DTYPES)}"
            )
        dims = f.list(shape, f"shape of {name!r}", limits.max_rank)
        if any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= limits.max_dim for d in dims):
            raise f.error(f"tensor {name!r}: dims must be integers from 0 to {limits.max_dim}")
        wire = WIRE_DTYPES["float16" if fp16 and dtype_name == "float32" else dtype_name]
        count = math.prod(dims)
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes != count * wire.itemsize:
            raise f.error(
                f"tensor {name!r}: declared length {describe(nbytes)} is not {count} x {wire.itemsize} bytes"
            )
        offset = _align(offset)
        if offset + nbytes > len(data):
            raise f.error(f"tensor {name!r} runs past the end of the message")
        array = np.frombuffer(data, dtype=wire, count=count, offset=offset).reshape(dims)
        if wire.kind == "b" and count and int(array.view(np.uint8).max()) > 1:
            raise f.error(f"bool tensor {name!r} holds values other than 0 and 1")
        if wire != WIRE_DTYPES[dtype_name]:
            array = array.astype(np.float32)
        elif not wire.isnative:
            array = array.astype(wire.newbyteorder("="))
        tensors[name] = array
        offset += nbytes
    if offset != len(data):
        raise f.error(f"the tensor table covers {offset} bytes of a {len(data)}-byte message")
    return tensors


def decode_message(data: Buffer, limits: WireLimits = DEFAULT_LIMITS) -> Message:
    """Decode one message; its tensors are read-only views of ``data`` (keep ``data`` alive)."""
    view = memoryview(data).cast("B")
    if len(view) > limits.max_message_bytes:
        raise ShardWireError(f"message of {len(view)} bytes > the limit of {limits.max_message_bytes}")
    if len(view) < PREFIX.size:
        raise ShardWireError(f"message of {len(view)} bytes is shorter than its {PREFIX.size}-byte prefix")
    magic, header_len, body_len = PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise ShardWireError("not a shard message (bad magic)")
    if header_len > limits.max_header_bytes:
        raise ShardWireError(f"message header of {header_len} bytes > {limits.max_header_bytes}")
    if PREFIX.size + header_len + body_len != len(view):
        raise ShardWireError(
            f"message prefix announces {PREFIX.size + header_len + body_len} bytes, got {len(view)}"
        )
    f, kind = _parse_header(bytes(view[PREFIX.size : PREFIX.size + header_len]), limits)
    fp16 = f.boolean("f16", default=False)
    stage = f.integer("s", max_value=limits.max_stages - 1)
    code = f.text("code", max_len=64, default="")
    if kind == Kind.FAIL and code not in FAIL_CODES:
        raise f.error(f"unknown FAIL code {code!r}")
    reply = f.get("reply")
    assert f.request_id is not None and f.tag is not None
    return Message(
        kind=kind,
        request_id=f.request_id,
        stage=stage,
        tag=f.tag,
        model=f.text("m", max_len=limits.max_text_chars, default=""),
        micro_batch=f.integer("b", max_value=_MAX_INT, default=0),
        route=_parse_route(f),
        reply_to=None if reply is None else f.peer(reply, "reply"),
        addrs=_parse_addrs(f),
        ttl_ms=f.integer("ttl", max_value=_MAX_INT, default=0),
        fp16=fp16,
        code=code,
        reason=f.text("why", max_len=limits.max_text_chars, default=""),
        tensors=_parse_tensors(f, view, PREFIX.size + header_len, fp16),
        receipts=_parse_receipts(f),
    )
