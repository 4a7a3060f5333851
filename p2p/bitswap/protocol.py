"""Sans-IO Bitswap message handling: bytes in, events out; events in, bytes out.

Frames are unsigned-varint length prefixed protobuf ``Message``s (the libp2p Bitswap spec). Every
decoder bounds sizes: a frame larger than :data:`MAX_MESSAGE_BYTES` or a block larger than
:data:`MAX_BLOCK_BYTES` is a protocol error, never an allocation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from libp2p.bitswap.pb.bitswap_pb2 import Message
from libp2p.custom_types import TProtocol

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
RAW = 0x55
DAG_PB = 0x70


class ProtocolError(ValueError):
    """A peer sent something that is not valid Bitswap."""


def encode_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_uvarint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """(value, new offset), or None if ``data`` ends inside the varint."""
    value = shift = 0
    for i in range(offset, min(len(data), offset + 10)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    if len(data) - offset >= 10:
        raise ProtocolError("varint longer than 10 bytes")
    return None


@dataclass(frozen=True)
class Cid:
    """A CIDv1 (or v0) as bytes, with the parts Bitswap needs."""

    raw: bytes  # the binary CID
    version: int
    codec: int
    digest: bytes  # sha2-256 digest

    @classmethod
    def parse(cls, raw: bytes) -> Cid:
        if len(raw) == 34 and raw[:2] == b"\x12\x20":  # CIDv0: a bare sha2-256 multihash
            return cls(bytes(raw), 0, DAG_PB, bytes(raw[2:]))
        parsed = decode_uvarint(raw, 0)
        if parsed is None or parsed[0] != 1:
            raise ProtocolError("only CIDv0 and CIDv1 are supported")
        codec_parsed = decode_uvarint(raw, parsed[1])
        if codec_parsed is None:
            raise ProtocolError("truncated CID")
        codec, offset = codec_parsed
        if raw[offset : offset + 2] != b"\x12\x20" or len(raw) != offset + 34:
            raise ProtocolError("only sha2-256 CIDs are supported")
        return cls(bytes(raw), 1, codec, bytes(raw[offset + 2 :]))

    @classmethod
    def for_block(cls, version: int, codec: int, data: bytes) -> Cid:
        digest = hashlib.sha256(data).digest()
        if version == 0:
            return cls(b"\x12\x20" + digest, 0, DAG_PB, digest)
        raw = encode_uvarint(1) + encode_uvarint(codec) + b"\x12\x20" + digest
        return cls(raw, 1, codec, digest)

    def prefix(self) -> bytes:
        """The Bitswap 1.1 block prefix: version, codec, multihash type and length."""
        return encode_uvarint(self.version) + encode_uvarint(self.codec) + encode_uvarint(SHA2_256) + b"\x20"

    def matches(self, data: bytes) -> bool:
        return hashlib.sha256(data).digest() == self.digest


def cid_from_prefix(prefix: bytes, data: bytes) -> Cid:
    """The CID a received ``payload`` block claims to have, from its prefix and bytes."""
    fields = []
    offset = 0
    for _ in range(4):
        parsed = decode_uvarint(prefix, offset)
        if parsed is None:
            raise ProtocolError("truncated block prefix")
        value, offset = parsed
        fields.append(value)
    version, codec, mh_type, mh_len = fields
    if version not in (0, 1) or mh_type != SHA2_256 or mh_len != 32:
        raise ProtocolError("unsupported block prefix")
    return Cid.for_block(version, codec, data)


@dataclass
class Incoming:
    """What one message asked for or delivered."""

    wants: list[tuple[Cid, bool, bool]] = field(default_factory=list)  # (cid, want_have, send_dont_have)
    cancels: list[Cid] = field(default_factory=list)
    blocks: list[tuple[Cid, bytes]] = field(default_factory=list)  # cid computed from the bytes
    haves: list[Cid] = field(default_factory=list)
    dont_haves: list[Cid] = field(default_factory=list)


def parse_message(frame: bytes) -> Incoming:
    """Decode one message body (without its length prefix)."""
    if len(frame) > MAX_MESSAGE_BYTES:
        raise ProtocolError("message too large")
    message = Message()
    try:
        message.ParseFromString(frame)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ProtocolError(f"malformed Bitswap message: {exc}") from exc
    out = Incoming()
    entries = message.wantlist.entries
    if len(entries) + len(message.payload) + len(message.blocks) + len(message.blockPresences) > MAX_ENTRIES:
        raise ProtocolError("too many entries in one message")
    for entry in entries:
        cid = Cid.parse(entry.block)
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
        out.blocks.append((Cid.for_block(0, DAG_PB, data), bytes(data)))
    for presence in message.blockPresences:
        cid = Cid.parse(presence.cid)
        (out.haves if presence.type == Message.Have else out.dont_haves).append(cid)
    return out


def frame(message: Message) -> bytes:
    body = message.SerializeToString()
    return encode_uvarint(len(body)) + body


def want_message(cids: Sequence[Cid], *, want_have: bool = False, cancel: bool = False) -> bytes:
    message = Message()
    for cid in cids:
        entry = message.wantlist.entries.add()
        entry.block = cid.raw
        entry.priority = 1
        entry.cancel = cancel
        entry.wantType = Message.Wantlist.Have if want_have else Message.Wantlist.Block
        entry.sendDontHave = not cancel
    return frame(message)


def blocks_message(
    blocks: Sequence[tuple[Cid, bytes]], *, haves: Sequence[Cid] = (), dont_haves: Sequence[Cid] = ()
) -> bytes:
    message = Message()
    for cid, data in blocks:
        block = message.payload.add()
        block.prefix = cid.prefix()
        block.data = data
    for cid in haves:
        presence = message.blockPresences.add()
        presence.cid = cid.raw
        presence.type = Message.Have
    for cid in dont_haves:
        presence = message.blockPresences.add()
        presence.cid = cid.raw
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
            parsed = decode_uvarint(self._buffer, 0)
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
