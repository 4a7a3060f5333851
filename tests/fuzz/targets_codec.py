"""Fuzz targets of the byte-level codecs: varints, bounded CBOR, CIDs, dag-pb, UnixFS, Bitswap messages.

Where a decoder has one canonical spelling per value, the target also checks that re-encoding what it
accepted gives the input back (a decoder that accepts two spellings of one CID would let one block be
named twice).
"""

from __future__ import annotations

import functools
import hashlib

import cbor2

from p2p.bitswap.errors import ProtocolError
from p2p.bitswap.protocol import FrameReader, blocks_message, parse_message, want_message
from p2p.codec.cbor import REQUIRED, CborMap, loads_bounded
from p2p.codec.errors import CodecError
from p2p.codec.varint import (
    LENGTH_PREFIX,
    MULTIFORMATS,
    PROTOBUF,
    encode_uvarint,
    try_decode_uvarint,
)
from p2p.content.cid import CID, DAG_PB
from p2p.content.dagpb import PBLink, UnixFSData, decode_pbnode, decode_unixfs, encode_pbnode, encode_unixfs
from p2p.content.errors import ContentError, InvalidCIDError, MalformedBlockError
from p2p.content.reader import read_bytes
from p2p.content.unixfs import ImportOptions, import_bytes
from tests.fuzz.harness import accepting, chunks, target

_RULES = (MULTIFORMATS, PROTOBUF, LENGTH_PREFIX)


@functools.cache
def sample_cids() -> list[CID]:
    return [
        CID.compute(b"block one"),
        CID.compute(b"block two", DAG_PB),
        CID.compute(b"a CIDv0 block", DAG_PB, 0),
        CID(1, 0x71, bytes((0x13, 0x40)) + hashlib.sha512(b"x").digest()),  # dag-cbor, sha2-512
    ]


# -- varints ---------------------------------------------------------------------------------------


def _varint_seeds() -> list[bytes]:
    return [bytes([i]) + encode_uvarint(v) for i in range(3) for v in (0, 1, 127, 128, 300, (1 << 63) - 1)]


@target("varint", _varint_seeds, max_len=32)
def fuzz_varint(data: bytes) -> None:
    if not data:
        return
    rules = _RULES[data[0] % len(_RULES)]
    body = data[1:]
    with accepting(CodecError):
        parsed = try_decode_uvarint(body, rules=rules)
        if parsed is not None:
            value, end = parsed
            assert 0 <= value <= rules.max_value and 0 < end <= rules.max_bytes
            if rules.minimal:
                assert encode_uvarint(value) == body[:end], "a minimal varint has one spelling"


# -- CBOR -------------------------------------------------------------------------------------------


def _cbor_seeds() -> list[bytes]:
    return [
        cbor2.dumps({"a": 1, "b": "text", "c": b"\x00" * 4, "d": [1, 2, [3]], "e": {"f": True}, "g": 1.5}),
        cbor2.dumps([1, -1, 2**64 - 1, None, False]),
        cbor2.dumps({"a": 2**70, "b": -(2**70)}),
    ]


@target("cbor", _cbor_seeds)
def fuzz_cbor(data: bytes) -> None:
    """The bounded reader, then every typed getter on every key of the map it returns."""
    with accepting(CodecError):
        doc = CborMap(loads_bounded(data, max_bytes=64 << 10, what="fuzz"), what="fuzz")
        for key in list(doc)[:16]:
            if not isinstance(key, str):
                continue
            for getter in (
                doc.integer,
                doc.number,
                lambda k: doc.text(k, max_len=64),
                lambda k: doc.bytes_(k, max_len=64),
                doc.boolean,
                lambda k: doc.list_(k, max_len=8),
                lambda k: doc.map_(k, max_len=8),
            ):
                with accepting(CodecError):
                    getter(key)
        with accepting(CodecError):
            doc.text("absent", max_len=1, default=REQUIRED)


# -- CIDs --------------------------------------------------------------------------------------------


def _cid_binary_seeds() -> list[bytes]:
    return [cid.encode() for cid in sample_cids()]


@target("cid_binary", _cid_binary_seeds, max_len=160)
def fuzz_cid_binary(data: bytes) -> None:
    with accepting(InvalidCIDError):
        cid = CID.decode(data)
        assert cid.encode() == data, "a binary CID has one spelling"
        assert CID.parse(str(cid)) == cid


def _cid_text_seeds() -> list[bytes]:
    return [str(cid).encode() for cid in sample_cids()] + [b"z" + b"Q" * 40]


