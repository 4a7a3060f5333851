"""Minimal, bounded codecs for the two protobuf schemas UnixFS files use: dag-pb and UnixFS ``Data``.

dag-pb (multicodec 0x70) is the MerkleDAG node format::

    message PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
    message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }

The canonical encoding written by go-merkledag / go-codec-dagpb (and required by the IPLD dag-pb
spec) puts every ``Links`` entry (field 2) *before* ``Data`` (field 1), against protobuf's usual
field-number order. That is a historical accident of go-ipfs's hand-tuned encoder, but CIDs hash
the exact bytes, so an encoder that wrote ``Data`` first would produce different CIDs from Kubo
for the very same DAG. The decoder is as strict as the spec's reference decoders: links before
data, link fields in order ``Hash, Name, Tsize``, no duplicates, no unknown fields.

UnixFS ``Data`` (carried in ``PBNode.Data``) says what the node is::

    message Data {
      required DataType Type = 1;      // Raw=0 Directory=1 File=2 Metadata=3 Symlink=4 HAMTShard=5
      optional bytes Data = 2;         // file bytes held in this node itself
      optional uint64 filesize = 3;    // bytes of file below (and in) this node
      repeated uint64 blocksizes = 4;  // file bytes under each link, in link order (unpacked)
      optional uint64 hashType = 5; optional uint64 fanout = 6;
      optional uint32 mode = 7; optional UnixTime mtime = 8;
    }

That one is ordinary protobuf (go-unixfs marshals it with generated code in field-number order),
so the decoder accepts any order, packed or unpacked ``blocksizes``, and skips unknown fields, but
bounds the number of entries and every length. Hand-written codecs (instead of the ``protobuf``
runtime) let every size be checked before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from p2p.codec.errors import VarintError
from p2p.codec.varint import PROTOBUF, decode_uvarint, encode_uvarint
from p2p.content.cid import CID
from p2p.content.errors import InvalidCIDError, MalformedBlockError

MAX_BLOCK_SIZE = 1024 * 1024 + 4096
"""Largest block accepted for decoding or storing: a 1 MiB chunk (Kubo's own limit for a leaf)
plus room for the dag-pb/UnixFS framing around it."""
DEFAULT_MAX_LINKS = 1024
"""Largest number of links per node accepted by readers. Kubo's balanced and trickle layouts use
174; js-ipfs/ipfs-car style importers use up to 1024. The block size bound caps it anyway."""

UNIXFS_RAW = 0
UNIXFS_DIRECTORY = 1
UNIXFS_FILE = 2
UNIXFS_METADATA = 3
UNIXFS_SYMLINK = 4
UNIXFS_HAMT_SHARD = 5

_WIRE_VARINT = 0
_WIRE_I64 = 1
_WIRE_LEN = 2
_WIRE_I32 = 5


# -- protobuf primitives --------------------------------------------------------------------------


def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    try:
        return decode_uvarint(buf, pos, end=end, rules=PROTOBUF)
    except VarintError as exc:
        raise MalformedBlockError(f"bad protobuf varint: {exc}") from exc


def _read_key(buf: memoryview, pos: int, end: int) -> tuple[int, int, int]:
    key, pos = _read_varint(buf, pos, end)
    field, wire = key >> 3, key & 7
    if field == 0:
        raise MalformedBlockError("protobuf field number 0")
    return field, wire, pos


def _read_len(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    """Read a length prefix and return ``(start, stop)`` of the bytes it covers."""
    length, pos = _read_varint(buf, pos, end)
    if length > end - pos:
        raise MalformedBlockError(f"protobuf length {length} runs past the end of its message")
    return pos, pos + length


def _skip(buf: memoryview, wire: int, pos: int, end: int) -> int:
    if wire == _WIRE_VARINT:
        return _read_varint(buf, pos, end)[1]
    if wire == _WIRE_LEN:
        return _read_len(buf, pos, end)[1]
    width = {_WIRE_I64: 8, _WIRE_I32: 4}.get(wire)
    if width is None:
        raise MalformedBlockError(f"unsupported protobuf wire type {wire}")
    if pos + width > end:
        raise MalformedBlockError("truncated fixed-width protobuf field")
    return pos + width


def _len_field(field: int, payload: bytes) -> bytes:
    return encode_uvarint(field << 3 | _WIRE_LEN) + encode_uvarint(len(payload)) + payload


def _varint_field(field: int, value: int) -> bytes:
    return encode_uvarint(field << 3 | _WIRE_VARINT) + encode_uvarint(value)


# -- dag-pb ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PBLink:
    """One dag-pb link. Kubo's importer writes ``name=""`` and the child's cumulative ``tsize``."""

    cid: CID
    name: str | None = ""
    tsize: int | None = None


@dataclass(frozen=True, slots=True)
class PBNode:
    """A decoded dag-pb node."""

    links: tuple[PBLink, ...]
    data: bytes | None


def encode_pbnode(links: Sequence[PBLink], data: bytes | None) -> bytes:
    """Encode a dag-pb node in canonical form (links first, then data), byte-identical to Kubo."""
    parts = []
    for link in links:  # hot in the importer: keys written as literal bytes
        cid = link.cid.encode()
        body = b"\x0a" + encode_uvarint(len(cid)) + cid  # Hash = 1
        if link.name is not None:
            name = link.name.encode("utf-8")
            body += b"\x12" + encode_uvarint(len(name)) + name  # Name = 2
        if link.tsize is not None:
            body += b"\x18" + encode_uvarint(link.tsize)  # Tsize = 3
        parts.append(b"\x12" + encode_uvarint(len(body)) + body)  # Links = 2
    if data is not None:
        parts.append(_len_field(1, data))
    return b"".join(parts)


def _decode_link(buf: memoryview, pos: int, end: int) -> PBLink:
    cid: CID | None = None
    name: str | None = None
    tsize: int | None = None
    last_field = 0
    while pos < end:
        field, wire, pos = _read_key(buf, pos, end)
        if field <= last_field:
            raise MalformedBlockError("dag-pb link fields out of order or duplicated")
        last_field = field
        if field == 1 and wire == _WIRE_LEN:
            start, pos = _read_len(buf, pos, end)
            try:
                cid = CID.decode(buf[start:pos])
            except InvalidCIDError as exc:
                raise MalformedBlockError(f"dag-pb link hash is not a CID: {exc}") from exc
        elif field == 2 and wire == _WIRE_LEN:
            start, pos = _read_len(buf, pos, end)
            try:
                name = bytes(buf[start:pos]).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedBlockError("dag-pb link name is not UTF-8") from exc
        elif field == 3 and wire == _WIRE_VARINT:
            tsize, pos = _read_varint(buf, pos, end)
        else:
            raise MalformedBlockError(f"unexpected dag-pb link field {field} (wire type {wire})")
    if cid is None:
        raise MalformedBlockError("dag-pb link without a hash")
    return PBLink(cid, name, tsize)


def decode_pbnode(block: bytes | memoryview, *, max_links: int = DEFAULT_MAX_LINKS) -> PBNode:
    """Decode a dag-pb block strictly, refusing more than ``max_links`` links or oversize input."""
    if len(block) > MAX_BLOCK_SIZE:
        raise MalformedBlockError(f"dag-pb block of {len(block)} bytes exceeds {MAX_BLOCK_SIZE}")
    buf = memoryview(block)
    end = len(buf)
    pos = 0
    links: list[PBLink] = []
    data: bytes | None = None
    while pos < end:
        field, wire, pos = _read_key(buf, pos, end)
        if wire != _WIRE_LEN:
            raise MalformedBlockError(f"dag-pb field {field} has wire type {wire}, expected 2")
        start, pos = _read_len(buf, pos, end)
        if data is not None:
            raise MalformedBlockError("dag-pb node has fields after Data (links must come first)")
        if field == 1:
            data = bytes(buf[start:pos])
        elif field == 2:
            if len(links) >= max_links:
                raise MalformedBlockError(f"dag-pb node has more than {max_links} links")
            links.append(_decode_link(buf, start, pos))
        else:
            raise MalformedBlockError(f"unexpected dag-pb node field {field}")
    return PBNode(tuple(links), data)


# -- UnixFS Data -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnixFSData:
    """The fields of a UnixFS ``Data`` message that reading a file needs."""

    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()


def encode_unixfs(node: UnixFSData) -> bytes:
    """Encode UnixFS ``Data`` the way go-unixfs does: field-number order, unpacked ``blocksizes``."""
    parts = [_varint_field(1, node.type)]
    if node.data is not None:
        parts.append(_len_field(2, node.data))
    if node.filesize is not None:
        parts.append(_varint_field(3, node.filesize))
    parts.extend(_varint_field(4, size) for size in node.blocksizes)
    return b"".join(parts)


def _read_blocksizes(buf: memoryview, wire: int, pos: int, end: int, *, out: list[int], limit: int) -> int:
    """Append one (unpacked) or several (packed) ``blocksizes`` entries; bounded by ``limit``."""
    stop = end
    if wire == _WIRE_LEN:
        pos, stop = _read_len(buf, pos, end)
    while pos < stop:
        value, pos = _read_varint(buf, pos, stop)
        out.append(value)
        if len(out) > limit:
            raise MalformedBlockError(f"UnixFS node has more than {limit} blocksizes")
        if wire == _WIRE_VARINT:
            break
    return pos


def decode_unixfs(data: bytes | memoryview, *, max_blocksizes: int = DEFAULT_MAX_LINKS) -> UnixFSData:
    """Decode UnixFS ``Data`` (liberal about order and unknown fields, strict about bounds)."""
    if len(data) > MAX_BLOCK_SIZE:
        raise MalformedBlockError(f"UnixFS data of {len(data)} bytes exceeds {MAX_BLOCK_SIZE}")
    buf = memoryview(data)
    end = len(buf)
    pos = 0
    node_type: int | None = None
    payload: bytes | None = None
    filesize: int | None = None
    blocksizes: list[int] = []
    while pos < end:
        field, wire, pos = _read_key(buf, pos, end)
        if field == 1 and wire == _WIRE_VARINT:
            node_type, pos = _read_varint(buf, pos, end)
        elif field == 2 and wire == _WIRE_LEN:
            start, pos = _read_len(buf, pos, end)
            payload = bytes(buf[start:pos])
        elif field == 3 and wire == _WIRE_VARINT:
            filesize, pos = _read_varint(buf, pos, end)
        elif field == 4 and wire in (_WIRE_VARINT, _WIRE_LEN):
            pos = _read_blocksizes(buf, wire, pos, end, out=blocksizes, limit=max_blocksizes)
        elif 1 <= field <= 4:
            raise MalformedBlockError(f"UnixFS field {field} has the wrong wire type {wire}")
        else:
            pos = _skip(buf, wire, pos, end)
    if node_type is None:
        raise MalformedBlockError("UnixFS data without a Type")
    return UnixFSData(node_type, payload, filesize, tuple(blocksizes))
