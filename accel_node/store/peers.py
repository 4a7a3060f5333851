"""Peers this node has met: addresses, verified capability records and heartbeats, penalties and
measured link performance (tables ``peers`` and ``peer_perf``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from accel_node.store.db import Database
from accel_node.store.rows import json_or_none


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


_PEER_QUERY = (
    "SELECT peers.*, peer_perf.rtt_ms AS perf_rtt_ms, peer_perf.upload_mbps AS perf_upload_mbps, "
    "peer_perf.download_mbps AS perf_download_mbps, peer_perf.payload_bytes AS perf_payload_bytes, "
    "peer_perf.measured_at AS perf_measured_at FROM peers LEFT JOIN peer_perf USING (peer_id)"
)


class Peers:
    """The peer table. Read-check-write sequences need no transaction: the one connection is only
    ever used by one thread at a time (see :class:`accel_node.store.facade.AsyncStore`)."""

    def __init__(self, database: Database) -> None:
        self._conn = database.conn
        self._db = database.db

    def upsert(self, peer_id: str, addrs: list[str], *, source: str, latency_ms: float | None = None) -> None:
        """Note that ``peer_id`` was seen now; first sighting, source and known latency are kept."""
        now = time.time()
        existing = self.get(peer_id)
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
        self._db.table("peers").upsert(row, pk="peer_id")

    def get(self, peer_id: str) -> PeerRecord | None:
        rows = list(self._db.query(_PEER_QUERY + " WHERE peer_id = ?", [peer_id]))
        return _peer(rows[0]) if rows else None

    def all(self) -> list[PeerRecord]:
        """Every peer, most recently seen first."""
        return [_peer(row) for row in self._db.query(_PEER_QUERY + " ORDER BY last_seen DESC")]

    def _ensure(self, peer_id: str, addrs: list[str], source: str) -> PeerRecord:
        existing = self.get(peer_id)
        if existing is None or addrs:
            self.upsert(peer_id, addrs, source=source)
            existing = self.get(peer_id)
        assert existing is not None
        return existing

    def record_capability(
        self, peer_id: str, body: dict[str, Any], *, seq: int, expires_at: float, addrs: list[str]
    ) -> Replay | None:
        """Apply a verified capability record unless a newer one is already held."""
        peer = self._ensure(peer_id, addrs, "dht")
        if peer.cap_seq is not None and seq < peer.cap_seq:
            return Replay(peer.cap_seq)
        self._db.table("peers").update(
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
        peer = self._ensure(peer_id, addrs, "presence")
        if peer.hb_seq is not None and seq <= peer.hb_seq:
            return Replay(peer.hb_seq)
        self._db.table("peers").update(
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
        self._ensure(peer_id, [], "penalty")
        self._db.table("peers").update(
            peer_id,
            {
                "penalties": count,
                "penalised_at": at,
                "penalty_exclusions": exclusions,
                "penalty_reason": reason,
            },
        )

    def record_perf(self, peer_id: str, perf: dict[str, Any]) -> None:
        """Keep the latest link measurement (rtt_ms, upload_mbps, download_mbps, payload_bytes,
        measured_at) to ``peer_id``."""
        self._db.table("peer_perf").upsert({"peer_id": peer_id, **perf}, pk="peer_id")

    def expire_records(self, now: float) -> list[str]:
        """Forget capability records and heartbeats that expired; returns the peers affected."""
        expired = [
            row["peer_id"]
            for row in self._db.query(
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
        capability=json_or_none(row.get("cap")),
        cap_seq=row.get("cap_seq"),
        cap_verified_at=row.get("cap_verified_at"),
        cap_expires_at=row.get("cap_expires_at"),
        hb_seq=row.get("hb_seq"),
        hb_at=row.get("hb_at"),
        hb_expires_at=row.get("hb_expires_at"),
        load=json_or_none(row.get("load")),
        perf=perf,
        penalties=row.get("penalties") or 0,
        penalised_at=row.get("penalised_at"),
        penalty_exclusions=row.get("penalty_exclusions") or 0,
        penalty_reason=row.get("penalty_reason"),
    )