@target("cid_text", _cid_text_seeds, max_len=300)
def fuzz_cid_text(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    with accepting(InvalidCIDError):
        cid = CID.parse(text)
        assert CID.decode(cid.encode()) == cid


# -- dag-pb and UnixFS ---------------------------------------------------------------------------------


@functools.cache
def _dag_store() -> dict[CID, bytes]:
    """Blocks of small real DAGs (balanced layout, raw and dag-pb leaves) and one hand-made node."""
    _, store = import_bytes(bytes(range(256)) * 2, ImportOptions(chunk_size=64, links_per_node=3))
    _, more = import_bytes(b"x" * 100, ImportOptions(chunk_size=16, raw_leaves=False))
    store = store | more
    names, sizes = ("", "n", None, "\u00e9"), (1, None, 5, 2**40)
    links = [PBLink(cid, name, size) for cid, name, size in zip(sample_cids(), names, sizes, strict=True)]
    node = encode_pbnode(links, encode_unixfs(UnixFSData(2, b"data", 4 + 2**40 + 6, (1, 5, 2**40))))
    store[CID.compute(node, DAG_PB)] = node
    return store


def _dag_blocks() -> list[bytes]:
    return [block for cid, block in _dag_store().items() if cid.codec == DAG_PB]


def _dagpb_seeds() -> list[bytes]:
    return _dag_blocks()


@target("dagpb", _dagpb_seeds)
def fuzz_dagpb(data: bytes) -> None:
    with accepting(MalformedBlockError):
        node = decode_pbnode(data, max_links=64)
        assert len(node.links) <= 64


def _unixfs_seeds() -> list[bytes]:
    out = []
    for block in _dag_blocks():
        with accepting(MalformedBlockError):
            node = decode_pbnode(block)
            if node.data is not None:
                out.append(node.data)
    return [*out, encode_unixfs(UnixFSData(1)), bytes.fromhex("0802220310a001")]


@target("unixfs", _unixfs_seeds)
def fuzz_unixfs(data: bytes) -> None:
    with accepting(MalformedBlockError):
        meta = decode_unixfs(data, max_blocksizes=64)
        assert len(meta.blocksizes) <= 64


@target("unixfs_reader", _dagpb_seeds)
def fuzz_unixfs_reader(data: bytes) -> None:
    """The verifying file reader, with ``data`` as the root block and the seed DAGs' blocks as the store."""
    store = dict(_dag_store())
    root = CID.compute(data, DAG_PB)
    store[root] = data

    def get_block(cid: CID) -> bytes:
        block = store.get(cid) or store.get(CID(1, cid.codec, cid.multihash))
        if block is None:
            raise MalformedBlockError("not in the fuzz store")  # stands in for BlockNotFoundError
        return block

    with accepting(ContentError):
        read_bytes(root, get_block, max_size=1 << 20)


# -- Bitswap -------------------------------------------------------------------------------------------


def _bitswap_frames() -> list[bytes]:
    cids = [c for c in sample_cids() if c.hash_code == 0x12]
    return [
        want_message(cids),
        want_message(cids[:1], want_have=True),
        want_message(cids[1:], cancel=True),
        blocks_message(
            [(CID.compute(b"block one"), b"block one"), (CID.compute(b"v0", DAG_PB, 0), b"v0")],
            haves=cids[:1],
            dont_haves=cids[1:2],
        ),
    ]


def _strip_prefix(frame: bytes) -> bytes:
    parsed = try_decode_uvarint(frame, rules=LENGTH_PREFIX)
    assert parsed is not None
    return frame[parsed[1] :]


def _bitswap_seeds() -> list[bytes]:
    return [_strip_prefix(f) for f in _bitswap_frames()]


@target("bitswap_message", _bitswap_seeds)
def fuzz_bitswap_message(data: bytes) -> None:
    with accepting(ProtocolError):
        incoming = parse_message(data)
        for cid, block in incoming.blocks:
            assert cid.matches(block)


def _bitswap_stream_seeds() -> list[bytes]:
    return [b"\x05" + b"".join(_bitswap_frames())]


@target("bitswap_stream", _bitswap_stream_seeds, max_len=8192)
def fuzz_bitswap_stream(data: bytes) -> None:
    """Length-prefixed frames from a stream cut at arbitrary points (first byte: the cut sizes)."""
    if not data:
        return
    reader = FrameReader()
    with accepting(ProtocolError):
        for piece in chunks(data[1:], data[:1] * 3 + b"\x01"):
            for frame in reader.feed(piece):
                parse_message(frame)
