"""A capability record beyond the physical bounds is refused at fetch and counted (issue 11, finding 2),
with the real record codec, store and metrics; the DHT is a dictionary of signed records here."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from accel_node.capability import KIND, NAMESPACE, CapabilityService
from accel_node.config import P2PSection
from accel_node.metrics import NodeMetrics
from accel_node.store import AsyncStore
from accel_node.store.db import Database
from p2p.dht import record_key
from p2p.identity import generate_identity, peer_id_of
from p2p.records import SignedRecord, decode_record, sign_record


class RecordsByKey:
    """What :meth:`p2p.dht.RecordDHT.get` answers: the verified record stored under a key."""

    def __init__(self) -> None:
        self.raw: dict[str, bytes] = {}

    async def get(self, key: str) -> SignedRecord | None:
        raw = self.raw.get(key)
        return None if raw is None else decode_record(raw)


class NoHardware:
    def __init__(self) -> None:
        self.on_profile: list[Any] = []


def body(peak_gflops: float) -> dict[str, Any]:
    return {
        "name": "peer", "version": "1", "addrs": [],
        "hw": {"peak_gflops": peak_gflops, "mem_total_gb": 8.0, "mem_free_gb": 4.0, "cpu": "x", "cores": 2},
        "load": {"queue_depth": 0, "utilisation": 0.0},
    }  # fmt: skip


async def test_an_implausible_capability_record_is_refused_and_counted(tmp_path: Path) -> None:
    store = AsyncStore(Database(tmp_path / "node.db"))
    dht, metrics = RecordsByKey(), NodeMetrics()
    service = CapabilityService(
        key_pair=generate_identity(), dht=dht, store=store, hardware=NoHardware(), network=None,  # type: ignore[arg-type]
        settings=P2PSection(), metrics=metrics, name="me",
    )  # fmt: skip
    honest, liar = generate_identity(), generate_identity()
    for seq, (key_pair, gflops) in enumerate(((honest, 300.0), (liar, 1e300)), start=1):
        record = sign_record(
            key_pair, kind=KIND, seq=seq, expires_at=int(time.time()) + 60, body=body(gflops)
        )
        dht.raw[record_key(NAMESPACE, KIND, peer_id_of(key_pair))] = record.raw
    try:
        assert await service.fetch(peer_id_of(honest)) is not None
        assert await service.fetch(peer_id_of(liar)) is None
        assert await store.get_peer(str(peer_id_of(liar))) is None
        labels = {"kind": KIND, "reason": "implausible"}
        assert metrics.registry.get_sample_value("accel_node_records_rejected_total", labels) == 1
    finally:
        await store.close()
