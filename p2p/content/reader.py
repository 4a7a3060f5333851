"""Reading UnixFS files back: a verifying, bounded reader for DAGs made by Kubo or by us.

:func:`read_file` reassembles a file from its root CID and a block getter, verifies every
block against its CID as it is read, decodes with the bounded codecs of :mod:`p2p.content.dagpb`,
and checks that sizes agree (``filesize`` against ``Data`` + ``blocksizes``, each child's bytes
against its ``blocksizes`` entry), so a lying DAG fails before it can feed wrong bytes or run away.

It reads what Kubo's importers write (raw or dag-pb leaves, CIDv0 or v1 links, any layout: it
follows links and blocksizes, data in internal nodes too) but no directories, symlinks or HAMT
shards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from p2p.content.cid import CID, DAG_PB, RAW
from p2p.content.dagpb import (
    DEFAULT_MAX_LINKS,
    MAX_BLOCK_SIZE,
    UNIXFS_FILE,
    UNIXFS_RAW,
    PBNode,
    UnixFSData,
    decode_pbnode,
    decode_unixfs,
)
from p2p.content.errors import FileTooLargeError, MalformedBlockError, UnsupportedError

MAX_DEPTH = 32
"""Deepest DAG the reader follows. 174**5 leaves of 256 KiB are already ~40 PB."""

BlockGetter = Callable[[CID], bytes]
"""Returns the bytes of a block (unverified: the reader checks them against the CID)."""


@dataclass(frozen=True, slots=True)
class _Reader:
    """Depth-first reassembly of one file; every limit is fixed per read."""

    get_block: BlockGetter
    max_links: int
    max_depth: int

    def fetch(self, cid: CID) -> bytes:
        if cid.codec not in (RAW, DAG_PB):
            raise UnsupportedError(f"{cid} has codec {cid.codec_name}; a UnixFS file needs raw or dag-pb")
        block = self.get_block(cid)
        if len(block) > MAX_BLOCK_SIZE:
            raise MalformedBlockError(f"block {cid} of {len(block)} bytes exceeds {MAX_BLOCK_SIZE}")
        cid.verify(block)
        return block

    def decode(self, cid: CID, block: bytes) -> tuple[PBNode, UnixFSData, int]:
        """Decode a dag-pb file node and check its sizes agree; return it and its file size."""
        node = decode_pbnode(block, max_links=self.max_links)
        if node.data is None:
            raise MalformedBlockError(f"dag-pb node {cid} carries no UnixFS data")
        meta = decode_unixfs(node.data, max_blocksizes=self.max_links)
        if meta.type not in (UNIXFS_FILE, UNIXFS_RAW):
            raise UnsupportedError(f"{cid} is a UnixFS node of type {meta.type}, not a file")
        if len(meta.blocksizes) != len(node.links):
            raise MalformedBlockError(
                f"{cid} has {len(node.links)} links but {len(meta.blocksizes)} blocksizes"
            )
        declared = (len(meta.data) if meta.data else 0) + sum(meta.blocksizes)
        if meta.filesize is not None and meta.filesize != declared:
            raise MalformedBlockError(f"{cid} says filesize {meta.filesize} but holds {declared} bytes")
        return node, meta, declared

    def node(self, cid: CID, block: bytes, depth: int, expected: int) -> Iterator[bytes]:
        """Yield the file bytes under ``cid`` (whose verified block is ``block``)."""
        if cid.codec == RAW:
            if len(block) != expected:
                raise MalformedBlockError(
                    f"raw block {cid} has {len(block)} bytes, its parent says {expected}"
                )
            if block:
                yield block
            return
        node, meta, declared = self.decode(cid, block)
        if declared != expected:
            raise MalformedBlockError(f"{cid} holds {declared} bytes, its parent says {expected}")
        if node.links and depth >= self.max_depth:
            raise MalformedBlockError(f"DAG deeper than {self.max_depth} layers at {cid}")
        if meta.data:
            yield meta.data
        for link, size in zip(node.links, meta.blocksizes, strict=True):
            yield from self.node(link.cid, self.fetch(link.cid), depth + 1, size)


def read_file(
    root: CID,
    get_block: BlockGetter,
    *,
    max_size: int | None = None,
    max_links: int = DEFAULT_MAX_LINKS,
    max_depth: int = MAX_DEPTH,
) -> Iterator[bytes]:
    """Yield the bytes of the UnixFS file ``root`` in order, fetching blocks with ``get_block``.

    Every block is checked against its CID before it is decoded or its bytes are yielded, so the
    getter may be untrusted (a peer, a disk). Each child must hold exactly the bytes its parent's
    ``blocksizes`` promise. ``max_size`` refuses a file that declares more bytes than that, after
    fetching only its root. Raises :class:`BlockVerificationError`, :class:`MalformedBlockError`,
    :class:`UnsupportedError`, :class:`FileTooLargeError` or whatever ``get_block`` raises (e.g.
    :class:`BlockNotFoundError`).
    """
    reader = _Reader(get_block, max_links, max_depth)
    block = reader.fetch(root)
    size = len(block) if root.codec == RAW else reader.decode(root, block)[2]
    if max_size is not None and size > max_size:
        raise FileTooLargeError(f"file {root} has {size} bytes, more than the allowed {max_size}")
    yield from reader.node(root, block, 0, size)


def read_bytes(root: CID, get_block: BlockGetter, *, max_size: int | None = None) -> bytes:
    """The whole file ``root`` as one ``bytes`` object (see :func:`read_file`)."""
    return b"".join(read_file(root, get_block, max_size=max_size))


def export_file(
    root: CID, get_block: BlockGetter, dest: str | os.PathLike[str], *, max_size: int | None = None
) -> int:
    """Write the file ``root`` to ``dest`` atomically (temporary file, fsync, rename); return its size.

    A failure part-way (a bad block, a missing block) leaves ``dest`` untouched.
    """
    dest_path = Path(dest)
    tmp = dest_path.with_name(f".{dest_path.name}.{uuid.uuid4().hex}.tmp")
    size = 0
    try:
        with open(tmp, "wb") as out:
            for piece in read_file(root, get_block, max_size=max_size):
                out.write(piece)
                size += len(piece)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size
