"""Benchmark capability lookups in the Kademlia DHT over a sparse network of real daemons.

Run from the repository root with the project's virtual environment::

    python -m scripts.bench.dht             # human-readable table
    python -m scripts.bench.dht --json      # the table, then one JSON document on the last line

What it does:

1. Starts ``--nodes`` daemons (``python -m accel_node run``, loopback, no mDNS, no auto-connect, no
   hardware profile) as separate processes, all at once, and waits until each has written its
   ``api.json``. Startup time and the total RSS of the daemons are reported.
2. Connects them with ``POST /v1/peers/connect`` in a sparse topology: a ring plus ``--chords``
   random chords (seeded by ``--seed``), so that most pairs are several hops apart. The diameter and
   mean hop count (BFS) are printed.
3. Waits until every node has republished its capability record with the topology in place: a node
   publishes at start (when it has no peers yet, so only locally) and again every ``[p2p]
   cap_refresh_s`` (60 s by default, ``--cap-refresh-s`` overrides it), so the script waits for each
   node's second publication, for the daemons' CPU use to settle, and for a probe lookup of the node
   farthest from node 0 to succeed.
4. Measures ``--lookups`` capability lookups, one at a time: for random (source, target) pairs with
   source != target, ``GET /v1/peers/{target}`` on the source's API (one keep-alive typed client,
   ``accel_node.client.Client``, per source, timing its raw ``transport.send``). A lookup fails
   when ``capability`` is null or was not verified during the request (the endpoint falls back to
   the copy in the source's peer table when the network lookup fails).
   The baseline, measured in the same run on the same sources and clients, is ``GET /v1/status``:
   the floor of the HTTP/API path. Each pair runs both requests, in alternating order.

The target is a lookup p50 <= 100 ms. Lookups dial peers they are not connected to, so the network
gets denser while it is measured (with 20 nodes it is a full mesh after the first refresh); connection
counts before and after are reported, and latencies are split by hop distance in the built topology
and by first/later lookups. Every ``cap_refresh_s`` each node re-fetches every known peer's record, and
all nodes started together tick together: the number of such node ticks inside the measurement window
is reported, since lookups that overlap them are much slower. The daemons' CPU use before and during
the measurement tells whether the machine was saturated (20 daemons on a 2-core machine can be).

``--env ACCEL_NODE_<SECTION>_<KEY>=VALUE`` changes every daemon's configuration, e.g.
``--env ACCEL_NODE_P2P_PRESENCE_INTERVAL_S=3600`` takes presence gossip out of the picture. ``--keep``
keeps the homes and logs; the most frequent warnings and py-libp2p complaints are summarized anyway.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from accel_node.client import Client
from accel_node.core import endpoints as E
from accel_node.errors import DaemonTimeoutError
from scripts.bench.cpu import wait_quiet
from scripts.bench.dht_network import (
    build_edges,
    connect_topology,
    connected_counts,
    fresh_capability,
    hop_matrix,
    lookup,
    p2p_addr,
    scan_logs,
)
from scripts.bench.dht_report import render, summarize_lookups
from scripts.bench.harness import (
    LOOPBACK_ENV,
    MIB,
    REPO_ROOT,
    Cluster,
    Daemon,
    log,
    machine_info,
    process_env,
    source_revision,
)
from scripts.bench.stats import summarize_ms

READY_TIMEOUT_S = 180.0
DEFAULT_CAP_REFRESH_S = 60.0  # [p2p] cap_refresh_s default
QUIET_CPU_PCT = 40.0  # all daemons together, percent of one core
PROBE_TIMEOUT_S = 30.0
LOOKUP_TIMEOUT_S = 30.0


def daemon_env(args: argparse.Namespace) -> dict[str, str]:
    """Every daemon's environment (each also gets its own ``ACCEL_NODE_NODE_NAME``)."""
    env = process_env(LOOPBACK_ENV)
    env.update(
        {
            "ACCEL_NODE_PROFILE_AUTO": "off",
            "ACCEL_NODE_P2P_AUTO_CONNECT": "false",  # keep the topology built here
            "ACCEL_NODE_P2P_PERF_INTERVAL_S": "0",
            "ACCEL_NODE_LOG_LEVEL": args.log_level,
        }
    )
    if args.cap_refresh_s is not None:
        env["ACCEL_NODE_P2P_CAP_REFRESH_S"] = repr(float(args.cap_refresh_s))
    env.update(getattr(args, "env", None) or {})
    return env


