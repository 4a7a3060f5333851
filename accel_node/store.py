"""The node's SQLite store: the only module that opens the database file.

- WAL journal, so readers never block the writer and a crash loses at most the last transaction.
- Versioned migrations keyed on ``PRAGMA user_version``: each entry of :data:`MIGRATIONS` runs once,
  in order, inside a transaction, and a database newer than this code is refused.
- :class:`AsyncStore` runs every call on a worker thread through a one-slot limiter, so the event
  loop never waits on disk and the single connection is never used by two threads at once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlite_utils
import trio

from accel_node.errors import StoreError

P = ParamSpec("P")
T = TypeVar("T")


def _migration_1(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("peers").create(
        {
            "peer_id": str,
            "addrs": str,  # JSON list of multiaddr strings
            "first_seen": float,
            "last_seen": float,
            "latency_ms": float,
            "source": str,  # how we learned of the peer: dial, inbound, bootstrap, mdns
        },
        pk="peer_id",
        not_null={"addrs", "first_seen", "last_seen", "source"},
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_migration_1]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class PeerRecord:
    """A peer this node has seen, as kept in the store."""

    peer_id: str
    addrs: list[str]
    first_seen: float
    last_seen: float
    latency_ms: float | None
    source: str


class Store:
    """Synchronous access to the database; use :class:`AsyncStore` from async code."""

    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        self._conn = conn
        self.db = sqlite_utils.Database(conn)
        self._migrate()

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {current}, newer than this accel-node "
                f"understands ({SCHEMA_VERSION}); upgrade accel-node"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            try:
                with self._conn:  # one transaction per migration
                    self._conn.execute("BEGIN IMMEDIATE")
                    MIGRATIONS[version - 1](self.db)
                    self._conn.execute(f"PRAGMA user_version={version}")
            except sqlite3.Error as exc:
                raise StoreError(f"migrating store {self.path} to version {version} failed: {exc}") from exc

    def upsert_peer(
        self, peer_id: str, addrs: list[str], *, source: str, latency_ms: float | None = None
    ) -> None:
        now = time.time()
        table = self.db.table("peers")
        existing = self.get_peer(peer_id)
        row: dict[str, Any] = {
            "peer_id": peer_id,
            "addrs": json.dumps(addrs or (existing.addrs if existing else [])),
            "first_seen": existing.first_seen if existing else now,
            "last_seen": now,
            "latency_ms": latency_ms
            if latency_ms is not None
            else (existing.latency_ms if existing else None),
            "source": existing.source if existing else source,
        }
        table.upsert(row, pk="peer_id")

    def get_peer(self, peer_id: str) -> PeerRecord | None:
        rows = list(self.db.query("SELECT * FROM peers WHERE peer_id = ?", [peer_id]))
        return _peer(rows[0]) if rows else None

    def list_peers(self) -> list[PeerRecord]:
        return [_peer(row) for row in self.db.query("SELECT * FROM peers ORDER BY last_seen DESC")]

    def set_meta(self, key: str, value: str) -> None:
        self.db.table("meta").upsert({"key": key, "value": value}, pk="key")

    def get_meta(self, key: str) -> str | None:
        rows = list(self.db.query("SELECT value FROM meta WHERE key = ?", [key]))
        return str(rows[0]["value"]) if rows else None

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close the connection."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._conn.close()


def _peer(row: dict[str, Any]) -> PeerRecord:
    return PeerRecord(
        peer_id=row["peer_id"],
        addrs=list(json.loads(row["addrs"])),
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        latency_ms=row["latency_ms"],
        source=row["source"],
    )


class AsyncStore:
    """The store for async code: every call runs on a worker thread, one call at a time."""

    def __init__(self, store: Store) -> None:
        self.sync = store
        self._limiter = trio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "NORMAL") -> AsyncStore:
        store = await trio.to_thread.run_sync(lambda: Store(path, synchronous=synchronous))
        return cls(store)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._limiter)

    async def upsert_peer(
        self, peer_id: str, addrs: list[str], *, source: str, latency_ms: float | None = None
    ) -> None:
        await self.call(self.sync.upsert_peer, peer_id, addrs, source=source, latency_ms=latency_ms)

    async def list_peers(self) -> list[PeerRecord]:
        return await self.call(self.sync.list_peers)

    async def get_peer(self, peer_id: str) -> PeerRecord | None:
        return await self.call(self.sync.get_peer, peer_id)

    async def set_meta(self, key: str, value: str) -> None:
        await self.call(self.sync.set_meta, key, value)

    async def get_meta(self, key: str) -> str | None:
        return await self.call(self.sync.get_meta, key)

    async def close(self) -> None:
        """Flush and close; shielded, so that shutdown cannot interrupt the checkpoint."""
        with trio.CancelScope(shield=True):
            await self.call(self.sync.close)
