"""Progress of model fetches, as the API reports it and the CLI draws it.

A fetch goes through the phases ``providers`` (finding where the content is), ``manifest``
(fetching and verifying the signed manifest), ``blocks`` (fetching the files' blocks), ``verifying``
(reassembling every file from verified blocks and checking its size and sha256) and ``installing``
(moving the files into place and recording the model), then ends ``done`` or ``failed``.

Bytes are file bytes: the total is the sum of the manifest's file sizes, and a block counts for
the file bytes it carries (a raw leaf its length, a dag-pb node its UnixFS data). Bytes already in
the block store when the fetch starts count as done from the start, so a resumed fetch starts where
the last one stopped. A block that occurs several times in a file is fetched once but its bytes
count each time, which is settled when each file completes (its bytes are then exactly its size),
so ``bytes_done`` only grows and ends equal to ``bytes_total``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from p2p.content import CID, DAG_PB, RAW, BlockStore, ContentError
from p2p.content.dagpb import decode_pbnode, decode_unixfs

KEEP_FINISHED = 32
"""Finished fetches remembered for ``GET /v1/models/fetches/{cid}``."""


def file_bytes(cid: CID, block: bytes) -> int:
    """File bytes carried by one block of a UnixFS file (0 for a block that is not one)."""
    if cid.codec == RAW:
        return len(block)
    if cid.codec != DAG_PB:
        return 0
    try:
        node = decode_pbnode(block)
        return len(decode_unixfs(node.data).data or b"") if node.data is not None else 0
    except ContentError:
        return 0


def present_bytes(blocks: BlockStore, root: CID, size: int) -> int:
    """File bytes of the UnixFS file ``root`` (of ``size`` bytes) already in ``blocks``.

    Reads only the dag-pb nodes (small); raw leaves are checked for presence and counted with the
    size their parent declares. Blocking: run it in a worker thread.
    """
    if not blocks.has(root):
        return 0
    if root.codec == RAW:
        return size
    try:
        node = decode_pbnode(blocks.get(root))
        meta = decode_unixfs(node.data) if node.data is not None else None
    except ContentError:
        return 0
    if meta is None or len(meta.blocksizes) != len(node.links):
        return 0
    done = len(meta.data or b"")
    for link, child_size in zip(node.links, meta.blocksizes, strict=True):
        done += present_bytes(blocks, link.cid, child_size)
    return min(done, size)


@dataclass
class FetchProgress:
    """One fetch's progress. Mutated by the fetch on the trio loop (phases also from its thread)."""

    cid: str
    started_at: float = field(default_factory=time.time)
    phase: str = "providers"
    blocks_done: int = 0
    finished_at: float | None = None
    error: str | None = None
    _sizes: list[int] = field(default_factory=list)
    _present: list[int] = field(default_factory=list)
    _current: int = -1
    _current_bytes: int = 0

    def start_files(self, sizes: Sequence[int], present: Sequence[int]) -> None:
        """The manifest is known: the files' sizes and the bytes of each already stored."""
        self._sizes = list(sizes)
        self._present = [min(p, s) for p, s in zip(present, sizes, strict=True)]
        self._current = -1
        self.phase = "blocks"

    def begin_file(self, index: int) -> None:
        self._current = index
        self._current_bytes = 0

    def block_stored(self, nbytes: int) -> None:
        """A block was fetched and stored; ``nbytes`` file bytes (counted once the manifest is known)."""
        self.blocks_done += 1
        if self._current >= 0:
            self._current_bytes += nbytes

    def file_done(self, index: int) -> None:
        """File ``index`` is complete in the block store: all its bytes are done."""
        self._present[index] = self._sizes[index]
        if index == self._current:
            self._current = -1
            self._current_bytes = 0

    def finish(self, error: str | None = None) -> None:
        self.phase = "failed" if error else "done"
        self.error = error
        self.finished_at = time.time()

    @property
    def bytes_total(self) -> int | None:
        """Sum of the file sizes; None until the manifest is known."""
        return sum(self._sizes) if self._sizes else None

    @property
    def bytes_done(self) -> int:
        done = sum(self._present)
        if self._current >= 0:
            current = self._present[self._current]
            done += min(current + self._current_bytes, self._sizes[self._current]) - current
        return done

    def snapshot(self) -> dict[str, Any]:
        return {
            "cid": self.cid,
            "phase": self.phase,
            "running": self.finished_at is None,
            "blocks_done": self.blocks_done,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "files": len(self._sizes),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
        }


class FetchTracker:
    """The fetches in progress, and the last :data:`KEEP_FINISHED` finished ones."""

    def __init__(self, keep: int = KEEP_FINISHED) -> None:
        self._keep = keep
        self._running: dict[str, FetchProgress] = {}
        self._finished: OrderedDict[str, FetchProgress] = OrderedDict()

    def begin(self, cid: str) -> FetchProgress:
        progress = FetchProgress(cid)
        self._running[cid] = progress
        self._finished.pop(cid, None)
        return progress

    def end(self, progress: FetchProgress, error: str | None = None) -> None:
        progress.finish(error)
        if self._running.get(progress.cid) is progress:
            del self._running[progress.cid]
        self._finished[progress.cid] = progress
        while len(self._finished) > self._keep:
            self._finished.popitem(last=False)

    def running(self) -> list[dict[str, Any]]:
        return [p.snapshot() for p in self._running.values()]

    def get(self, cid: str) -> dict[str, Any] | None:
        progress = self._running.get(cid) or self._finished.get(cid)
        return None if progress is None else progress.snapshot()
