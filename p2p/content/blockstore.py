"""An on-disk, size-bounded, verifying block store with recursive pins and garbage collection.

Layout under ``root``::

    blocks/<xy>/<cid>      one file per block, named by its CIDv1 (base32), sharded by the two
                           characters before the last one of the name (Kubo's flatfs
                           "next-to-last/2" scheme: those carry hash bits, the last one only a few)
    pins.json              {"version": 1, "pins": ["bafy...", ...]}: recursively pinned roots

Why it is built this way:

- Blocks are keyed by CIDv1, so a CIDv0 and a CIDv1 of the same dag-pb block are one file.
- Writes are atomic: a temporary file in the same directory, ``rename`` over the final name. With
  ``fsync=True`` every block is also flushed (file and directory), which caps a fetch at tens of
  MB/s; with ``fsync=False`` (what the node uses) the caller flushes once with :meth:`sync` before
  it relies on the blocks (a model is made loadable only after that). Either way a block torn by a
  crash fails verification on read, is deleted and fetched again; temporaries are swept at open.
- Content is checked against the CID both when a block is stored (a wrong block is never kept)
  and when it is read (disks and people tamper). A block that no longer matches is deleted and
  :class:`CorruptBlockError` is raised, so the caller can fetch it again.
- ``max_bytes`` bounds the sum of block sizes (not file-system overhead); a put past it raises
  :class:`StoreFullError` instead of filling the disk.
- Pins are roots; everything reachable from a pinned root through dag-pb links survives
  :meth:`BlockStore.gc`, which deletes every other block. A root can be pinned before its blocks
  arrive, which protects a download in progress from a concurrent GC; :meth:`BlockStore.missing`
  says when the DAG is complete. Pins are JSON (never pickle), written atomically.

The API is synchronous and thread-safe (one lock; GC holds it throughout so no block it is
about to judge appears meanwhile). An async service runs these calls in a worker thread. One
process owns a store directory at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from p2p.content.cid import CID, DAG_PB
from p2p.content.dagpb import DEFAULT_MAX_LINKS, MAX_BLOCK_SIZE, decode_pbnode
from p2p.content.errors import (
    BlockNotFoundError,
    BlockStoreError,
    BlockVerificationError,
    CorruptBlockError,
    InvalidCIDError,
    MalformedBlockError,
    StoreFullError,
)

PINS_FILE = "pins.json"
PINS_VERSION = 1
MAX_PINS_FILE_BYTES = 16 * 1024 * 1024
_TMP_SUFFIX = ".tmp"


def _key(cid: CID) -> str:
    return str(cid.to_v1())


class BlockStore:
    """Blocks on disk by CID; see the module docstring for the guarantees."""

    def __init__(self, root: str | os.PathLike[str], *, max_bytes: int, fsync: bool = True) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._fsync = fsync
        self._blocks = self.root / "blocks"
        self._pins_path = self.root / PINS_FILE
        self._lock = threading.RLock()
        try:
            self._blocks.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BlockStoreError(f"cannot create block store at {self.root}: {exc}") from exc
        self._used = self._scan()
        self._pins = self._load_pins()

    # -- paths and bookkeeping ------------------------------------------------------------------

    def _path(self, cid: CID) -> Path:
        key = _key(cid)
        return self._blocks / key[-3:-1] / key

    def _scan(self) -> int:
        """Total block bytes on disk; removes temporaries left by a crash."""
        used = 0
        for shard in self._blocks.iterdir():
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard):
                if entry.name.endswith(_TMP_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    used += entry.stat(follow_symlinks=False).st_size
        return used

    def _sync_dir(self, path: Path, *, force: bool = False) -> None:
        if not (self._fsync or force):
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_atomic(self, path: Path, data: bytes, *, durable: bool = False) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self._fsync or durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        self._sync_dir(path.parent, force=durable)

    # -- blocks ---------------------------------------------------------------------------------

    def size(self) -> int:
        """Bytes of all stored blocks."""
        with self._lock:
            return self._used

    def has(self, cid: CID) -> bool:
        """Whether the block is stored (not verified; :meth:`get` verifies)."""
        return self._path(cid).is_file()

    def put(self, cid: CID, data: bytes, *, verified: bool = False) -> bool:
        """Store ``data`` as ``cid`` after checking that it hashes to ``cid`` (skipped when the
        caller has just ``verified`` exactly that, e.g. a fetcher that hashed it on arrival).

        Returns False if the block was already stored. Raises :class:`BlockVerificationError`
        for wrong content, :class:`MalformedBlockError` for a block larger than
        :data:`~p2p.content.dagpb.MAX_BLOCK_SIZE` and :class:`StoreFullError` when the store's
        bound would be exceeded.
        """
        if len(data) > MAX_BLOCK_SIZE:
            raise MalformedBlockError(f"block of {len(data)} bytes exceeds {MAX_BLOCK_SIZE}")
        if not verified:
            cid.verify(data)
        path = self._path(cid)
        with self._lock:
            if path.is_file():
                return False
            if self._used + len(data) > self.max_bytes:
                raise StoreFullError(
                    f"storing {cid} ({len(data)} bytes) would exceed the block store's bound of "
                    f"{self.max_bytes} bytes ({self._used} in use); unpin content and run gc"
                )
            if not path.parent.is_dir():
                path.parent.mkdir(exist_ok=True)
                self._sync_dir(path.parent.parent)
            self._write_atomic(path, data)
            self._used += len(data)
        return True

    def sync(self) -> None:
        """Flush every block written so far to stable storage (one call instead of one per block)."""
        os.sync()

    def get(self, cid: CID) -> bytes:
        """The verified block ``cid``.

        Raises :class:`BlockNotFoundError` if it is not stored and :class:`CorruptBlockError`
        (after deleting the file) if the file on disk no longer matches the CID.
        """
        path = self._path(cid)
        try:
            with open(path, "rb") as file:
                data = file.read(MAX_BLOCK_SIZE + 1)
        except FileNotFoundError:
            raise BlockNotFoundError(f"block {cid} is not in the store") from None
        if len(data) > MAX_BLOCK_SIZE or not cid.matches(data):
            with self._lock:
                self._remove(path)
            raise CorruptBlockError(
                f"block {cid} on disk ({path}) does not match its CID; "
                "it was removed and must be fetched again"
            )
        return data

    def _remove(self, path: Path) -> int:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        self._used -= size
        return size

    def delete(self, cid: CID) -> int:
        """Remove a block; return the bytes freed (0 if absent). A pinned root cannot be deleted."""
        with self._lock:
            if cid.to_v1() in self._pins:
                raise BlockStoreError(f"{cid} is pinned; unpin it first")
            return self._remove(self._path(cid))

    def cids(self) -> Iterator[CID]:
        """The CIDs of all stored blocks (CIDv1), in no particular order."""
        for shard in self._blocks.iterdir():
            if shard.is_dir():
                for entry in os.scandir(shard):
                    if not entry.name.endswith(_TMP_SUFFIX):
                        with contextlib.suppress(InvalidCIDError):
                            yield CID.parse(entry.name)

    # -- pins and GC ----------------------------------------------------------------------------

    def _load_pins(self) -> set[CID]:
        try:
            with open(self._pins_path, "rb") as file:
                raw = file.read(MAX_PINS_FILE_BYTES + 1)
        except FileNotFoundError:
            return set()
        if len(raw) > MAX_PINS_FILE_BYTES:
            raise BlockStoreError(f"{self._pins_path} is larger than {MAX_PINS_FILE_BYTES} bytes")
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("version") != PINS_VERSION:
                raise ValueError(f"expected an object with version {PINS_VERSION}")
            entries = doc.get("pins")
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                raise ValueError("'pins' must be a list of CID strings")
            return {CID.parse(entry).to_v1() for entry in entries}
        except (ValueError, InvalidCIDError) as exc:
            raise BlockStoreError(f"malformed pin file {self._pins_path}: {exc}") from exc

    def _save_pins(self) -> None:
        doc = {"version": PINS_VERSION, "pins": sorted(str(c) for c in self._pins)}
        # Always flushed: losing a pin could let gc collect a download in progress.
        self._write_atomic(self._pins_path, json.dumps(doc, indent=1).encode() + b"\n", durable=True)

    def pins(self) -> frozenset[CID]:
        """The recursively pinned roots (as CIDv1)."""
        with self._lock:
            return frozenset(self._pins)

    def is_pinned(self, cid: CID) -> bool:
        with self._lock:
            return cid.to_v1() in self._pins

    def pin(self, cid: CID) -> bool:
        """Pin ``cid`` and everything reachable from it; return False if it was pinned already.

        The blocks need not be present yet (pin first, then fetch, and GC will not race you).
        """
        with self._lock:
            if cid.to_v1() in self._pins:
                return False
            self._pins.add(cid.to_v1())
            self._save_pins()
            return True

    def unpin(self, cid: CID) -> bool:
        """Remove the pin on ``cid``; return False if it was not pinned. Blocks go at the next GC."""
        with self._lock:
            if cid.to_v1() not in self._pins:
                return False
            self._pins.discard(cid.to_v1())
            self._save_pins()
            return True

    def _links(self, cid: CID) -> tuple[CID, ...] | None:
        """Children of a stored block (None if it is absent or corrupt)."""
        if cid.codec != DAG_PB:
            return () if self.has(cid) else None
        try:
            block = self.get(cid)
        except (BlockNotFoundError, BlockVerificationError):
            return None
        try:
            node = decode_pbnode(block, max_links=DEFAULT_MAX_LINKS)
        except MalformedBlockError:
            return ()  # kept because pinned, but it leads nowhere
        return tuple(link.cid.to_v1() for link in node.links)

    def _walk(self, roots: set[CID]) -> tuple[set[CID], list[CID]]:
        """Blocks reachable from ``roots`` that are present, and those that are missing."""
        seen: set[CID] = set()
        present: set[CID] = set()
        missing: list[CID] = []
        stack = sorted(roots, key=str)
        while stack:
            cid = stack.pop()
            if cid in seen:
                continue
            seen.add(cid)
            links = self._links(cid)
            if links is None:
                missing.append(cid)
                continue
            present.add(cid)
            stack.extend(reversed(links))
        return present, missing

    def missing(self, root: CID) -> list[CID]:
        """Blocks of the DAG under ``root`` that are not (validly) stored; empty when complete.

        Only blocks whose parents are present can be named, so fetch, call again, until empty.
        """
        with self._lock:
            return self._walk({root.to_v1()})[1]

    def gc(self) -> int:
        """Delete every block not reachable from a pinned root; return the bytes freed."""
        with self._lock:
            live, _ = self._walk(set(self._pins))
            freed = 0
            for cid in list(self.cids()):
                if cid not in live:
                    freed += self._remove(self._path(cid))
            return freed