def total_cpu_s(daemons: list[Daemon]) -> float:
    return sum(d.cpu_s() for d in daemons)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    n = args.nodes
    cap_refresh_s = args.cap_refresh_s if args.cap_refresh_s is not None else DEFAULT_CAP_REFRESH_S
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "source": {"root": str(REPO_ROOT), "revision": source_revision()},
        "machine": machine_info(),
        "params": {
            "nodes": n,
            "lookups": args.lookups,
            "chords": args.chords,
            "seed": args.seed,
            "cap_refresh_s": cap_refresh_s,
            "log_level": args.log_level,
            "env": args.env,
        },
    }
    tmp = Path(tempfile.mkdtemp(prefix="accel-bench-dht-"))
    cluster = Cluster(
        tmp,
        {f"node{i:02d}": {"ACCEL_NODE_NODE_NAME": f"bench-{i:02d}"} for i in range(n)},
        base_env=daemon_env(args),
    )
    daemons = list(cluster)
    clients: list[Client] = []
    try:
        # 1. start all daemons at once, then wait for every api.json
        log(f"starting {n} daemons in {tmp}")
        t_start = time.monotonic()
        for d in daemons:
            d.start()
        deadline = t_start + READY_TIMEOUT_S
        while not all(d.poll_ready() for d in daemons):
            if time.monotonic() > deadline:
                late = [d.name for d in daemons if not d.info]
                raise RuntimeError(f"nodes {late} not ready after {READY_TIMEOUT_S:g} s")
            time.sleep(0.05)
        t_ready = time.monotonic()
        clients.extend(d.client(LOOKUP_TIMEOUT_S) for d in daemons)
        ready_times = sorted(d.ready_at - t_start for d in daemons)
        rss_ready = [d.memory() for d in daemons]
        results["startup"] = {
            "all_ready_s": t_ready - t_start,
            "first_ready_s": ready_times[0],
            "median_ready_s": statistics.median(ready_times),
            "cpu_s_total": total_cpu_s(daemons),
        }
        log(f"all {n} ready in {t_ready - t_start:.1f} s (first after {ready_times[0]:.1f} s)")

        # 2. topology
        edges = build_edges(n, args.chords, rng)
        dist = hop_matrix(n, edges)
        pair_hops = [dist[a][b] for a in range(n) for b in range(n) if a != b]
        if any(h < 0 for h in pair_hops):
            raise RuntimeError("topology is not connected")
        hist = collections.Counter(pair_hops)
        results["topology"] = {
            "edges": len(edges),
            "edge_list": edges,
            "diameter": max(pair_hops),
            "mean_hops": statistics.fmean(pair_hops),
            "hop_histogram": {str(k): hist[k] for k in sorted(hist)},
        }
        log(
            f"topology: ring + {len(edges) - n} chords = {len(edges)} edges, diameter "
            f"{max(pair_hops)}, mean hops {statistics.fmean(pair_hops):.2f}, "
            f"pairs by hops {dict(sorted(hist.items()))}"
        )
        t0 = time.monotonic()
        connect_topology(clients, [p2p_addr(d) for d in daemons], edges)
        t_connected = time.monotonic()
        results["topology"]["connect_s"] = t_connected - t0
        conn0 = connected_counts(clients)
        results["topology"]["connected_after_build"] = {
            "mean": statistics.fmean(conn0),
            "min": min(conn0),
            "max": max(conn0),
        }
        log(f"connected in {t_connected - t0:.1f} s; peers per node {min(conn0)}..{max(conn0)}")
        earliest_ready = min(d.ready_at for d in daemons)
        if t_connected > earliest_ready + cap_refresh_s:
            log(
                "warning: the topology was finished after some nodes' first republication; their records "
                "may sit on few peers until the next one"
            )

        # 3. wait for every node's second publication (with the topology in place), then quiet
        republished_at = max(d.ready_at for d in daemons) + cap_refresh_s + args.publish_margin_s
        remaining = republished_at - time.monotonic()
        if remaining > 0:
            log(f"waiting {remaining:.0f} s for every node to republish its record with peers")
            time.sleep(remaining)
        pct = 100 * wait_quiet(
            lambda: total_cpu_s(daemons),
            below=QUIET_CPU_PCT / 100,
            window_s=1.0,
            max_wait_s=args.quiet_wait_s,
        )
        log(f"daemons' CPU use {pct:.0f} % of a core before measuring")
        far = max(range(n), key=lambda j: dist[0][j])
        t_probe = time.monotonic()
        probes, probe_ok = 0, False
        while time.monotonic() - t_probe < PROBE_TIMEOUT_S:
            probes += 1
            _, status, body, wall = lookup(clients[0], daemons[far].peer_id)
            if fresh_capability(status, body, wall):
                probe_ok = True
                break
            time.sleep(0.5)
        results["publish_wait"] = {
            "since_all_ready_s": time.monotonic() - t_ready,
            "probe_lookups": probes,
            "probe_ok": probe_ok,
            "probe_s": time.monotonic() - t_probe,
            "cpu_pct_before": pct,
        }
        if probe_ok:
            log(f"probe lookup 0 -> {far} ({dist[0][far]} hops) ok after {probes} tries")
        else:
            log(
                f"warning: probe lookup 0 -> {far} ({dist[0][far]} hops) failed {probes} times in "
                f"{PROBE_TIMEOUT_S:g} s; measuring anyway"
            )

        # 4. measurements
        pairs = []
        for _ in range(args.lookups):
            a, b = rng.sample(range(n), 2)
            pairs.append((a, b))
        t_measure, t_measure_unix = time.monotonic(), time.time()
        cpu0 = total_cpu_s(daemons)
        records: list[dict[str, Any]] = []
        status_ms: list[float] = []
        seen_sources: set[int] = set()
        for i, (a, b) in enumerate(pairs):
            if time.monotonic() - t_measure > args.max_measure_s:
                log(f"stopping after {i} lookups: --max-measure-s {args.max_measure_s:g} s reached")
                break
            client = clients[a]
            order = ("status", "lookup") if i % 2 == 0 else ("lookup", "status")
            rec: dict[str, Any] = {
                "source": a,
                "target": b,
                "hops": dist[a][b],
                "first": a not in seen_sources,
            }
            seen_sources.add(a)
            for what in order:
                if what == "status":
                    s0 = time.perf_counter()
                    try:
                        client.transport.send(E.STATUS)
                    except DaemonTimeoutError:
                        log(f"GET /v1/status on node {a} timed out")
                    status_ms.append((time.perf_counter() - s0) * 1e3)
                else:
                    elapsed, code, body, wall = lookup(client, daemons[b].peer_id)
                    rec["ms"] = elapsed * 1e3
                    rec["status"] = code
                    rec["ok"] = fresh_capability(code, body, wall)
                    rec["stale"] = bool(body and body.get("capability") is not None and not rec["ok"])
            records.append(rec)
            if (i + 1) % 50 == 0:
                log(f"{i + 1}/{len(pairs)} lookups")
        t_measured = time.monotonic()
        cpu_used = total_cpu_s(daemons) - cpu0
        conn1 = connected_counts(clients)
        rss_end = [d.memory() for d in daemons]

        results["lookup"] = summarize_lookups(records, cpu_used)
        lk, st = results["lookup"], summarize_ms(status_ms)
        results["status"] = st
        results["ratio_p50"] = lk["p50_ms"] / st["p50_ms"]
        results["measure_s"] = t_measured - t_measure
        results["measure_window_unix"] = [t_measure_unix, t_measure_unix + (t_measured - t_measure)]
        results["lookup"]["planned"] = len(pairs)
        results["daemon_cpu_pct_during_measurement"] = cpu_used / (t_measured - t_measure) * 100
        # Refresh ticks (every cap_refresh_s after each node's start) inside the measurement window:
        # each makes that node re-fetch every known peer's record.
        ticks = 0
        for d in daemons:
            k = 1
            while d.ready_at + k * cap_refresh_s < t_measured:
                if d.ready_at + k * cap_refresh_s >= t_measure:
                    ticks += 1
                k += 1
        results["refresh_ticks_during_measurement"] = ticks
        results["connected_after_measurement"] = {
            "mean": statistics.fmean(conn1),
            "min": min(conn1),
            "max": max(conn1),
        }
        results["memory"] = {
            "rss_total_ready_mib": sum(r for r, _ in rss_ready) / MIB,
            "rss_total_end_mib": sum(r for r, _ in rss_end) / MIB,
            "uss_total_end_mib": sum(u for _, u in rss_end) / MIB,
            "rss_per_node_end_mib": sum(r for r, _ in rss_end) / MIB / n,
        }
        results["logs"] = scan_logs(daemons)
    except BaseException:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is not None and d.proc.returncode != 0:
                log(f"{d.name} log tail:\n{d.log(tail=3000)}")
        raise
    finally:
        log("stopping daemons")
        for client in clients:
            client.close()
        codes = cluster.stop(
            on_kill=lambda d: log(f"{d.name} did not exit within 20 s of SIGTERM; killing it")
        )
        results["exit_codes_nonzero"] = {
            str(int(k.removeprefix("node"))): v for k, v in codes.items() if v != 0
        }
        if args.keep:
            log(f"kept homes and logs in {tmp}")
            results["kept_dir"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["machine"]["loadavg_1m_at_end"] = os.getloadavg()[0]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20, help="daemons to start (default 20)")
    parser.add_argument("--lookups", type=int, default=200, help="capability lookups to time (default 200)")
    parser.add_argument("--chords", type=int, default=3, help="random chords added to the ring (default 3)")
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the topology and pair choice (default 1)"
    )
    parser.add_argument(
        "--cap-refresh-s",
        type=float,
        default=None,
        help=f"override [p2p] cap_refresh_s (default: the daemon's, {DEFAULT_CAP_REFRESH_S:g} s); the "
        "benchmark waits for every node's second publication",
    )
    parser.add_argument(
        "--publish-margin-s",
        type=float,
        default=3.0,
        help="extra wait after the republication is due, for its DHT puts (default 3)",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="daemons' log level",
    )
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=20.0,
        help=f"wait up to this long for the daemons to use < {QUIET_CPU_PCT:g} %% of a core (default 20)",
    )
    parser.add_argument(
        "--max-measure-s",
        type=float,
        default=180.0,
        help="stop timing lookups after this long, whatever is left (default 180)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra ACCEL_NODE_* variable for every daemon (repeatable), e.g. "
        "ACCEL_NODE_P2P_PRESENCE_INTERVAL_S=3600",
    )
    parser.add_argument("--keep", action="store_true", help="keep the daemons' homes and logs")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown rows")
    args = parser.parse_args(argv)
    if args.nodes < 2:
        parser.error("--nodes must be at least 2")
    if args.lookups < 1:
        parser.error("--lookups must be at least 1")
    env: dict[str, str] = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("ACCEL_NODE_"):
            parser.error(f"--env {item!r}: expected ACCEL_NODE_<SECTION>_<KEY>=VALUE")
        env[key] = value
    args.env = env

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # unwinds through run_benchmark's clean-up

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupted)
    try:
        results = run_benchmark(args)
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc}); daemons stopped")
        return 130
    print(render(results, as_markdown=args.markdown))
    if args.json:
        print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
