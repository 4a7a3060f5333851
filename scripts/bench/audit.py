"""Micro-benchmark of the audit log: what one record costs a protocol and the node.

Three figures, each with a baseline measured in the same run on the same machine:

- the sink: ``AuditLog.sink(event)`` (what protocol code pays, synchronously, per event) against
  :func:`p2p.events.drop` (the default sink, i.e. calling a function and nothing else);
- writing: events sunk and written end to end (sanitising, hashing, chaining, one SQLite
  transaction per batch) against appending the same number of pre-built rows through the store
  (the SQLite cost alone);
- verifying: records checked per second by ``AuditLog.verify``.

Usage: ``python -m scripts.bench.audit [--events N]`` (a few seconds; results on stdout as JSON).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from accel_node.audit import AuditLog
from accel_node.store import AsyncStore, AuditRow
from p2p.events import REFUSED, SecurityEvent, drop
from p2p.identity import generate_identity
from scripts.bench.harness import log, machine_info, source_revision

PEER = "12D3KooWGRUVh9QXFz4nqkMJbyHqnYFHkmSz1Bs5rUoWHk9fGMLh"
EVENT = SecurityEvent(REFUSED, "/accel/shard/1", PEER, "busy", {"stage": 1, "queued": 64, "limit": 64})


def sink_ns(sink: Any, events: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(events):
        sink(EVENT)
    return (time.perf_counter_ns() - start) / events


async def write_rate(directory: Path, events: int) -> dict[str, float]:
    store = await AsyncStore.open(directory / "audit.db")
    audit = AuditLog(store, key_pair=generate_identity(), queue_size=events + 1)
    async with trio.open_nursery() as nursery:
        await nursery.start(audit.run)
        start = time.perf_counter()
        for _ in range(events):
            audit.sink(EVENT)
        await audit.flush()
        written_s = time.perf_counter() - start
        start = time.perf_counter()
        verified = await audit.verify()
        verify_s = time.perf_counter() - start
        assert verified.ok and verified.records == events, verified
        nursery.cancel_scope.cancel()
    await store.close()

    raw = await AsyncStore.open(directory / "raw.db")  # baseline: the same rows, built beforehand
    rows = [AuditRow(i, 0.0, EVENT.kind, EVENT.protocol, EVENT.peer, EVENT.reason, "{}", "0" * 64, "0" * 64)
            for i in range(1, events + 1)]  # fmt: skip
    start = time.perf_counter()
    for i in range(0, events, 512):  # the batch size the audit log writes
        await raw.append_audit(rows[i : i + 512])
    raw_s = time.perf_counter() - start
    await raw.close()
    return {
        "written_per_s": events / written_s,
        "raw_rows_per_s": events / raw_s,
        "verified_per_s": events / verify_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    log(f"audit micro-benchmark: {args.events} events")
    baseline_ns = min(sink_ns(drop, args.events) for _ in range(3))
    with tempfile.TemporaryDirectory() as tmp:
        store = trio.run(AsyncStore.open, Path(tmp) / "sink.db")
        audit = AuditLog(store, queue_size=args.events * 3 + 1)
        sink = min(sink_ns(audit.sink, args.events) for _ in range(3))
        trio.run(store.close)
        rates = trio.run(write_rate, Path(tmp), args.events)
    result = {
        "source": source_revision(),
        "machine": machine_info(),
        "events": args.events,
        "sink_ns_per_event": round(sink, 1),
        "baseline_drop_ns_per_event": round(baseline_ns, 1),
        "sink_ratio_vs_drop": round(sink / baseline_ns, 2),
        "written_records_per_s": round(rates["written_per_s"]),
        "baseline_raw_rows_per_s": round(rates["raw_rows_per_s"]),
        "write_cost_ratio_vs_raw_sqlite": round(rates["raw_rows_per_s"] / rates["written_per_s"], 2),
        "written_us_per_record": round(1e6 / rates["written_per_s"], 2),
        "verified_records_per_s": round(rates["verified_per_s"]),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
