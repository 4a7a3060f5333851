"""The audit log: chained records in the store, a sink that never blocks, tampering caught by
``verify`` (the SQLite file edited directly, as an intruder would), the chain across restarts."""

from __future__ import annotations

import inspect
import itertools
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from accel_node.audit import DROPPED, GENESIS, AuditLog
from accel_node.store import AsyncStore
from p2p.events import REFUSED, SecurityEvent
from p2p.identity import generate_identity

KEY = generate_identity()


@asynccontextmanager
async def running(path: Path, **options: int) -> AsyncIterator[AuditLog]:
    """An audit log over the store at ``path``, its writer running; stopped (and flushed) on exit."""
    store = await AsyncStore.open(path)
    audit = AuditLog(store, key_pair=KEY, **options)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(audit.run)
            yield audit
            nursery.cancel_scope.cancel()
    finally:
        await store.close()


def event(i: int) -> SecurityEvent:
    return SecurityEvent(REFUSED, "/accel/shard/1", f"peer-{i}", "busy", {"i": i, "big": "x" * 1000})


async def write(path: Path, count: int, **options: int) -> None:
    async with running(path, **options) as audit:
        for i in range(count):
            audit.sink(event(i))
        await audit.flush()


def tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


async def verify(path: Path) -> tuple[bool, int | None, str]:
    async with running(path) as audit:
        result = await audit.verify()
    problem = result.problem
    return result.ok, problem.seq if problem else None, problem.message if problem else ""


async def test_records_are_chained_and_details_kept_short(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    async with running(db) as audit:
        for i in range(5):
            audit.sink(event(i))
        audit.record("model-load", reason="loaded", details={"cid": "bafy", "nan": float("nan")})
        await audit.flush()
        rows = await audit.records(limit=100)
        assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6]
        assert rows[0].prev == GENESIS and all(b.prev == a.hash for a, b in itertools.pairwise(rows))
        assert rows[0].peer == "peer-0" and len(rows[0].details) < 300  # the 1000-char value was cut
        assert rows[-1].kind == "model-load" and '"nan":"nan"' in rows[-1].details
        assert [r.seq for r in await audit.records(limit=2)] == [5, 6]
        assert [r.seq for r in await audit.records(limit=2, after=1)] == [2, 3]
        assert [r.kind for r in await audit.records(kind="model-load")] == ["model-load"]
        result = await audit.verify()
        assert result.ok and result.records == 6 and result.head_seq == 6


async def test_the_chain_continues_across_restarts(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    await write(db, 3)
    await write(db, 2)
    async with running(db) as audit:
        rows = await audit.records(limit=10)
        result = await audit.verify()
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5] and rows[3].prev == rows[2].hash
    assert result.ok and result.checkpoints == 2  # one signed head per stop


@pytest.mark.parametrize(
    ("statements", "bad_seq", "needle"),
    [
        (["UPDATE audit_log SET reason = 'nothing happened' WHERE seq = 4"], 4, "altered"),
        (["UPDATE audit_log SET peer = 'someone-else' WHERE seq = 2"], 2, "altered"),
        (["DELETE FROM audit_log WHERE seq = 3"], 3, "missing"),
        (["DELETE FROM audit_log WHERE seq = 1"], 1, "missing"),
        (  # swap records 5 and 6 (every column but seq)
            [
                "UPDATE audit_log SET seq = -5 WHERE seq = 5",
                "UPDATE audit_log SET seq = 5 WHERE seq = 6",
                "UPDATE audit_log SET seq = 6 WHERE seq = -5",
            ],
            5,
            "altered",
        ),
        (  # an inserted record, the later ones renumbered
            [
                "UPDATE audit_log SET seq = seq + 100 WHERE seq >= 4",
                "UPDATE audit_log SET seq = seq - 99 WHERE seq >= 100",
                "INSERT INTO audit_log (seq, at, kind, protocol, peer, reason, details, prev, hash) "
                "SELECT 4, at, kind, protocol, peer, reason, details, prev, hash "
                "FROM audit_log WHERE seq = 3",
            ],
            4,
            "altered",
        ),
        (["DELETE FROM audit_log WHERE seq >= 7"], 7, "checkpoint"),  # the newest cut off
    ],
    ids=["edited-reason", "edited-peer", "deleted", "deleted-first", "reordered", "inserted", "truncated"],
)
async def test_verify_names_the_first_tampered_record(
    tmp_path: Path, statements: list[str], bad_seq: int, needle: str
) -> None:
    db = tmp_path / "node.db"
    await write(db, 8)
    assert (await verify(db))[0]
    tamper(db, *statements)
    ok, seq, message = await verify(db)
    assert not ok and seq == bad_seq and needle in message, message


