#!/usr/bin/env python
"""Benchmark capability lookups in the Kademlia DHT over a sparse network of real daemons.

Run from the repository root with the project's virtual environment::

    python scripts/bench_dht.py             # human-readable table
    python scripts/bench_dht.py --json      # the table, then one JSON document on the last line

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
   source != target, ``GET /v1/peers/{target}`` on the source's API (one keep-alive ``httpx.Client``
   per source). A lookup fails when ``capability`` is null or was not verified during the request
   (the endpoint falls back to the copy in the source's peer table when the network lookup fails).
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
import concurrent.futures
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from benchlib import percentile, source_revision

REPO_ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
READY_TIMEOUT_S = 180.0
DEFAULT_CAP_REFRESH_S = 60.0  # [p2p] cap_refresh_s default
LOOKUP_P50_TARGET_MS = 100.0
QUIET_CPU_PCT = 40.0  # all daemons together, percent of one core
PROBE_TIMEOUT_S = 30.0
LOOKUP_TIMEOUT_S = 30.0
LOG_LINE = re.compile(r"^\S+Z\s+(WARNING|ERROR|CRITICAL)\s")  # accel_node's text log format
LIBP2P_LINE = re.compile(r"^(Failed|Error|Exception|Timeout|Unexpected)")  # py-libp2p's own messages
TIMESTAMP = re.compile(r"^\S+Z\s+")
PEER_ID = re.compile(r"\b(12D3KooW|Qm)[1-9A-HJ-NP-Za-km-z]{20,}")
NUMBER = re.compile(r"\d+(\.\d+)?")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Daemons


def daemon_env(args: argparse.Namespace, index: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_NODE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(
        {
            "ACCEL_NODE_P2P_LISTEN_ADDRS": '["/ip4/127.0.0.1/tcp/0"]',
            "ACCEL_NODE_P2P_MDNS": "false",
            "ACCEL_NODE_API_PORT": "0",
            "ACCEL_NODE_PROFILE_AUTO": "off",
            "ACCEL_NODE_P2P_AUTO_CONNECT": "false",  # keep the topology built here
            "ACCEL_NODE_P2P_PERF_INTERVAL_S": "0",
            "ACCEL_NODE_LOG_LEVEL": args.log_level,
            "ACCEL_NODE_NODE_SHUTDOWN_GRACE_S": "5",
            "ACCEL_NODE_NODE_NAME": f"bench-{index:02d}",
        }
    )
    if args.cap_refresh_s is not None:
        env["ACCEL_NODE_P2P_CAP_REFRESH_S"] = repr(float(args.cap_refresh_s))
    env.update(getattr(args, "env", None) or {})
    return env


class Daemon:
    """One ``accel-node run`` process with its own home."""

    def __init__(self, index: int, root: Path, env: dict[str, str]) -> None:
        self.index = index
        self.home = root / f"node{index:02d}"
        self.log_path = root / f"node{index:02d}.log"
        self.home.mkdir(parents=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "accel_node", "--home", str(self.home), "run"],
                env=env,
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started_at = time.monotonic()
        self.ready_at = 0.0
        self.info: dict[str, Any] = {}
        self.client: httpx.Client | None = None

    def poll_ready(self) -> bool:
        if self.info:
            return True
        if self.proc.poll() is not None:
            raise RuntimeError(f"node {self.index} exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            info = json.loads((self.home / "api.json").read_text())
        except (FileNotFoundError, ValueError):
            return False
        if info.get("pid") != self.proc.pid:
            return False
        self.info = info
        self.ready_at = time.monotonic()
        token = (self.home / "api.token").read_text().strip()
        self.client = httpx.Client(
            base_url=str(info["url"]),
            headers={"Authorization": f"Bearer {token}"},
            timeout=LOOKUP_TIMEOUT_S,
        )
        return True

    @property
    def peer_id(self) -> str:
        return str(self.info["peer_id"])

    @property
    def addr(self) -> str:
        addr = next(a for a in self.info["addrs"] if a.startswith("/ip4/127.0.0.1/"))
        return addr if "/p2p/" in addr else f"{addr}/p2p/{self.peer_id}"

    def api(self) -> httpx.Client:
        assert self.client is not None
        return self.client

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def memory(self) -> tuple[int, int]:
        """(RSS, USS) in bytes."""
        mem = psutil.Process(self.proc.pid).memory_full_info()
        return mem.rss, mem.uss

    def cpu_s(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system


def stop_all(daemons: list[Daemon], timeout: float = 20.0) -> dict[int, int | None]:
    """SIGTERM every daemon, wait for all together, then SIGKILL the stragglers."""
    for d in daemons:
        if d.client is not None:
            d.client.close()
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)  # Popen skips a process it has already reaped
    deadline = time.monotonic() + timeout
    codes: dict[int, int | None] = {}
    for d in daemons:
        try:
            codes[d.index] = d.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"node {d.index} did not exit within {timeout:g} s of SIGTERM; killing it")
            d.proc.kill()
            d.proc.wait()
            codes[d.index] = None
    return codes


def total_cpu_s(daemons: list[Daemon]) -> float:
    return sum(d.cpu_s() for d in daemons)


def wait_quiet(daemons: list[Daemon], *, max_wait_s: float, window_s: float = 1.0) -> float:
    """Wait until the daemons together use less than QUIET_CPU_PCT of a core; returns the last reading."""
    deadline = time.monotonic() + max_wait_s
    pct = float("nan")
    while True:
        c0, t0 = total_cpu_s(daemons), time.monotonic()
        time.sleep(window_s)
        pct = (total_cpu_s(daemons) - c0) / (time.monotonic() - t0) * 100
        if pct < QUIET_CPU_PCT or time.monotonic() > deadline:
            return pct


# --------------------------------------------------------------------------------------------
# Topology


def build_edges(n: int, chords: int, rng: random.Random) -> list[tuple[int, int]]:
    """A ring over ``n`` nodes plus ``chords`` random extra edges (no duplicates, no self-loops)."""
    edges = {(min(i, (i + 1) % n), max(i, (i + 1) % n)) for i in range(n)}
    target = min(n * (n - 1) // 2, len(edges) + chords)
    while len(edges) < target:
        a, b = rng.sample(range(n), 2)
        edges.add((min(a, b), max(a, b)))
    return sorted(edges)


def hop_matrix(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    adj: dict[int, list[int]] = collections.defaultdict(list)
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    dist = []
    for src in range(n):
        row = [-1] * n
        row[src] = 0
        queue = collections.deque([src])
        while queue:
            u = queue.popleft()
            for v in adj[u]:
                if row[v] < 0:
                    row[v] = row[u] + 1
                    queue.append(v)
        dist.append(row)
    return dist


# --------------------------------------------------------------------------------------------
# Statistics


def summarize(values_ms: list[float]) -> dict[str, float]:
    s = sorted(values_ms)
    return {
        "n": len(s),
        "p50_ms": percentile(s, 0.50),
        "p90_ms": percentile(s, 0.90),
        "p99_ms": percentile(s, 0.99),
        "mean_ms": statistics.fmean(s) if s else float("nan"),
        "min_ms": s[0] if s else float("nan"),
        "max_ms": s[-1] if s else float("nan"),
    }


# --------------------------------------------------------------------------------------------
# Benchmark


def lookup(client: httpx.Client, peer_id: str) -> tuple[float, int, dict[str, Any] | None, float]:
    """One capability lookup: (seconds, status code, body or None, unix time at start)."""
    wall = time.time()
    t0 = time.perf_counter()
    try:
        response = client.get(f"/v1/peers/{peer_id}")
    except httpx.TimeoutException:
        return time.perf_counter() - t0, 0, None, wall
    elapsed = time.perf_counter() - t0
    body = (
        response.json() if response.headers.get("content-type", "").startswith("application/json") else None
    )
    return elapsed, response.status_code, body, wall


def fresh_capability(status: int, body: dict[str, Any] | None, started_wall: float) -> bool:
    """The lookup returned a capability verified during this request (not an older stored copy)."""
    if status != 200 or not body or body.get("capability") is None:
        return False
    verified = body.get("capability_verified_at")
    return verified is not None and float(verified) >= started_wall - 1.0


def connected_counts(daemons: list[Daemon]) -> list[int]:
    return [int(d.api().get("/v1/status").json()["connected_peers"]) for d in daemons]


def connect_topology(daemons: list[Daemon], edges: list[tuple[int, int]]) -> None:
    def one(edge: tuple[int, int]) -> None:
        a, b = edge
        response = daemons[a].api().post("/v1/peers/connect", json={"addr": daemons[b].addr})
        if response.status_code != 200:
            raise RuntimeError(f"connect {a} -> {b} failed: {response.status_code} {response.text[:300]}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, edges))


def _normalize(line: str) -> str:
    line = TIMESTAMP.sub("", line.strip())
    line = PEER_ID.sub("<peer>", line)
    return NUMBER.sub("N", line)[:200]


def scan_logs(daemons: list[Daemon], top: int = 10) -> dict[str, Any]:
    """Group the daemons' warnings, errors, tracebacks and py-libp2p complaints by message."""
    counts: collections.Counter[str] = collections.Counter()
    groups: collections.Counter[str] = collections.Counter()
    for d in daemons:
        try:
            lines = d.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                counts["traceback"] += 1
                # the exception is the first unindented line after the frames
                exc = next(
                    (
                        x
                        for x in lines[i + 1 : i + 400]
                        if x and not x[0].isspace() and not x.startswith(("Traceback", "During", "The above"))
                    ),
                    "?",
                )
                groups[f"traceback: {_normalize(exc)}"] += 1
            elif m := LOG_LINE.search(line):
                counts[m.group(1).lower()] += 1
                groups[_normalize(line)] += 1
            elif LIBP2P_LINE.match(line):
                counts["libp2p"] += 1
                groups[f"libp2p: {_normalize(line)}"] += 1
    return {"counts": dict(counts), "top": groups.most_common(top)}


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    n = args.nodes
    cap_refresh_s = args.cap_refresh_s if args.cap_refresh_s is not None else DEFAULT_CAP_REFRESH_S
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "source": {"root": str(REPO_ROOT), "revision": source_revision()},
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_1m_at_start": os.getloadavg()[0],
        },
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
    daemons: list[Daemon] = []
    try:
        # 1. start all daemons at once, then wait for every api.json
        log(f"starting {n} daemons in {tmp}")
        t_start = time.monotonic()
        for i in range(n):
            daemons.append(Daemon(i, tmp, daemon_env(args, i)))
        deadline = t_start + READY_TIMEOUT_S
        while not all(d.poll_ready() for d in daemons):
            if time.monotonic() > deadline:
                late = [d.index for d in daemons if not d.info]
                raise RuntimeError(f"nodes {late} not ready after {READY_TIMEOUT_S:g} s")
            time.sleep(0.05)
        t_ready = time.monotonic()
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
        connect_topology(daemons, edges)
        t_connected = time.monotonic()
        results["topology"]["connect_s"] = t_connected - t0
        conn0 = connected_counts(daemons)
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
        pct = wait_quiet(daemons, max_wait_s=args.quiet_wait_s)
        log(f"daemons' CPU use {pct:.0f} % of a core before measuring")
        far = max(range(n), key=lambda j: dist[0][j])
        t_probe = time.monotonic()
        probes, probe_ok = 0, False
        while time.monotonic() - t_probe < PROBE_TIMEOUT_S:
            probes += 1
            _, status, body, wall = lookup(daemons[0].api(), daemons[far].peer_id)
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
            client = daemons[a].api()
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
                        client.get("/v1/status").raise_for_status()
                    except httpx.TimeoutException:
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
        conn1 = connected_counts(daemons)
        rss_end = [d.memory() for d in daemons]

        lookup_ms = [r["ms"] for r in records]
        ok_ms = [r["ms"] for r in records if r["ok"]]
        lk, st = summarize(lookup_ms), summarize(status_ms)
        by_hops = {
            str(h): summarize([r["ms"] for r in records if r["hops"] == h])
            for h in sorted({r["hops"] for r in records})
        }
        half = len(records) // 2
        slowest = sorted(records, key=lambda r: r["ms"], reverse=True)[:5]
        results["lookup"] = {
            **lk,
            "successful_only": summarize(ok_ms),
            "success": sum(r["ok"] for r in records),
            "success_rate": sum(r["ok"] for r in records) / len(records),
            "failed_timeout": sum(r["status"] == 0 for r in records),
            "failed_non_200": sum(r["status"] not in (0, 200) for r in records),
            "failed_stale_copy": sum(r["stale"] for r in records),
            "by_hops": by_hops,
            "first_per_source": summarize([r["ms"] for r in records if r["first"]]),
            "later_per_source": summarize([r["ms"] for r in records if not r["first"]]),
            "first_half": summarize(lookup_ms[:half]),
            "second_half": summarize(lookup_ms[half:]),
            "over_1s": sum(ms > 1000 for ms in lookup_ms),
            "slowest": slowest,
            "daemon_cpu_ms_per_lookup": cpu_used * 1e3 / len(records),
        }
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
            if d.proc.poll() is not None and d.proc.returncode != 0:
                log(f"node {d.index} log tail:\n{d.log_tail()}")
        raise
    finally:
        log("stopping daemons")
        codes = stop_all(daemons)
        results["exit_codes_nonzero"] = {str(k): v for k, v in codes.items() if v != 0}
        if args.keep:
            log(f"kept homes and logs in {tmp}")
            results["kept_dir"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["machine"]["loadavg_1m_at_end"] = os.getloadavg()[0]
    return results


# --------------------------------------------------------------------------------------------
# Report


def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(results: dict[str, Any]) -> str:
    p, topo, lk, st = results["params"], results["topology"], results["lookup"], results["status"]
    mem, start = results["memory"], results["startup"]
    rows: list[tuple[str, str, str, str]] = []
    rows.append(("Nodes / edges (ring + chords)", f"{p['nodes']} / {topo['edges']}", "", ""))
    rows.append(("Topology diameter / mean hops", f"{topo['diameter']} / {topo['mean_hops']:.2f}", "", ""))
    rows.append(
        (
            "Startup: all daemons ready (parallel)",
            f"{start['all_ready_s']:.1f} s (first {start['first_ready_s']:.1f} s)",
            "",
            "",
        )
    )
    rows.append(("Build topology (connect calls)", f"{topo['connect_s']:.1f} s", "", ""))
    rows.append(
        ("Ready to measure, after all ready", f"{results['publish_wait']['since_all_ready_s']:.1f} s", "", "")
    )
    rows.append(
        (
            f"Lookup p50 ({lk['n']} of {lk['planned']} lookups)",
            f"{lk['p50_ms']:.1f} ms",
            f"<= {LOOKUP_P50_TARGET_MS:g} ms",
            mark(lk["p50_ms"] <= LOOKUP_P50_TARGET_MS),
        )
    )
    rows.append(("Lookup p99", f"{lk['p99_ms']:.1f} ms", "", ""))
    rows.append(("Lookup mean", f"{lk['mean_ms']:.1f} ms", "", ""))
    rows.append(("Lookup max", f"{lk['max_ms']:.1f} ms", "", ""))
    rows.append(
        (
            "Lookup success (fresh capability)",
            f"{lk['success']}/{lk['n']} = {lk['success_rate'] * 100:.1f} %",
            "100 %",
            mark(lk["success"] == lk["n"]),
        )
    )
    if lk["success"] < lk["n"]:
        rows.append(
            (
                "  failures: timeout / non-200 / stale stored copy",
                f"{lk['failed_timeout']} / {lk['failed_non_200']} / {lk['failed_stale_copy']}",
                "",
                "",
            )
        )
    rows.append(("GET /v1/status p50 (baseline)", f"{st['p50_ms']:.2f} ms", "", ""))
    rows.append(("GET /v1/status p99 (baseline)", f"{st['p99_ms']:.2f} ms", "", ""))
    rows.append(("GET /v1/status mean (baseline)", f"{st['mean_ms']:.2f} ms", "", ""))
    rows.append(("Ratio lookup p50 / status p50", f"{results['ratio_p50']:.1f}x", "", ""))
    for h, s in lk["by_hops"].items():
        rows.append(
            (
                f"  lookup p50 / p99, {h} hop(s) apart (n={s['n']})",
                f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} ms",
                "",
                "",
            )
        )
    f, later = lk["first_per_source"], lk["later_per_source"]
    rows.append(
        (
            "  lookup p50, first per source / later",
            f"{f['p50_ms']:.1f} (n={f['n']}) / {later['p50_ms']:.1f} ms",
            "",
            "",
        )
    )
    rows.append(
        (
            "  lookup p50, first half / second half",
            f"{lk['first_half']['p50_ms']:.1f} / {lk['second_half']['p50_ms']:.1f} ms",
            "",
            "",
        )
    )
    rows.append(("  lookups over 1 s", str(lk["over_1s"]), "", ""))
    rows.append(("  daemon CPU per lookup (all daemons)", f"{lk['daemon_cpu_ms_per_lookup']:.1f} ms", "", ""))
    c0, c1 = topo["connected_after_build"], results["connected_after_measurement"]
    rows.append(
        (
            "Connections per node, built / after lookups",
            f"{c0['mean']:.1f} / {c1['mean']:.1f} (max {c1['max']})",
            "",
            "",
        )
    )
    pw = results["publish_wait"]
    rows.append(
        (
            "Probe lookup node 0 -> farthest node",
            f"{'ok' if pw['probe_ok'] else 'FAILED'} after {pw['probe_lookups']} tries, "
            f"{pw['probe_s']:.1f} s",
            "",
            "",
        )
    )
    rows.append(
        (
            "Daemons' CPU, before / during measurement",
            f"{pw['cpu_pct_before']:.0f} / {results['daemon_cpu_pct_during_measurement']:.0f} % of a core",
            "",
            "",
        )
    )
    rows.append(
        (
            "Refresh ticks (nodes x ticks) during measurement",
            str(results["refresh_ticks_during_measurement"]),
            "",
            "",
        )
    )
    rows.append(
        (
            f"Total RSS of {p['nodes']} daemons, ready / end",
            f"{mem['rss_total_ready_mib']:.0f} / {mem['rss_total_end_mib']:.0f} MiB",
            "",
            "",
        )
    )
    rows.append(
        (
            "  per daemon at end (RSS) / total USS",
            f"{mem['rss_per_node_end_mib']:.1f} / {mem['uss_total_end_mib']:.0f} MiB",
            "",
            "",
        )
    )
    counts = results["logs"]["counts"]
    rows.append(
        ("Daemon log: warnings/errors/tracebacks/libp2p", json.dumps(counts) if counts else "none", "", "")
    )
    bad = results["exit_codes_nonzero"]
    rows.append(("Daemons exiting non-zero after SIGTERM", str(len(bad)), "0", mark(not bad)))

    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    lines = [f"{'Measure':<{w0}}  {'Value':<{w1}}  {'Target':<{w2}}  Result", "-" * (w0 + w1 + w2 + 12)]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c:<{w2}}  {d}".rstrip() for a, b, c, d in rows]
    lines.append("")
    lines.append("Slowest lookups:")
    for r in lk["slowest"]:
        lines.append(
            f"  {r['ms']:8.1f} ms  node{r['source']:02d} -> node{r['target']:02d} "
            f"({r['hops']} hops, status {r['status']}, ok={r['ok']})"
        )
    if results["logs"]["top"]:
        lines.append("")
        lines.append("Most frequent daemon log complaints (all daemons):")
        lines += [f"  {n:6d}  {msg}" for msg, n in results["logs"]["top"]]
    m = results["machine"]
    lines.append("")
    lines.append(
        f"source {results['source']['revision']}; {m['nproc']} CPUs, Python {m['python']}; "
        f"load avg {m['loadavg_1m_at_start']:.2f} -> {m['loadavg_1m_at_end']:.2f}; "
        f"seed {p['seed']}, cap_refresh_s {p['cap_refresh_s']:g}"
    )
    return "\n".join(lines)


def main() -> int:
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
    args = parser.parse_args()
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
    print(render(results))
    if args.json:
        print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
