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


def _migration_2(db: sqlite_utils.Database) -> None:
    peers = db.table("peers")
    for column, kind in (
        ("cap", str),  # JSON body of the last verified capability record
        ("cap_seq", int),
        ("cap_verified_at", float),
        ("cap_expires_at", float),
        ("hb_seq", int),  # last presence heartbeat
        ("hb_at", float),
        ("hb_expires_at", float),
        ("load", str),  # JSON load from the newest of capability record and heartbeat
    ):
        peers.add_column(column, kind)
    db.table("peer_perf").create(
        {
            "peer_id": str,
            "rtt_ms": float,
            "upload_mbps": float,
            "download_mbps": float,
            "payload_bytes": int,
            "measured_at": float,
        },
        pk="peer_id",
    )
    db.table("hardware_profiles").create(
        {"fingerprint": str, "mode": str, "created_at": float, "data": str},
        pk=("fingerprint", "mode"),
        not_null={"created_at", "data"},
    )


def _migration_3(db: sqlite_utils.Database) -> None:
    db.table("publishers").create(
        {"key_id": str, "name": str, "public_key": bytes, "own": int, "added_at": float},
        pk="key_id",
        not_null={"name", "public_key", "own", "added_at"},
    )
    db.table("publishers").create_index(["name"], unique=True)
    db.table("model_versions").create(
        {"publisher": str, "name": str, "version": int, "accepted_at": float},
        pk=("publisher", "name"),
        not_null={"version", "accepted_at"},
    )


def _migration_4(db: sqlite_utils.Database) -> None:
    db.table("models").create(
        {"cid": str, "name": str, "version": int, "publisher": str, "size": int, "manifest": str,
         "local": int, "installed_at": float},
        pk="cid",
        not_null={"name", "version", "publisher", "size", "manifest", "local", "installed_at"},
    )  # fmt: skip


def _migration_5(db: sqlite_utils.Database) -> None:
    peers = db.table("peers")
    for column, kind in (
        ("penalties", int),  # penalties since last forgiven (see p2p.penalties)
        ("penalised_at", float),
        ("penalty_exclusions", int),
        ("penalty_reason", str),
    ):
        peers.add_column(column, kind)


def _migration_6(db: sqlite_utils.Database) -> None:
    db.table("model_analysis").create(
        {"cid": str, "dims": str, "data": str, "created_at": float},
        pk=("cid", "dims"),  # dims: canonical JSON of the symbolic dims the figures were evaluated at
        not_null={"data", "created_at"},
    )
    db.table("model_variants").create(
        {"cid": str, "parent": str, "variant": str, "accuracy": str, "size": int, "created_at": float},
        pk="cid",
        not_null={"parent", "variant", "size", "created_at"},
    )
    db.table("model_variants").create_index(["parent", "variant"], unique=True)
    db.table("measurements").create(
        {
            "id": int,
            "model_cid": str,
            "variant": str,
            "batch": int,
            "threads": int,
            "seq_len": int,
            "latency_ms": float,  # median
            "latency_p90_ms": float,
            "throughput": float,  # items (rows) per second
            "peak_rss_bytes": int,
            "fingerprint": str,  # hardware fingerprint of the machine that measured
            "source": str,  # bench | live
            "created_at": float,
        },
        pk="id",
        not_null={"model_cid", "variant", "batch", "latency_ms", "throughput", "source", "created_at"},
    )
    db.table("measurements").create_index(["model_cid", "variant", "batch"])


def _migration_7(db: sqlite_utils.Database) -> None:
    db.table("shard_plans").create(
        {"plan_cid": str, "model_cid": str, "raw": bytes, "planner": str, "created_at": float},
        pk="plan_cid",
        not_null={"model_cid", "raw", "planner", "created_at"},
    )
    db.table("shard_plans").create_index(["model_cid"])
    db.table("shard_served").create(
        {"plan_cid": str, "stage": int, "model_cid": str, "started_at": float},
        pk=("plan_cid", "stage"),
        not_null={"model_cid", "started_at"},
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
    _migration_7,
]
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
    capability: dict[str, Any] | None = None
    cap_seq: int | None = None
    cap_verified_at: float | None = None
    cap_expires_at: float | None = None
    hb_seq: int | None = None
    hb_at: float | None = None
    hb_expires_at: float | None = None
    load: dict[str, Any] | None = None
    perf: dict[str, Any] | None = None
    penalties: int = 0
    penalised_at: float | None = None
    penalty_exclusions: int = 0
    penalty_reason: str | None = None

    def live(self, now: float) -> bool:
        """Whether a signed record (capability or heartbeat) of this peer is still valid."""
        return any(t is not None and t > now for t in (self.cap_expires_at, self.hb_expires_at))


