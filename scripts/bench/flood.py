"""Flood benchmark (issue 11): one peer at 10x its limits against a stage server while other peers run
normal sharded requests; their p99 latency with and without the flood, and the process's RSS.

Run from the repository root with the project's virtual environment::

    python -m scripts.bench.flood               # 60 s without the flood, then 60 s with it
    python -m scripts.bench.flood --seconds 10  # a short run

In one process, over in-memory bulk channels (:class:`p2p.bulk.MemoryNetwork`: real framing, no
sockets), on trio's real clock: stage servers ``s0`` and ``s1`` (defaults of
:class:`~accel_node.shard.admission.AdmissionLimits`, one ONNX Runtime thread each, runs on worker
threads as in the node) serve the two stages of a small model (``y = x + c_1 + ... + c_8`` on
``x [rows, columns]``); ``--clients`` peers, each with its own :class:`ShardRouter`, send one request
after another through ``s0 -> s1`` and record each latency. Then, for the second period, the flooder
runs beside them, at 10x its limits:

- **inference RUNs**: ``10 x peer_in_flight`` concurrent valid RUNs to ``s0`` (stage 0, route to
  ``s1``), ttl one hour, reply-to a peer that accepts the result channel and never acknowledges
  (the slot-pinning attack of finding 3); each answer is followed by the next RUN after
  ``--pause-ms``;
- **channel opens**: ``10 x peer_channels`` tasks that open a ``shard/1`` channel to ``s0``, hold it
  ``--hold-ms`` and open the next. Every node's in-memory transport has the node's default bulk
  channel limits (:class:`p2p.bulk.BulkLimits`: 32 per peer), as its bulk port would.

Reported (one JSON document on stdout): per period the requests done, errors, p50/p99 latency; the
ratio of the p99s (target <= 1.5); what the flooder got (answers by code, channels refused); the
process's RSS (``VmRSS``) after each period and its peak (``VmHWM``). Everything runs in this one
process, so the flooder's own CPU (building and sending its RUNs) is taken from the same cores as
the servers': the ratio is pessimistic compared with a flooder on another machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import trio
from libp2p.peer.id import ID

from accel_node.shard.admission import AdmissionLimits
from accel_node.shard.errors import ShardError
from accel_node.shard.links import Link, MessageChannel
from accel_node.shard.partition import partition
from accel_node.shard.retention import Retention
from accel_node.shard.router import ShardRouter
from accel_node.shard.server import RESULT_PURPOSE, SHARD_PURPOSE, StageServer
from accel_node.shard.wire import Kind, Message
from p2p.bulk import BulkError, BulkLimits, FrameChannel, MemoryNetwork, MemoryTransport
from p2p.identity import generate_identity
from scripts.bench.harness import log, machine_info, source_revision
from scripts.bench.shard_cluster import build_transport_model
from scripts.bench.stats import median, percentile

CID = "bafy-flood"
HOUR_MS = 3_600_000


def rss_kib() -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of this process (KiB)."""
    found: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def new_peer() -> ID:
    return ID.from_pubkey(generate_identity().public_key)


async def black_hole(_channel: FrameChannel, _peer: ID) -> None:
    """A reply-to that accepts the result channel and never acknowledges anything."""
    await trio.sleep_forever()


class Flood:
    """The flooder's two attacks and what it got back."""

    def __init__(
        self, transport: MemoryTransport, target: ID, hole: ID, frame: dict[str, Any], args: Any
    ) -> None:
        self.transport = transport
        self.target = target
        self.run = Message(Kind.RUN, os.urandom(16), stage=0, model=CID, route=((args.s1,),), reply_to=hole,
                           ttl_ms=HOUR_MS, tensors=frame)  # fmt: skip
        self.limits = AdmissionLimits()
        self.pause_s = args.pause_ms / 1000
        self.hold_s = args.hold_ms / 1000
        self.answers: Counter[str] = Counter()
        self.opened = 0
        self.refused = 0

    async def runs(self) -> None:
        async with self.transport.open(self.target, SHARD_PURPOSE, encrypted=True, timeout_s=5) as channel:
            link = Link(MessageChannel(channel), SHARD_PURPOSE)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.read_answers, lambda _p, _r: None)
                for _ in range(10 * self.limits.peer_in_flight):
                    nursery.start_soon(self._pinning, link)

    async def _pinning(self, link: Link) -> None:
        while True:
            try:
                answer = await link.request(self.run, timeout_s=HOUR_MS / 1000)
                self.answers[answer.code or answer.kind.name] += 1
            except ShardError as exc:
                self.answers[type(exc).__name__] += 1
            await trio.sleep(self.pause_s)

    async def channels(self) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(10 * self.limits.peer_channels):
                nursery.start_soon(self._opening)

    async def _opening(self) -> None:
        while True:
            try:
                async with self.transport.open(self.target, SHARD_PURPOSE, encrypted=True, timeout_s=5) as ch:
                    self.opened += 1
                    with trio.move_on_after(self.hold_s):
                        await ch.receive()
                        self.refused += 1  # closed by the server at once: over the share
            except BulkError:
                self.refused += 1
            await trio.sleep(self.pause_s)


