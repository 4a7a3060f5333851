"""The shard benchmark's transport parts: activations moved between stages (sharded minus local on
a model that computes next to nothing), and the channel microbenchmark against a sink process."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from scripts.bench.content import make_data
from scripts.bench.content_fetch import FRAME, raw_tcp_receive, seal_all
from scripts.bench.cpu import CpuMeter, tree_cpu_s
from scripts.bench.harness import (
    MIB,
    REPO_ROOT,
    log,
    npz,
    unnpz,
)
from scripts.bench.shard_cluster import TRANSPORT_ADDS, TRANSPORT_COLUMNS, ShardCluster
from scripts.bench.shard_load import post_infer
from scripts.bench.stats import median


def bench_transport(cluster: ShardCluster, plan: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    cid = cluster.models["transport"]
    s0 = cluster["s0"]
    rows = args.transport_rows
    x = np.random.default_rng(2).standard_normal((rows, TRANSPORT_COLUMNS), dtype=np.float32)
    body = npz(x=x)
    want = x.astype(np.float64) + sum(0.25 * (i + 1) for i in range(TRANSPORT_ADDS))
    tensor_bytes = x.nbytes
    times: dict[str, list[float]] = {"local": [], "sharded": []}
    params = {"local": {"mode": "local"}, "sharded": {"mode": "sharded", "plan": plan["plan"]}}
    cpu: dict[str, list[float]] = {"local": [], "sharded": []}  # s0 + s1 CPU seconds per request
    daemons = [s0, cluster["s1"]]
    meter = CpuMeter(d.pid for d in cluster.alive())
    with s0.client() as c:
        for mode in ("local", "sharded"):  # warm-up: sessions, links
            response = post_infer(c, cid, body, params[mode])
            if response.status_code != 200:
                raise RuntimeError(f"transport {mode}: {response.status_code} {response.text[:300]}")
            got = unnpz(response.content)["y"]
            if float(np.abs(got - want).max()) > 1e-5:
                raise RuntimeError(f"transport {mode}: wrong answer")
        for rnd in range(args.transport_runs):
            for mode in ("local", "sharded") if rnd % 2 == 0 else ("sharded", "local"):
                cpu0 = sum(tree_cpu_s(d.pid) for d in daemons)
                t0 = time.perf_counter()
                response = post_infer(c, cid, body, params[mode])
                times[mode].append(time.perf_counter() - t0)
                cpu[mode].append(sum(tree_cpu_s(d.pid) for d in daemons) - cpu0)
                if response.status_code != 200:
                    raise RuntimeError(f"transport {mode}: {response.status_code} {response.text[:300]}")
    moved = 2 * tensor_bytes / MIB

    def rate(extra_s: float) -> float:
        return moved / extra_s if extra_s > 0 else float("inf")

    local, sharded = median(times["local"]), median(times["sharded"])
    best = min(times["sharded"]) - min(times["local"])
    extra_cpu = statistics.fmean(cpu["sharded"]) - statistics.fmean(cpu["local"])  # ticks: average them
    out = {
        "rows": rows,
        "tensor_mib": tensor_bytes / MIB,
        "bytes_moved_mib": moved,
        "local_ms": local * 1e3,
        "sharded_ms": sharded * 1e3,
        "samples_ms": {k: [round(t * 1e3, 1) for t in v] for k, v in times.items()},
        "extra_ms": (sharded - local) * 1e3,
        "effective_mib_per_s": rate(sharded - local),
        "effective_best_mib_per_s": rate(best),
        "cpu_ms": {k: statistics.fmean(v) * 1e3 for k, v in cpu.items()},
        "extra_cpu_ms_per_mib": extra_cpu * 1e3 / moved,
        "other_cpu_pct": meter.other_pct(),
        "steal_pct": meter.steal_pct(),
    }
    log(
        f"transport: {rows} x 4 MiB rows, local {local * 1e3:.0f} ms, sharded {sharded * 1e3:.0f} ms, "
        f"{moved:.0f} MiB moved: {out['effective_mib_per_s']:.0f} MiB/s (best runs: "
        f"{out['effective_best_mib_per_s']:.0f}); extra CPU (s0 + s1) "
        f"{out['extra_cpu_ms_per_mib']:.2f} ms/MiB"
    )
    return out


def sink_server(size: int) -> None:
    """``--sink``: a libp2p host with a bulk ``sink`` purpose (counts bytes, answers the total) and a raw
    TCP server sending ``size`` bytes (from argv) to each connection; prints its addresses as JSON."""
    import trio
    from multiaddr import Multiaddr

    from p2p.bulk import BulkService, Channel
    from p2p.host import HostSettings, build_host, run_host
    from p2p.identity import generate_identity

    data = bytes(size)
    loopback = [Multiaddr("/ip4/127.0.0.1/tcp/0")]

    async def sink(channel: Channel, peer_id: Any) -> None:
        total = 0
        async for frame in channel:
            total += len(frame.payload)
        await channel.send(total.to_bytes(8, "big"))

    async def raw_client(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(memoryview(data))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            host = build_host(generate_identity(), HostSettings(listen_addrs=loopback))
            addrs = await nursery.start(run_host, host, loopback)
            bulk = BulkService(host)
            await nursery.start(bulk.run)
            bulk.set_handler("sink", sink, require_encryption=False)
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            nursery.start_soon(trio.serve_listeners, raw_client, listeners)
            info = {
                "peer_id": host.get_id().to_base58(),
                "addr": str(addrs[0]),
                "raw_port": listeners[0].socket.getsockname()[1],
            }
            print(json.dumps(info), flush=True)
            await trio.sleep_forever()

    trio.run(main)


def bench_channel(mib: int, runs: int) -> dict[str, Any]:
    """The content benchmark's channel rows (:mod:`scripts.bench.content_fetch`): encrypted and
    plain bulk channels to a sink in another process,
    raw TCP, and one core sealing the same bytes (PyNaCl ChaCha20-Poly1305, AES-256-GCM)."""
    import trio
    from libp2p.peer.id import ID
    from multiaddr import Multiaddr

    from p2p.bulk import BulkService
    from p2p.host import HostSettings, build_host, dial, run_host
    from p2p.identity import generate_identity

    data = make_data(mib * MIB)
    server = subprocess.Popen(
        [sys.executable, "-m", "scripts.bench.shard", "--sink", str(len(data))],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    times: dict[str, list[float]] = {}
    try:
        line = server.stdout.readline() if server.stdout else ""
        if not line:
            raise RuntimeError("the sink process did not start")
        info = json.loads(line)

        async def main() -> None:
            loopback = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
            async with trio.open_nursery() as nursery:
                host = build_host(generate_identity(), HostSettings(listen_addrs=loopback))
                await nursery.start(run_host, host, loopback)
                bulk = BulkService(host)
                await nursery.start(bulk.run)
                peer = ID.from_base58(info["peer_id"])
                await dial(host, peer, Multiaddr(info["addr"]), timeout_s=10)
                buffer = bytearray(len(data))
                buffer[:] = data
                chunks = [data[p : p + FRAME] for p in range(0, len(data), FRAME)]

                async def channel(encrypted: bool) -> None:
                    view = memoryview(data)
                    async with bulk.open(peer, "sink", encrypted=encrypted) as ch:
                        for pos in range(0, len(data), FRAME):
                            await ch.send(view[pos : pos + FRAME])
                        await ch.send_eof()
                        total = int.from_bytes((await ch.receive()).payload, "big")
                    if total != len(data):
                        raise RuntimeError(f"sink received {total} of {len(data)} bytes")

                async def raw() -> None:
                    await trio.to_thread.run_sync(raw_tcp_receive, info["raw_port"], buffer)

                async def seal(kind: str) -> None:
                    seal_all(data, chunks, kind)

                methods: dict[str, Callable[[], Any]] = {
                    "raw_tcp": raw,
                    "chan_encrypted": lambda: channel(True),
                    "chan_plain": lambda: channel(False),
                    "nacl_chacha": lambda: seal("nacl_chacha"),
                    "aesgcm": lambda: seal("aesgcm"),
                }
                await channel(True)  # warm-up
                for _ in range(runs):
                    for name, fn in methods.items():
                        t0 = time.perf_counter()
                        await fn()
                        times.setdefault(name, []).append(time.perf_counter() - t0)
                nursery.cancel_scope.cancel()

        trio.run(main)
    finally:
        server.terminate()
        server.wait(10)
    rates = {name: mib / median(ts) for name, ts in times.items()}
    out = {
        "mib": mib,
        "runs": runs,
        "mib_per_s": rates,
        "samples_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "ratio_encrypted_vs_nacl": rates["chan_encrypted"] / rates["nacl_chacha"],
        "ratio_encrypted_vs_raw_tcp": rates["chan_encrypted"] / rates["raw_tcp"],
    }
    log(
        "channel: "
        + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
        + f" MiB/s; encrypted/nacl {out['ratio_encrypted_vs_nacl']:.2f}"
    )
    return out