@dataclass(frozen=True)
class Replay:
    """Why a record was not applied: it is not newer than the one already held."""

    held_seq: int


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

    _PEER_QUERY = (
        "SELECT peers.*, peer_perf.rtt_ms AS perf_rtt_ms, peer_perf.upload_mbps AS perf_upload_mbps, "
        "peer_perf.download_mbps AS perf_download_mbps, peer_perf.payload_bytes AS perf_payload_bytes, "
        "peer_perf.measured_at AS perf_measured_at FROM peers LEFT JOIN peer_perf USING (peer_id)"
    )

    def get_peer(self, peer_id: str) -> PeerRecord | None:
        rows = list(self.db.query(self._PEER_QUERY + " WHERE peer_id = ?", [peer_id]))
        return _peer(rows[0]) if rows else None

    def list_peers(self) -> list[PeerRecord]:
        return [_peer(row) for row in self.db.query(self._PEER_QUERY + " ORDER BY last_seen DESC")]

    def _ensure_peer(self, peer_id: str, addrs: list[str], source: str) -> PeerRecord:
        existing = self.get_peer(peer_id)
        if existing is None or addrs:
            self.upsert_peer(peer_id, addrs, source=source)
            existing = self.get_peer(peer_id)
        assert existing is not None
        return existing

    def record_capability(
        self, peer_id: str, body: dict[str, Any], *, seq: int, expires_at: float, addrs: list[str]
    ) -> Replay | None:
        """Apply a verified capability record unless a newer one is already held.

        Read-check-write is safe without a transaction: the one connection is only ever used by
        one thread at a time (see :class:`AsyncStore`).
        """
        peer = self._ensure_peer(peer_id, addrs, "dht")
        if peer.cap_seq is not None and seq < peer.cap_seq:
            return Replay(peer.cap_seq)
        self.db.table("peers").update(
            peer_id,
            {
                "cap": json.dumps(body),
                "cap_seq": seq,
                "cap_verified_at": time.time(),
                "cap_expires_at": float(expires_at),
                "load": json.dumps(body.get("load")),
            },
        )
        return None

    def record_heartbeat(
        self, peer_id: str, *, seq: int, expires_at: float, load: dict[str, Any], addrs: list[str]
    ) -> Replay | None:
        """Apply a verified presence heartbeat unless it is not newer than the last one."""
        peer = self._ensure_peer(peer_id, addrs, "presence")
        if peer.hb_seq is not None and seq <= peer.hb_seq:
            return Replay(peer.hb_seq)
        self.db.table("peers").update(
            peer_id,
            {
                "hb_seq": seq,
                "hb_at": time.time(),
                "hb_expires_at": float(expires_at),
                "load": json.dumps(load),
            },
        )
        return None

    def record_penalty(self, peer_id: str, *, count: int, at: float, exclusions: int, reason: str) -> None:
        """Persist a peer's penalty state (the in-memory box is the authority while running)."""
        self._ensure_peer(peer_id, [], "penalty")
        self.db.table("peers").update(
            peer_id,
            {
                "penalties": count,
                "penalised_at": at,
                "penalty_exclusions": exclusions,
                "penalty_reason": reason,
            },
        )

    def record_perf(self, peer_id: str, perf: dict[str, Any]) -> None:
        self.db.table("peer_perf").upsert({"peer_id": peer_id, **perf}, pk="peer_id")

    def expire_records(self, now: float) -> list[str]:
        """Forget capability records and heartbeats that expired; returns the peers affected."""
        expired = [
            row["peer_id"]
            for row in self.db.query(
                "SELECT peer_id FROM peers WHERE cap_expires_at <= ? OR hb_expires_at <= ?", [now, now]
            )
        ]
        with self._conn:
            self._conn.execute(
                "UPDATE peers SET cap = NULL, cap_expires_at = NULL, load = NULL WHERE cap_expires_at <= ?",
                [now],
            )
            self._conn.execute("UPDATE peers SET hb_expires_at = NULL WHERE hb_expires_at <= ?", [now])
        return expired

    def save_profile(self, fingerprint: str, mode: str, created_at: float, data: dict[str, Any]) -> None:
        self.db.table("hardware_profiles").upsert(
            {"fingerprint": fingerprint, "mode": mode, "created_at": created_at, "data": json.dumps(data)},
            pk=("fingerprint", "mode"),
        )

    def latest_profile(self, fingerprint: str) -> dict[str, Any] | None:
        """The newest stored profile (any mode) taken on hardware with ``fingerprint``."""
        rows = list(
            self.db.query(
                "SELECT data FROM hardware_profiles WHERE fingerprint = ? ORDER BY created_at DESC LIMIT 1",
                [fingerprint],
            )
        )
        return dict(json.loads(rows[0]["data"])) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.table("meta").upsert({"key": key, "value": value}, pk="key")

    def get_meta(self, key: str) -> str | None:
        rows = list(self.db.query("SELECT value FROM meta WHERE key = ?", [key]))
        return str(rows[0]["value"]) if rows else None

    def add_publisher(self, key_id: str, name: str, public_key: bytes, *, own: bool) -> None:
        """Trust ``public_key`` under ``name``; raises StoreError if the name or key is taken."""
        try:
            self.db.table("publishers").insert(
                {
                    "key_id": key_id,
                    "name": name,
                    "public_key": public_key,
                    "own": int(own),
                    "added_at": time.time(),
                }
            )
        except sqlite3.IntegrityError as exc:
            taken = self.db.execute(
                "SELECT name FROM publishers WHERE key_id = ? OR name = ?", [key_id, name]
            ).fetchone()
            raise StoreError(f"already trusted as {taken[0]!r}" if taken else str(exc)) from exc

    def list_publishers(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM publishers ORDER BY own DESC, name"))

    def remove_publisher(self, name_or_key_id: str) -> dict[str, Any] | None:
        rows = list(
            self.db.query(
                "SELECT * FROM publishers WHERE name = ? OR key_id = ?", [name_or_key_id, name_or_key_id]
            )
        )
        if rows:
            self.db.execute("DELETE FROM publishers WHERE key_id = ?", [rows[0]["key_id"]])
        return rows[0] if rows else None

    def publisher_key(self, key_id: str) -> bytes | None:
        row = self.db.execute("SELECT public_key FROM publishers WHERE key_id = ?", [key_id]).fetchone()
        return bytes(row[0]) if row else None

    def highest_model_version(self, publisher: str, name: str) -> int | None:
        row = self.db.execute(
            "SELECT version FROM model_versions WHERE publisher = ? AND name = ?", [publisher, name]
        ).fetchone()
        return int(row[0]) if row else None

    def record_model_version(self, publisher: str, name: str, version: int) -> None:
        """Remember the highest version accepted for (publisher, name); never lowers it."""
        self.db.execute(
            "INSERT INTO model_versions (publisher, name, version, accepted_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (publisher, name) DO UPDATE SET version = max(version, excluded.version), "
            "accepted_at = excluded.accepted_at",
            [publisher, name, version, time.time()],
        )

    def record_model(self, cid: str, manifest: dict[str, Any], *, local: bool) -> None:
        size = sum(int(f["size"]) for f in manifest["files"])
        row = {key: manifest[key] for key in ("name", "version", "publisher")}
        row.update(
            cid=cid, size=size, manifest=json.dumps(manifest), local=int(local), installed_at=time.time()
        )
        self.db.table("models").upsert(row, pk="cid")

    def _model(self, row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "manifest": json.loads(row["manifest"]), "local": bool(row["local"])}

    def get_model(self, cid: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM models WHERE cid = ?", [cid]))
        return self._model(rows[0]) if rows else None

    def list_models(self) -> list[dict[str, Any]]:
        return [self._model(r) for r in self.db.query("SELECT * FROM models ORDER BY name, version")]

    def delete_model(self, cid: str) -> None:
        self.db.execute("DELETE FROM models WHERE cid = ?", [cid])

    # -- model analysis, precision variants, measurements ------------------------------------

    def save_analysis(self, cid: str, dims: dict[str, int], data: dict[str, Any]) -> None:
        key = json.dumps(dims, sort_keys=True)
        row = {"cid": cid, "dims": key, "data": json.dumps(data), "created_at": time.time()}
        self.db.table("model_analysis").upsert(row, pk=("cid", "dims"))

    def get_analysis(self, cid: str, dims: dict[str, int]) -> dict[str, Any] | None:
        key = json.dumps(dims, sort_keys=True)
        query = "SELECT data FROM model_analysis WHERE cid = ? AND dims = ?"
        row = self.db.execute(query, [cid, key]).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def save_variant(
        self, cid: str, *, parent: str, variant: str, accuracy: dict[str, Any], size: int
    ) -> None:
        row = {
            "cid": cid,
            "parent": parent,
            "variant": variant,
            "accuracy": json.dumps(accuracy),
            "size": size,
            "created_at": time.time(),
        }
        self.db.execute("DELETE FROM model_variants WHERE parent = ? AND variant = ?", [parent, variant])
        self.db.table("model_variants").upsert(row, pk="cid")

    def list_variants(self, parent: str) -> list[dict[str, Any]]:
        rows = self.db.query("SELECT * FROM model_variants WHERE parent = ? ORDER BY variant", [parent])
        return [{**r, "accuracy": _json(r["accuracy"])} for r in rows]

    def get_variant(self, parent: str, variant: str) -> dict[str, Any] | None:
        return next((v for v in self.list_variants(parent) if v["variant"] == variant), None)

    def record_measurements(self, rows: list[dict[str, Any]]) -> None:
        now = time.time()
        self.db.table("measurements").insert_all(
            [{"created_at": now, **row} for row in rows], alter=False, pk="id"
        )

    def list_measurements(self, model_cid: str | None = None, *, limit: int = 1000) -> list[dict[str, Any]]:
        where, args = ("WHERE model_cid = ?", [model_cid]) if model_cid else ("", [])
        return list(
            self.db.query(f"SELECT * FROM measurements {where} ORDER BY id DESC LIMIT ?", [*args, limit])  # noqa: S608
        )

    def delete_model_data(self, cid: str) -> None:
        """Forget what was derived from a removed model (analysis, variants); measurements stay."""
        self.db.execute("DELETE FROM model_analysis WHERE cid = ?", [cid])
        self.db.execute("DELETE FROM model_variants WHERE parent = ?", [cid])

    # -- shard plans and served stages --------------------------------------------------------

    def save_plan(self, plan_cid: str, *, model_cid: str, raw: bytes, planner: str) -> None:
        row = {"plan_cid": plan_cid, "model_cid": model_cid, "raw": raw, "planner": planner,
               "created_at": time.time()}  # fmt: skip
        self.db.table("shard_plans").upsert(row, pk="plan_cid")

    def get_plan(self, plan_cid: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM shard_plans WHERE plan_cid = ?", [plan_cid]))
        return rows[0] if rows else None

    def list_plans(self, model_cid: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE model_cid = ?", [model_cid]) if model_cid else ("", [])
        return list(self.db.query(f"SELECT * FROM shard_plans {where} ORDER BY created_at DESC", args))  # noqa: S608

    def set_served(self, plan_cid: str, stage: int, *, model_cid: str, served: bool) -> None:
        if served:
            row = {"plan_cid": plan_cid, "stage": stage, "model_cid": model_cid, "started_at": time.time()}
            self.db.table("shard_served").upsert(row, pk=("plan_cid", "stage"))
        else:
            self.db.execute("DELETE FROM shard_served WHERE plan_cid = ? AND stage = ?", [plan_cid, stage])

    def list_served(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM shard_served ORDER BY model_cid, plan_cid, stage"))

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close the connection."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._conn.close()


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _peer(row: dict[str, Any]) -> PeerRecord:
    perf = None
    if row.get("perf_measured_at") is not None:
        perf = {k.removeprefix("perf_"): v for k, v in row.items() if k.startswith("perf_")}
    return PeerRecord(
        peer_id=row["peer_id"],
        addrs=list(json.loads(row["addrs"])),
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        latency_ms=row["latency_ms"],
        source=row["source"],
        capability=_json(row.get("cap")),
        cap_seq=row.get("cap_seq"),
        cap_verified_at=row.get("cap_verified_at"),
        cap_expires_at=row.get("cap_expires_at"),
        hb_seq=row.get("hb_seq"),
        hb_at=row.get("hb_at"),
        hb_expires_at=row.get("hb_expires_at"),
        load=_json(row.get("load")),
        perf=perf,
        penalties=row.get("penalties") or 0,
        penalised_at=row.get("penalised_at"),
        penalty_exclusions=row.get("penalty_exclusions") or 0,
        penalty_reason=row.get("penalty_reason"),
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
