"""The SQLite store: WAL, versioned migrations, each repository through the async facade."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
import trio

from accel_node.errors import StoreError
from accel_node.store import MIGRATIONS, SCHEMA_VERSION, AsyncStore
from accel_node.store.db import connect, migrate


def schema(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        query = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
        return [(row[0], row[1], row[2]) for row in conn.execute(query)]
    finally:
        conn.close()


def old_database(path: Path, version: int) -> None:
    """A database as an accel-node that knew only the first ``version`` migrations left it."""
    conn = connect(path)
    migrate(conn, path, MIGRATIONS[:version])
    conn.close()


async def test_new_store_is_wal_and_migrated(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    assert await store.schema_version() == SCHEMA_VERSION
    await store.close()
    conn = sqlite3.connect(tmp_path / "node.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert {"peers", "meta", "models", "shard_plans"} <= {name for _, name, _ in schema(tmp_path / "node.db")}
    store = await AsyncStore.open(tmp_path / "node.db")  # reopening runs nothing twice
    assert await store.schema_version() == SCHEMA_VERSION
    await store.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    await (await AsyncStore.open(tmp_path / "node.db")).close()
    conn = sqlite3.connect(tmp_path / "node.db")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this accel-node"):
        await AsyncStore.open(tmp_path / "node.db")


async def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "node.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        await AsyncStore.open(tmp_path / "node.db")


@pytest.mark.parametrize("version", range(SCHEMA_VERSION))
async def test_migrating_an_older_database_gives_the_schema_of_a_new_one(
    tmp_path: Path, version: int
) -> None:
    await (await AsyncStore.open(tmp_path / "new.db")).close()
    old_database(tmp_path / "old.db", version)
    assert sqlite3.connect(tmp_path / "old.db").execute("PRAGMA user_version").fetchone()[0] == version
    store = await AsyncStore.open(tmp_path / "old.db")
    assert await store.schema_version() == SCHEMA_VERSION
    await store.close()
    assert schema(tmp_path / "old.db") == schema(tmp_path / "new.db")


async def test_rows_written_before_later_migrations_survive_them(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    old_database(path, 1)
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO peers (peer_id, addrs, first_seen, last_seen, latency_ms, source) "
        "VALUES ('p1', '[\"/ip4/127.0.0.1/tcp/1\"]', 10.0, 20.0, NULL, 'mdns')"
    )
    conn.execute("INSERT INTO meta (key, value) VALUES ('last_started_version', '0.1')")
    conn.commit()
    conn.close()
    store = await AsyncStore.open(path)
    peer = await store.get_peer("p1")
    assert peer is not None
    assert (peer.addrs, peer.first_seen, peer.source) == (["/ip4/127.0.0.1/tcp/1"], 10.0, "mdns")
    # Columns added later read as their neutral values.
    assert (peer.capability, peer.cap_seq, peer.penalties, peer.penalty_exclusions, peer.perf) == (
        None, None, 0, 0, None
    )  # fmt: skip
    assert await store.get_meta("last_started_version") == "0.1"
    await store.close()


async def test_failed_migration_is_a_store_error_and_leaves_the_version(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    old_database(path, 2)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE publishers (key_id TEXT)")  # what migration 3 creates, already there
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="to version 3 failed"):
        await AsyncStore.open(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


async def test_async_store_runs_off_the_event_loop_thread_one_call_at_a_time(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    seen: list[str] = []
    inside = 0
    most = 0

    def call() -> None:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        seen.append(threading.current_thread().name)
        time.sleep(0.01)
        inside -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(store._run, call)
    assert len(seen) == 4 and threading.main_thread().name not in seen
    assert most == 1
    await store.set_meta("k", "v")
    await store.set_meta("k", "w")
    assert await store.get_meta("k") == "w" and await store.get_meta("missing") is None
    await store.close()
    # The WAL was checkpointed into the main file on close.
    assert not (tmp_path / "node.db-wal").exists() or (tmp_path / "node.db-wal").stat().st_size == 0


async def test_peers_keep_first_seen_source_and_latency_and_join_perf(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    await store.upsert_peer("p1", ["/ip4/127.0.0.1/tcp/1/p2p/p1"], source="bootstrap", latency_ms=1.5)
    first = await store.get_peer("p1")
    assert first is not None and first.perf is None
    await store.upsert_peer("p1", [], source="inbound")
    again = await store.get_peer("p1")
    assert again is not None
    assert again.first_seen == first.first_seen and again.last_seen >= first.last_seen
    assert again.source == "bootstrap" and again.latency_ms == 1.5
    assert again.addrs == ["/ip4/127.0.0.1/tcp/1/p2p/p1"]
    await store.upsert_peer("p2", [], source="mdns")
    assert [p.peer_id for p in await store.list_peers()] == ["p2", "p1"]  # most recently seen first
    perf = {
        "rtt_ms": 0.5,
        "upload_mbps": 90.0,
        "download_mbps": 80.0,
        "payload_bytes": 1024,
        "measured_at": 5.0,
    }
    await store.record_perf("p1", perf)
    measured = await store.get_peer("p1")
    assert measured is not None and measured.perf == perf
    assert await store.get_peer("nobody") is None
    await store.close()


async def test_hardware_profiles_newest_per_fingerprint(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    await store.save_profile("fp", "quick", 1.0, {"mode": "quick"})
    await store.save_profile("fp", "full", 2.0, {"mode": "full"})
    await store.save_profile("other", "full", 3.0, {"mode": "other"})
    assert await store.latest_profile("fp") == {"mode": "full"}
    await store.save_profile("fp", "quick", 4.0, {"mode": "quick again"})  # replaces (fp, quick)
    assert await store.latest_profile("fp") == {"mode": "quick again"}
    assert await store.latest_profile("unknown") is None
    await store.close()


async def test_publishers_and_accepted_versions(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    await store.add_publisher("kid-b", "bob", b"B" * 32, own=False)
    await store.add_publisher("kid-a", "zed", b"A" * 32, own=True)
    with pytest.raises(StoreError, match="already trusted as 'bob'"):
        await store.add_publisher("kid-c", "bob", b"C" * 32, own=False)
    rows = await store.list_publishers()
    assert [(r.name, r.key_id, r.own, r.public_key) for r in rows] == [
        ("zed", "kid-a", True, b"A" * 32),  # own keys first
        ("bob", "kid-b", False, b"B" * 32),
    ]
    assert await store.publisher_key("kid-b") == b"B" * 32 and await store.publisher_key("x") is None
    assert await store.publisher_keys() == {"kid-a": b"A" * 32, "kid-b": b"B" * 32}
    removed = await store.remove_publisher("bob")
    assert removed is not None and removed.key_id == "kid-b"
    assert await store.remove_publisher("kid-b") is None

    assert await store.highest_model_version("kid-a", "m") is None
    await store.record_model_version("kid-a", "m", 3)
    await store.record_model_version("kid-a", "m", 2)  # never lowered
    assert await store.highest_model_version("kid-a", "m") == 3
    assert await store.model_versions() == {("kid-a", "m"): 3}
    await store.close()


async def test_models_render_as_before(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    manifest = {"name": "mlp", "version": 2, "publisher": "kid", "files": [{"size": 10}, {"size": 5}]}
    await store.record_model("bafyb", manifest, local=True)
    await store.record_model("bafya", {**manifest, "version": 1}, local=False)
    row = await store.get_model("bafyb")
    assert row is not None and row.manifest == manifest and row.local is True and row.size == 15
    view = row.as_dict()
    assert list(view) == ["cid", "name", "version", "publisher", "size", "manifest", "local", "installed_at"]
    assert [m.cid for m in await store.list_models()] == ["bafya", "bafyb"]  # by name, version
    await store.delete_model("bafyb")
    assert await store.get_model("bafyb") is None
    await store.close()


async def test_analysis_variants_and_measurements_round_trip(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    await store.save_analysis("bafyparent", {"seq": 128, "batch": 1}, {"flops": 42})
    # The order of the dims does not matter.
    assert await store.get_analysis("bafyparent", {"batch": 1, "seq": 128}) == {"flops": 42}
    assert await store.get_analysis("bafyparent", {"batch": 2, "seq": 128}) is None

    await store.save_variant(
        "bafyint8a", parent="bafyparent", variant="int8", accuracy={"max_abs": 0.1}, size=10
    )
    # Re-deriving a variant replaces the old record (one variant of each kind per parent).
    await store.save_variant(
        "bafyint8b", parent="bafyparent", variant="int8", accuracy={"max_abs": 0.2}, size=11
    )
    await store.save_variant(
        "bafyfp16", parent="bafyparent", variant="fp16", accuracy={"max_abs": 0.0}, size=12
    )
    variants = await store.list_variants("bafyparent")
    assert [(v.cid, v.variant, v.accuracy) for v in variants] == [
        ("bafyfp16", "fp16", {"max_abs": 0.0}),
        ("bafyint8b", "int8", {"max_abs": 0.2}),
    ]
    assert list(variants[0].as_dict()) == ["cid", "parent", "variant", "accuracy", "size", "created_at"]
    found = await store.get_variant("bafyparent", "int8")
    assert found is not None and found.cid == "bafyint8b"
    assert await store.get_variant("bafyparent", "int4") is None

    await store.record_measurements(
        [
            {"model_cid": "bafyparent", "variant": "fp32", "batch": b, "threads": 2, "latency_ms": 1.0 * b,
             "throughput": 1000.0, "source": "bench"}
            for b in (1, 2, 4)
        ]
    )  # fmt: skip
    rows = await store.list_measurements("bafyparent")
    assert [r.batch for r in rows] == [4, 2, 1]  # newest first
    assert rows[0].seq_len is None and rows[0].threads == 2
    assert list(rows[0].as_dict()) == [
        "id", "model_cid", "variant", "batch", "threads", "seq_len", "latency_ms", "latency_p90_ms",
        "throughput", "peak_rss_bytes", "fingerprint", "source", "created_at",
        "dims", "features", "hardware", "op_times",
    ]  # fmt: skip
    await store.record_measurements(
        [{"model_cid": "bafyjson", "variant": "fp32", "batch": 1, "latency_ms": 1.0, "throughput": 1.0,
          "source": "bench", "dims": {"seq": 8}, "op_times": {"MatMul": 0.5}}]
    )  # fmt: skip
    (json_row,) = await store.list_measurements("bafyjson")
    assert json_row.dims == {"seq": 8} and json_row.op_times == {"MatMul": 0.5} and json_row.features is None
    assert [r.model_cid for r in await store.measurements_since(rows[0].id)] == ["bafyjson"]
    assert await store.count_measurements() == 4
    assert [r.batch for r in await store.list_measurements("bafyparent", limit=2)] == [4, 2]
    assert await store.list_measurements("other") == []

    await store.delete_model_data("bafyparent")
    assert await store.list_variants("bafyparent") == []
    assert await store.get_analysis("bafyparent", {"seq": 128, "batch": 1}) is None
    assert len(await store.list_measurements()) == 4  # measurements are history: kept
    await store.close()


async def test_shard_plans_and_served_stages(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    await store.save_plan("plan1", model_cid="m1", raw=b"\x01raw", planner="peerA")
    await trio.sleep(0.01)  # plans list newest first, by creation time
    await store.save_plan("plan2", model_cid="m2", raw=b"\x02raw", planner="peerB")
    plan = await store.get_plan("plan1")
    assert plan is not None and (plan.model_cid, plan.raw, plan.planner) == ("m1", b"\x01raw", "peerA")
    assert await store.get_plan("nope") is None
    assert [p.plan_cid for p in await store.list_plans()] == ["plan2", "plan1"]
    assert [p.plan_cid for p in await store.list_plans("m1")] == ["plan1"]

    await store.set_served("plan2", 1, model_cid="m2", served=True)
    await store.set_served("plan1", 0, model_cid="m1", served=True)
    await store.set_served("plan1", 1, model_cid="m1", served=True)
    await store.set_served("plan1", 1, model_cid="m1", served=False)
    served = await store.list_served()
    assert [(s.plan_cid, s.stage, s.model_cid) for s in served] == [("plan1", 0, "m1"), ("plan2", 1, "m2")]
    assert list(served[0].as_dict()) == ["plan_cid", "stage", "model_cid", "started_at"]
    await store.close()
