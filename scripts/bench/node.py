"""Benchmark an accel-node daemon: idle RSS and control-API latency, each against a baseline.

Run from the repository root with the project's virtual environment::

    python -m scripts.bench.node            # human-readable table
    python -m scripts.bench.node --json     # the table, then one JSON document on the last line

What it measures (every figure against a baseline taken in the same run, because shared and
virtual machines are noisy):

1. Idle RSS of a real daemon (``python -m accel_node run``, loopback, no mDNS) after it has idled
   for ``--idle`` seconds, against a bare py-libp2p host process with the same transport (Noise,
   yamux, built by ``p2p.host.build_host``) idling the same time. RSS is sampled a few times and
   the median is reported; the target is daemon/bare <= 1.5.
2. ``GET /v1/status`` with ``--concurrency`` clients (each a keep-alive typed client,
   ``accel_node.client.Client``, in its own thread, timing its raw ``transport.send``), against
   ``GET /healthz`` (no token, trivial handler) measured the same way, so that the
   ratio status/healthz isolates the handler's cost from the server's and the client's. Endpoints
   are measured in alternating order over ``--rounds`` rounds; each figure is the median over
   rounds. The target is a status p50 <= 2 ms. The clients run on the same machine as the daemon
   and compete with it for the CPU; the daemon's own CPU time per request (read with psutil) is
   reported too, as a figure that the client's cost does not inflate.

Targets live here (and in docs/BENCHMARKS.md), not in the unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from accel_node.client import Client
from accel_node.core import endpoints as E
from scripts.bench.harness import (
    LOOPBACK_ENV,
    MIB,
    REPO_ROOT,
    Daemon,
    Process,
    env_pairs,
    log,
    machine_info,
    process_env,
    source_revision,
    wait_all_ready,
)
from scripts.bench.node_load import LoadResult, run_load
from scripts.bench.node_report import RSS_RATIO_TARGET, STATUS_P50_TARGET_MS, render
from scripts.bench.stats import median

# A bare py-libp2p host built and run by the daemon's own functions (Noise, yamux, same connection
# settings) and nothing else; argv[1] is the ready file to write.
BARE_HOST_SCRIPT = """
import json, os, signal, sys
import trio
from multiaddr import Multiaddr
from p2p.host import HostSettings, build_host, run_host
from p2p.identity import generate_identity


async def main(ready_path):
    listen = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host = build_host(generate_identity(), HostSettings(listen_addrs=listen))
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            addrs = await nursery.start(run_host, host, listen)
            info = {"pid": os.getpid(), "addrs": [str(a) for a in addrs]}
            tmp = ready_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(info, f)
            os.replace(tmp, ready_path)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


