"""Sans-IO Bitswap message handling: bytes in, events out; events in, bytes out.

Frames are unsigned-varint length prefixed protobuf ``Message``s (the libp2p Bitswap spec). Every
decoder bounds sizes: a frame larger than :data:`MAX_MESSAGE_BYTES` or a block larger than
:data:`MAX_BLOCK_BYTES` is a protocol error, never an allocation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from libp2p.bitswap.pb.bitswap_pb2 import Message
from libp2p.custom_types import TProtocol

from p2p.bitswap.errors import ProtocolError
from p2p.codec.errors import VarintError
from p2p.codec.varint import LENGTH_PREFIX, MULTIFORMATS, VarintRules, encode_uvarint, try_decode_uvarint
from p2p.content.cid import CID
from p2p.content.errors import ContentError

PROTOCOLS = (
    TProtocol("/ipfs/bitswap/1.2.0"),
    TProtocol("/ipfs/bitswap/1.1.0"),
    TProtocol("/ipfs/bitswap/1.0.0"),
    TProtocol("/ipfs/bitswap"),
)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_BLOCK_BYTES = 2 * 1024 * 1024
MAX_ENTRIES = 4096
SHA2_256 = 0x12
DAG_PB = 0x70


def _try_uvarint(data: bytes | bytearray, offset: int, rules: VarintRules) -> tuple[int, int] | None:
    """(value, new offset), or None if ``data`` ends inside the varint."""
    try:
        return try_decode_uvarint(data, offset, rules=rules)
    except VarintError as exc:
        raise ProtocolError(str(exc)) from exc


def parse_cid(raw: bytes) -> CID:
    """A binary CID from the wire; only sha2-256 CIDs are accepted."""
    try:
        cid = CID.decode(raw)
    except ContentError as exc:
        raise ProtocolError(f"malformed CID: {exc}") from exc
    if cid.hash_code != SHA2_256 or len(cid.digest) != 32:
        raise ProtocolError("only sha2-256 CIDs are supported")
    return cid


def block_prefix(cid: CID) -> bytes:
    """The Bitswap 1.1 block prefix: version, codec, multihash type and length."""
    return encode_uvarint(cid.version) + encode_uvarint(cid.codec) + encode_uvarint(SHA2_256) + b"\x20"


def cid_from_prefix(prefix: bytes, data: bytes) -> CID:
    """The CID a received ``payload`` block claims to have, from its prefix and bytes."""
    fields = []
    offset = 0
    for _ in range(4):
        parsed = _try_uvarint(prefix, offset, MULTIFORMATS)
        if parsed is None:
            raise ProtocolError("truncated block prefix")
        value, offset = parsed
        fields.append(value)
    version, codec, mh_type, mh_len = fields
    if version not in (0, 1) or mh_type != SHA2_256 or mh_len != 32:
        raise ProtocolError("unsupported block prefix")
    try:
        return CID.compute(data, codec, version)
    except ContentError as exc:  # e.g. a CIDv0 prefix with a codec other than dag-pb
        raise ProtocolError(f"invalid block prefix: {exc}") from exc


@dataclass
class Incoming:
    """What one message asked for or delivered."""

    wants: list[tuple[CID, bool, bool]] = field(default_factory=list)  # (cid, want_have, send_dont_have)
    cancels: list[CID] = field(default_factory=list)
    blocks: list[tuple[CID, bytes]] = field(default_factory=list)  # cid computed from the bytes
    haves: list[CID] = field(default_factory=list)
    dont_haves: list[CID] = field(default_factory=list)
    full: bool = False  # the wantlist replaces the sender's previous one (wantlist.full)


def parse_message(frame: bytes) -> Incoming:
    """Decode one message body (without its length prefix)."""
    if len(frame) > MAX_MESSAGE_BYTES:
        raise ProtocolError("message too large")
    message = Message()
    try:
        message.ParseFromString(frame)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ProtocolError(f"malformed Bitswap message: {exc}") from exc
    out = Incoming(full=message.wantlist.full)
    entries = message.wantlist.entries
    if len(entries) + len(message.payload) + len(message.blocks) + len(message.blockPresences) > MAX_ENTRIES:
        raise ProtocolError("too many entries in one message")
    for entry in entries:
        cid = parse_cid(entry.block)
        if entry.cancel:
            out.cancels.append(cid)
        else:
            out.wants.append((cid, entry.wantType == Message.Wantlist.Have, entry.sendDontHave))
    for block in message.payload:
        if len(block.data) > MAX_BLOCK_BYTES:
            raise ProtocolError("block too large")
        out.blocks.append((cid_from_prefix(block.prefix, block.data), bytes(block.data)))
    for data in message.blocks:  # Bitswap 1.0.0: CIDv0 blocks without prefix
        if len(data) > MAX_BLOCK_BYTES:
            raise ProtocolError("block too large")
        out.blocks.append((CID.compute(data, DAG_PB, 0), bytes(data)))
    for presence in message.blockPresences:
        cid = parse_cid(presence.cid)
        (out.haves if presence.type == Message.Have else out.dont_haves).append(cid)
    return out


def frame(message: Message) -> bytes:
    body = message.SerializeToString()
    return encode_uvarint(len(body)) + body


def want_message(cids: Sequence[CID], *, want_have: bool = False, cancel: bool = False) -> bytes:
    message = Message()
    for cid in cids:
        entry = message.wantlist.entries.add()
        entry.block = cid.encode()
        entry.priority = 1
        entry.cancel = cancel
        entry.wantType = Message.Wantlist.Have if want_have else Message.Wantlist.Block
        entry.sendDontHave = not cancel
    return frame(message)


def blocks_message(
    blocks: Sequence[tuple[CID, bytes]], *, haves: Sequence[CID] = (), dont_haves: Sequence[CID] = ()
) -> bytes:
    message = Message()
    for cid, data in blocks:
        block = message.payload.add()
        block.prefix = block_prefix(cid)
        block.data = data
    for cid in haves:
        presence = message.blockPresences.add()
        presence.cid = cid.encode()
        presence.type = Message.Have
    for cid in dont_haves:
        presence = message.blockPresences.add()
        presence.cid = cid.encode()
        presence.type = Message.DontHave
    return frame(message)


class FrameReader:
    """Accumulates stream bytes and yields complete, bounded frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames = []
        while True:
            parsed = _try_uvarint(self._buffer, 0, LENGTH_PREFIX)
            if parsed is None:
                break
            length, offset = parsed
            if length > MAX_MESSAGE_BYTES:
                raise ProtocolError(f"frame of {length} bytes exceeds {MAX_MESSAGE_BYTES}")
            if len(self._buffer) < offset + length:
                break
            frames.append(bytes(self._buffer[offset : offset + length]))
            del self._buffer[: offset + length]
        return frames
