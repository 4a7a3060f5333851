"""Overhead of authorization + audit on a small sharded request (issue 11: target <= 5% at p50).

Run from the repository root with the project's virtual environment::

    python -m scripts.bench.authz                 # 6 rounds of 300 requests per mode
    python -m scripts.bench.authz --rounds 2 --requests 100

In one process, over in-memory bulk channels (:class:`p2p.bulk.MemoryNetwork`: real framing and
AEAD, no sockets), on trio's real clock: two stage servers ``s0 -> s1`` (receipts signed, one ONNX
Runtime thread each) serve the two stages of a small model (``y = x + c_1 + ... + c_8`` on
``x [4, 1024]``); one router sends one request after another. Two modes, alternated round by round
so that drift on a noisy machine hits both alike:

- **open**: the stage servers' default ``allow`` (every upstream may send RUNs), events dropped;
- **policy + audit**: each server checks a real :class:`~accel_node.policy.PolicyService` in
  private mode (``s0`` admits the requester by a capability token it presented, the most expensive
  allowed path; ``s1`` admits ``s0`` by an allow rule), and every security event goes to a running
  :class:`~accel_node.audit.AuditLog` on a real SQLite file.

Printed: per mode the median of the rounds' p50 and p99 latency, and the ratio of the p50 medians
(policy + audit / open). What is measured is what authorization adds per request; receipts and
admission are in both modes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import trio
from libp2p.peer.id import ID

from accel_node.audit import AuditLog
from accel_node.config import PolicySection
from accel_node.policy import COMPUTE, PolicyService, PolicyUpdate, Rule
from accel_node.shard.partition import partition
from accel_node.shard.retention import Retention
from accel_node.shard.router import ShardRouter
from accel_node.shard.server import StageServer
from accel_node.store import AsyncStore
from p2p.bulk import MemoryNetwork, MemoryTransport
from p2p.events import EventSink, drop
from p2p.identity import generate_identity
from scripts.bench.harness import log, machine_info, source_revision
from scripts.bench.shard_cluster import build_transport_model
from scripts.bench.stats import median, percentile

CID = "bafy-authz"


def _allow_all(_peer: ID) -> bool:
    return True


async def _policy(home: Path, key: Any, store: AsyncStore, events: EventSink) -> PolicyService:
    policy = PolicyService(
        key_pair=key, store=store, settings=PolicySection(mode="private"), home=home, events=events
    )
    await policy.load()
    return policy


async def _round(router: ShardRouter, route: list[list[ID]], frame: dict[str, Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await router.infer(route, CID, frame, timeout_s=30)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


async def bench(args: argparse.Namespace, stages: list[Any], tmp: Path) -> dict[str, Any]:
    network = MemoryNetwork()
    frame = {"x": np.random.default_rng(0).standard_normal((4, 1024), dtype=np.float32)}
    store = await AsyncStore.open(tmp / "node.db")
    audit = AuditLog(store, key_pair=generate_identity())
    async with trio.open_nursery() as nursery:
        await nursery.start(audit.run)

        async def node(peer: ID) -> MemoryTransport:
            transport = network.transport(peer)
            await nursery.start(transport.run)
            return transport

        servers, policies = [], []
        for index, stage in enumerate(stages):
            key = generate_identity()
            server = StageServer(
                await node(ID.from_pubkey(key.public_key)), intra_op_threads=1, retention=Retention(key)
            )
            await nursery.start(server.run)
            await server.serve(CID, index, stage.model_bytes, stage)
            servers.append(server)
            policies.append(await _policy(tmp / f"s{index}", key, store, audit.sink))
        client_key = generate_identity()
        router = ShardRouter(await node(ID.from_pubkey(client_key.public_key)), intra_op_threads=1)
        await nursery.start(router.run)
        client = str(router.local_id)
        token = policies[0].issue(client, [COMPUTE], 3600)
        assert policies[0].accept(client, [token.encode()])[0][1] == "accepted"
        await policies[1].update(PolicyUpdate(rules=[Rule(str(servers[0].local_id), COMPUTE, "allow")]))
        route = [[s.local_id] for s in servers]

        modes: dict[str, list[Callable[[ID], bool]]] = {
            "open": [_allow_all, _allow_all],
            "policy+audit": [p.allows(COMPUTE, protocol="shard") for p in policies],
        }
        sinks: dict[str, EventSink] = {"open": drop, "policy+audit": audit.sink}
        for server, allow in zip(servers, modes["policy+audit"], strict=True):
            server.allow = allow
        await _round(router, route, frame, 50)  # warm-up: sessions, links, and that policy admits
        rounds: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
        for r in range(args.rounds):
            for mode in modes if r % 2 == 0 else reversed(list(modes)):
                for server, allow in zip(servers, modes[mode], strict=True):
                    server.allow = allow
                    server.events = sinks[mode]
                samples = sorted(await _round(router, route, frame, args.requests))
                rounds[mode].append((median(samples), percentile(samples, 0.99)))
                log(f"round {r} {mode}: p50 {rounds[mode][-1][0]:.3f} ms")
        await audit.flush()
        nursery.cancel_scope.cancel()
    out: dict[str, Any] = {}
    for mode, values in rounds.items():
        out[mode] = {
            "p50_ms": round(median([v[0] for v in values]), 3),
            "p99_ms": round(median([v[1] for v in values]), 3),
            "rounds_p50_ms": [round(v[0], 3) for v in values],
        }
    out["p50_ratio"] = round(out["policy+audit"]["p50_ms"] / out["open"]["p50_ms"], 4)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds per mode (alternated)")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per round")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(str(build_transport_model(Path(tmp), columns=1024)))
        stages = list(partition(model, stages=2).stages)
        for index in range(len(stages)):
            (Path(tmp) / f"s{index}").mkdir()
        result = trio.run(bench, args, stages, Path(tmp))
    out = {
        "benchmark": "authz",
        "source": source_revision(),
        "machine": machine_info(),
        **vars(args),
        **result,
    }
    print(json.dumps(out, indent=2), flush=True)


if __name__ == "__main__":
    main()
