"""The SQLite store: WAL, versioned migrations, peers, async access off the event loop."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from accel_node.errors import StoreError
from accel_node.store import SCHEMA_VERSION, AsyncStore, Store


def test_new_store_is_wal_and_migrated(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.db")
    assert store.schema_version == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"peers", "meta"} <= set(store.db.table_names())
    store.close()
    assert Store(tmp_path / "node.db").schema_version == SCHEMA_VERSION  # reopening runs nothing twice


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "node.db").close()
    conn = sqlite3.connect(tmp_path / "node.db")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this accel-node"):
        Store(tmp_path / "node.db")


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "node.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        Store(tmp_path / "node.db")


def test_upsert_peer_keeps_first_seen_source_and_latency(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.db")
    store.upsert_peer("p1", ["/ip4/127.0.0.1/tcp/1/p2p/p1"], source="bootstrap", latency_ms=1.5)
    first = store.get_peer("p1")
    assert first is not None
    store.upsert_peer("p1", [], source="inbound")
    again = store.get_peer("p1")
    assert again is not None
    assert again.first_seen == first.first_seen and again.last_seen >= first.last_seen
    assert again.source == "bootstrap" and again.latency_ms == 1.5
    assert again.addrs == ["/ip4/127.0.0.1/tcp/1/p2p/p1"]
    assert [p.peer_id for p in store.list_peers()] == ["p1"]


async def test_async_store_runs_off_the_event_loop_thread(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    seen: list[str] = []
    await store.call(lambda: seen.append(threading.current_thread().name))
    assert seen and seen[0] != threading.main_thread().name
    await store.set_meta("k", "v")
    assert await store.get_meta("k") == "v"
    await store.close()
    # The WAL was checkpointed into the main file on close.
    assert not (tmp_path / "node.db-wal").exists() or (tmp_path / "node.db-wal").stat().st_size == 0


def test_analysis_variants_and_measurements_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.db")
    store.save_analysis("bafyparent", {"seq": 128, "batch": 1}, {"flops": 42})
    assert store.get_analysis("bafyparent", {"batch": 1, "seq": 128}) == {"flops": 42}  # key order irrelevant
    assert store.get_analysis("bafyparent", {"batch": 2, "seq": 128}) is None

    store.save_variant("bafyint8a", parent="bafyparent", variant="int8", accuracy={"max_abs": 0.1}, size=10)
    # Re-deriving a variant replaces the old record (one variant of each kind per parent).
    store.save_variant("bafyint8b", parent="bafyparent", variant="int8", accuracy={"max_abs": 0.2}, size=11)
    assert [(v["cid"], v["accuracy"]) for v in store.list_variants("bafyparent")] == [
        ("bafyint8b", {"max_abs": 0.2})
    ]

    store.record_measurements(
        [
            {"model_cid": "bafyparent", "variant": "fp32", "batch": b, "threads": 2, "latency_ms": 1.0 * b,
             "throughput": 1000.0, "source": "bench"}
            for b in (1, 2, 4)
        ]
    )  # fmt: skip
    rows = store.list_measurements("bafyparent")
    assert [r["batch"] for r in rows] == [4, 2, 1]  # newest first
    assert store.list_measurements("other") == []

    store.delete_model_data("bafyparent")
    assert (
        store.list_variants("bafyparent") == []
        and store.get_analysis("bafyparent", {"seq": 128, "batch": 1}) is None
    )
    assert len(store.list_measurements()) == 3  # measurements are history: kept
    store.close()