async def test_a_consistently_rewritten_chain_fails_against_the_signed_checkpoint(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    await write(db, 4)
    # Rewrite record 2 and every hash after it, as someone who knows the algorithm could.
    from accel_node.audit.chain import row_hash

    store = await AsyncStore.open(db)
    rows = await store.audit_after(0, 10)
    await store.close()
    conn = sqlite3.connect(db)
    prev = rows[0].hash
    with conn:
        for row in rows[1:]:
            forged = row.__class__(**{**row.as_dict(), "reason": "forged", "prev": prev, "hash": ""})
            digest = row_hash(forged)
            update = "UPDATE audit_log SET reason = 'forged', prev = ?, hash = ? WHERE seq = ?"
            conn.execute(update, [prev, digest, row.seq])
            prev = digest
    conn.close()
    ok, seq, message = await verify(db)
    assert not ok and seq == 4 and "signed checkpoint" in message


async def test_a_full_queue_drops_counts_and_records_the_drop(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    audit = AuditLog(store, queue_size=3)
    for i in range(10):  # the writer is not running yet: the queue fills
        audit.sink(event(i))
    assert audit.dropped == 7
    async with trio.open_nursery() as nursery:
        await nursery.start(audit.run)
        await audit.flush()
        audit.sink(event(99))
        await audit.flush()
        rows = await audit.records(limit=10)
        nursery.cancel_scope.cancel()
    await store.close()
    assert [r.kind for r in rows] == [DROPPED, REFUSED, REFUSED, REFUSED, REFUSED]
    assert rows[0].reason == "dropped 7 events (queue full)" and '"count":7' in rows[0].details
    assert rows[-1].peer == "peer-99"


async def test_the_sink_never_waits(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    audit = AuditLog(store, queue_size=1000)
    sink: Callable[[SecurityEvent], None] = audit.sink  # an EventSink: a plain function
    assert not inspect.iscoroutinefunction(sink)
    for i in range(2000):  # nobody writes: the queue stays at its bound, the rest is counted
        sink(event(i))
    assert audit.dropped == 1000 and len(audit._pending) == 1000
    await store.close()


async def test_retention_keeps_the_rest_verifiable(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    await write(db, 50, max_records=20, checkpoint_every=7)
    async with running(db) as audit:
        rows = await audit.records(limit=100)
        result = await audit.verify()
    assert len(rows) <= 22 and rows[-1].seq == 50
    assert result.ok and result.anchor_seq == rows[0].seq - 1, result
    tamper(db, f"DELETE FROM audit_log WHERE seq = {rows[0].seq}")
    ok, seq, _ = await verify(db)
    assert not ok and seq == rows[0].seq


async def test_flush_returns_when_the_writer_is_not_running(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    audit = AuditLog(store)
    audit.sink(event(1))
    with trio.fail_after(1):
        await audit.flush()  # nothing would ever write it: no wait
    async with trio.open_nursery() as nursery:
        await nursery.start(audit.run)
        await audit.flush()
        nursery.cancel_scope.cancel()
    with trio.fail_after(1):
        audit.sink(event(2))
        await audit.flush()
    assert [r.peer for r in await audit.records()] == ["peer-1"]
    await store.close()