async def legit(router: ShardRouter, route: list[list[ID]], frame: dict[str, Any], until: float,
                samples: list[float], errors: Counter[str]) -> None:  # fmt: skip
    while trio.current_time() < until:
        t0 = time.perf_counter()
        try:
            await router.infer(route, CID, frame, timeout_s=30)
            samples.append(time.perf_counter() - t0)
        except ShardError as exc:
            errors[type(exc).__name__] += 1


def summary(samples: list[float], errors: Counter[str], seconds: float) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in samples)
    return {
        "requests": len(ms),
        "per_s": round(len(ms) / seconds, 1),
        "errors": dict(errors),
        "p50_ms": round(median(ms), 2) if ms else None,
        "p99_ms": round(percentile(ms, 0.99), 2) if ms else None,
        "rss_kib": rss_kib()["VmRSS"],
    }


async def bench(args: argparse.Namespace, stages: list[Any]) -> dict[str, Any]:
    network = MemoryNetwork()
    rng = np.random.default_rng(0)
    frame = {"x": rng.standard_normal((args.rows, args.columns), dtype=np.float32)}
    result: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:

        async def node(peer: ID) -> MemoryTransport:  # with the node's default [bulk] channel limits
            transport = network.transport(peer, limits=BulkLimits())
            await nursery.start(transport.run)
            return transport

        servers = []
        for index, stage in enumerate(stages):
            key = generate_identity()  # a stage server signs a receipt for every RUN it computes
            server = StageServer(
                await node(ID.from_pubkey(key.public_key)), intra_op_threads=1, retention=Retention(key)
            )
            await nursery.start(server.run)
            await server.serve(CID, index, stage.model_bytes, stage)
            servers.append(server)
        route = [[s.local_id] for s in servers]
        args.s1 = servers[1].local_id
        routers = []
        for _ in range(args.clients):
            router = ShardRouter(await node(new_peer()), intra_op_threads=1)
            await nursery.start(router.run)
            routers.append(router)
        hole = await node(new_peer())
        hole.set_handler(RESULT_PURPOSE, black_hole, require_encryption=True)
        for router in routers:  # warm-up: sessions and links
            await router.infer(route, CID, frame, timeout_s=30)

        for period in ("baseline", "flood"):
            flood = Flood(await node(new_peer()), servers[0].local_id, hole.local_id, frame, args)
            samples: list[float] = []
            errors: Counter[str] = Counter()
            log(f"{period}: {args.seconds:g} s")
            async with trio.open_nursery() as inner:
                if period == "flood":
                    for attack in args.attacks.split(","):
                        inner.start_soon({"runs": flood.runs, "channels": flood.channels}[attack])
                until = trio.current_time() + args.seconds
                async with trio.open_nursery() as clients:
                    for router in routers:
                        clients.start_soon(legit, router, route, frame, until, samples, errors)
                inner.cancel_scope.cancel()
            result[period] = summary(samples, errors, args.seconds)
            if period == "flood":
                result[period]["flooder"] = {
                    "run_answers": dict(flood.answers),
                    "channel_opens": flood.opened,
                    "channels_refused": flood.refused,
                }
                result[period]["s0_refused"] = servers[0].admission.refused
                result[period]["s0_usage"] = {
                    u.resource: {"used": u.used, "busiest": u.busiest, "refused": u.refused}
                    for u in servers[0].resources.usage()
                }
        nursery.cancel_scope.cancel()
    base, flooded = result["baseline"]["p99_ms"], result["flood"]["p99_ms"]
    result["p99_ratio"] = round(flooded / base, 3) if base and flooded else None
    result["vm_hwm_kib"] = rss_kib()["VmHWM"]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each period (s)")
    parser.add_argument("--clients", type=int, default=3, help="peers sending normal sharded requests")
    parser.add_argument("--rows", type=int, default=4, help="rows of each request")
    parser.add_argument("--columns", type=int, default=1024, help="float32 columns of each row")
    parser.add_argument("--pause-ms", type=float, default=1.0, help="flooder's pause between its tries")
    parser.add_argument("--attacks", default="runs,channels", help="runs, channels or both (comma-separated)")
    parser.add_argument("--hold-ms", type=float, default=100.0, help="how long it holds each channel")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(str(build_transport_model(Path(tmp), columns=args.columns)))
    stages = list(partition(model, stages=2).stages)
    started = rss_kib()["VmRSS"]
    result = trio.run(bench, args, stages)
    out = {
        "benchmark": "flood",
        "source": source_revision(),
        "machine": machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k != "s1"},
        "rss_kib_at_start": started,
        **result,
    }
    print(json.dumps(out, indent=2), flush=True)


if __name__ == "__main__":
    main()