trio.run(main, sys.argv[1])
"""


def measure_idle_rss(daemon: Process, bare: Process, idle_s: float, samples: int) -> dict[str, Any]:
    # Both processes were started together; each idles ``idle_s`` after its own ready time.
    for child in sorted((daemon, bare), key=lambda c: c.ready_at):
        remaining = child.ready_at + idle_s - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
    rss: dict[str, list[float]] = {"daemon": [], "bare": []}
    uss: dict[str, list[float]] = {"daemon": [], "bare": []}
    for _ in range(samples):
        for key, child in (("daemon", daemon), ("bare", bare)):
            r, u = child.rss_bytes()
            rss[key].append(r / MIB)
            uss[key].append(u / MIB)
        time.sleep(0.25)
    now = time.monotonic()
    cpu_pct = {
        key: (child.cpu_s(reaped_children=True) - child.cpu_at_ready) / (now - child.ready_at) * 100
        for key, child in (("daemon", daemon), ("bare", bare))
    }
    out = {
        "daemon_rss_mib": median(rss["daemon"]),
        "bare_rss_mib": median(rss["bare"]),
        "daemon_uss_mib": median(uss["daemon"]),
        "bare_uss_mib": median(uss["bare"]),
        "daemon_idle_cpu_pct": cpu_pct["daemon"],
        "daemon_child_processes": daemon.children_seen,
        "bare_idle_cpu_pct": cpu_pct["bare"],
        "samples": samples,
        "idle_s": idle_s,
    }
    out["rss_ratio"] = out["daemon_rss_mib"] / out["bare_rss_mib"]
    out["uss_ratio"] = out["daemon_uss_mib"] / out["bare_uss_mib"]
    return out


def measure_api(daemon: Daemon, args: argparse.Namespace) -> dict[str, Any]:
    url = str(daemon.info["url"])
    token = (Path(args.home_dir) / "api.token").read_text().strip()

    def daemon_cpu_s() -> float:
        return daemon.cpu_s(reaped_children=True)

    endpoints = {"healthz": (E.HEALTH, None), "status": (E.STATUS, token)}
    loaded: dict[str, list[LoadResult]] = {k: [] for k in endpoints}
    single: dict[str, list[LoadResult]] = {k: [] for k in endpoints}
    with Client(url, token, timeout_s=30.0) as metrics_client:
        for rnd in range(args.rounds):
            order = list(endpoints) if rnd % 2 == 0 else list(reversed(endpoints))
            for key in order:
                endpoint, key_token = endpoints[key]
                path = endpoint.path
                result = run_load(
                    url,
                    key_token,
                    endpoint,
                    total=args.requests,
                    concurrency=args.concurrency,
                    warmup=args.warmup,
                    server_cpu=daemon_cpu_s,
                    metrics_client=metrics_client,
                )
                loaded[key].append(result)
                log(
                    f"round {rnd + 1}/{args.rounds} {path:<10} c={args.concurrency}: "
                    f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                    f"{result.rps:.0f} req/s, server CPU {result.server_cpu_us:.0f} us/req"
                )
                if args.single_requests > 0:
                    one = run_load(
                        url,
                        key_token,
                        endpoint,
                        total=args.single_requests,
                        concurrency=1,
                        warmup=args.warmup,
                        server_cpu=daemon_cpu_s,
                        metrics_client=metrics_client,
                    )
                    single[key].append(one)
                    log(
                        f"round {rnd + 1}/{args.rounds} {path:<10} c=1: "
                        f"p50 {one.p50_ms:.2f} ms, p99 {one.p99_ms:.2f} ms"
                    )

    def summary(results: list[LoadResult]) -> dict[str, Any]:
        fields = [f for f in LoadResult.__dataclass_fields__ if f not in ("requests", "errors")]
        out: dict[str, Any] = {f: median([getattr(r, f) for r in results]) for f in fields}
        out["requests"] = sum(r.requests for r in results)
        out["errors"] = sum(r.errors for r in results)
        out["rounds"] = [r.__dict__ for r in results]
        return out

    api: dict[str, Any] = {
        "concurrency": args.concurrency,
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "healthz": summary(loaded["healthz"]),
        "status": summary(loaded["status"]),
    }
    if args.single_requests > 0:
        api["single_client"] = {k: summary(v) for k, v in single.items()}
    s, h = api["status"], api["healthz"]
    api["ratio_p50"] = s["p50_ms"] / h["p50_ms"]
    api["ratio_rps"] = s["rps"] / h["rps"]
    api["ratio_server_cpu"] = s["server_cpu_us"] / h["server_cpu_us"]
    return api


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "source": {"root": str(REPO_ROOT), "revision": source_revision()},
        "daemon_env": list(args.daemon_env),
        "machine": machine_info(),
    }
    with tempfile.TemporaryDirectory(prefix="accel-bench-") as tmp:
        tmpdir = Path(tmp)
        home = tmpdir / "daemon"
        args.home_dir = str(home)
        children: list[Process] = []
        try:
            log("starting daemon and bare libp2p host")
            # the daemon's own defaults (profile auto, auto-connect) on loopback
            daemon = Daemon(home, base_env=process_env(LOOPBACK_ENV), **env_pairs(args.daemon_env))
            daemon.start()
            children.append(daemon)
            bare_ready = tmpdir / "bare.json"
            bare = Process("bare libp2p host", bare_ready, tmpdir / "bare.log", process_env())
            bare.spawn([sys.executable, "-c", BARE_HOST_SCRIPT, str(bare_ready)])
            children.append(bare)
            wait_all_ready(children)
            log(f"ready; idling {args.idle:g} s before reading RSS")
            results["rss"] = measure_idle_rss(daemon, bare, args.idle, args.rss_samples)
            bare_code = bare.stop()
            if bare_code != 0:
                log(f"note: bare host exited with {bare_code}")

            log("measuring control API")
            results["api"] = measure_api(daemon, args)
            rss_after, _ = daemon.rss_bytes()
            results["rss"]["daemon_rss_after_load_mib"] = rss_after / MIB

            code = daemon.stop()
            results["daemon_exit_code"] = code
            if code != 0:
                log(f"warning: daemon exited with {code} after SIGTERM:\n{daemon.log(tail=4000)}")
        except BaseException:
            for child in children:
                if child.alive:
                    log(f"{child.name} log tail:\n{child.log(tail=4000)}")
            raise
        finally:
            for child in children:
                child.kill()
    results["machine"]["loadavg_1m_at_end"] = os.getloadavg()[0]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=5.0, help="seconds to idle before reading RSS [5]")
    parser.add_argument("--rss-samples", type=int, default=5, help="RSS samples per process [5]")
    parser.add_argument(
        "--requests", type=int, default=4000, help="measured requests per endpoint per round [4000]"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients [16]")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per endpoint [3]")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up requests per client [50]")
    parser.add_argument(
        "--single-requests",
        type=int,
        default=500,
        help="requests per round with a single client, for unloaded latency; 0 skips [500]",
    )
    parser.add_argument(
        "--daemon-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment variable for the daemon, e.g. ACCEL_NODE_PROFILE_AUTO=off (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown rows")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    if any("=" not in kv for kv in args.daemon_env):
        parser.error("--daemon-env takes KEY=VALUE")

    results = run_benchmark(args)
    print(render(results, as_markdown=args.markdown))
    if args.json:
        print(json.dumps(results, sort_keys=True))
    ok = (
        results["rss"]["rss_ratio"] <= RSS_RATIO_TARGET
        and results["api"]["status"]["p50_ms"] <= STATUS_P50_TARGET_MS
        and results["daemon_exit_code"] == 0
    )
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
