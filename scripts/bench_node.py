#!/usr/bin/env python
"""Benchmark an accel-node daemon: idle RSS and control-API latency, each against a baseline.

Run from the repository root with the project's virtual environment::

    python scripts/bench_node.py            # human-readable table
    python scripts/bench_node.py --json     # the table, then one JSON document on the last line

What it measures (every figure against a baseline taken in the same run, because shared and
virtual machines are noisy):

1. Idle RSS of a real daemon (``python -m accel_node run``, loopback, no mDNS) after it has idled
   for ``--idle`` seconds, against a bare py-libp2p host process with the same transport (Noise,
   yamux, built by ``p2p.host.build_host``) idling the same time. RSS is sampled a few times and
   the median is reported; the target is daemon/bare <= 1.5.
2. ``GET /v1/status`` with ``--concurrency`` clients (each a keep-alive ``httpx.Client`` in its own
   thread), against ``GET /healthz`` (no token, trivial handler) measured the same way, so that the
   ratio status/healthz isolates the handler's cost from the server's and the client's. Endpoints
   are measured in alternating order over ``--rounds`` rounds; each figure is the median over
   rounds. The target is a status p50 <= 2 ms. The clients run on the same machine as the daemon
   and compete with it for the CPU; the daemon's own CPU time per request (read with psutil) is
   reported too, as a figure that the client's cost does not inflate.

Targets live here (and in docs/BENCHMARKS.md), not in the unit tests.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from benchlib import percentile, source_revision

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0
MIB = 1024 * 1024

RSS_RATIO_TARGET = 1.5
STATUS_P50_TARGET_MS = 2.0

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


# --------------------------------------------------------------------------------------------
# Processes


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_NODE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


class Child:
    """A benchmarked process that writes a JSON ready file containing its pid."""

    def __init__(self, name: str, argv: list[str], ready_path: Path, log_path: Path, env: dict[str, str]):
        self.name = name
        self.ready_path = ready_path
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.info: dict[str, Any] = {}
        self.ready_at = 0.0
        self.cpu_at_ready = 0.0
        self.children_seen = 0

    def poll_ready(self) -> bool:
        """True once the ready file names this process; raises if the process died."""
        if self.info:
            return True
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
        try:
            info = json.loads(self.ready_path.read_text())
        except (FileNotFoundError, ValueError):
            return False
        if info.get("pid") != self.proc.pid:
            return False
        self.info = info
        self.ready_at = time.monotonic()
        self.cpu_at_ready = self.cpu_s()
        return True

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def rss_bytes(self) -> tuple[int, int]:
        """(RSS, USS) of the process and any children, in bytes."""
        proc = psutil.Process(self.proc.pid)
        rss = uss = 0
        children = proc.children(recursive=True)
        self.children_seen = max(self.children_seen, len(children))
        for p in [proc, *children]:
            try:
                mem = p.memory_full_info()
            except psutil.NoSuchProcess:
                continue
            rss += mem.rss
            uss += mem.uss
        return rss, uss

    def cpu_s(self) -> float:
        """CPU seconds of the process, including children it has waited for."""
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system + times.children_user + times.children_system

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_all_ready(children: list[Child], timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not all(c.poll_ready() for c in children):
        if time.monotonic() > deadline:
            late = [c.name for c in children if not c.info]
            raise RuntimeError(f"not ready after {timeout} s: {', '.join(late)}")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Statistics


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------------------------
# HTTP load


@dataclass
class LoadResult:
    requests: int
    errors: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    rps: float
    server_cpu_us: float  # daemon CPU time per request
    client_cpu_us: float  # this process's CPU time per request
    server_mean_ms: float  # mean in-app time per request, from the daemon's own histogram
    other_cpu_pct: float  # CPU used by other processes during the run, % of all CPUs (noise)


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, all processes)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0)


def _metrics_sum_count(client: httpx.Client, route: str) -> tuple[float, float]:
    text = client.get("/metrics").text
    found: dict[str, float] = {}
    for suffix in ("sum", "count"):
        pattern = (
            rf'^accel_node_api_request_duration_seconds_{suffix}\{{route="{re.escape(route)}"\}}'
            r"\s+(\S+)$"
        )
        match = re.search(pattern, text, re.MULTILINE)
        found[suffix] = float(match.group(1)) if match else 0.0
    return found["sum"], found["count"]


def run_load(
    url: str,
    path: str,
    headers: dict[str, str],
    *,
    total: int,
    concurrency: int,
    warmup: int,
    server_cpu: Callable[[], float],
    metrics_client: httpx.Client,
) -> LoadResult:
    """``total`` GETs of ``path`` from ``concurrency`` threads with one keep-alive client each."""
    counter = itertools.count()
    barrier = threading.Barrier(concurrency + 1)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        lat = latencies[i]
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
                for _ in range(warmup):
                    client.get(path).raise_for_status()
                barrier.wait()
                perf = time.perf_counter
                while next(counter) < total:
                    t0 = perf()
                    response = client.get(path)
                    t1 = perf()
                    lat.append(t1 - t0)
                    if response.status_code != 200:
                        errors[i] += 1
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        for t in threads:
            t.join()
        raise RuntimeError(f"load on {path} failed during warm-up: {failures[0]!r}") from None
    sum0, count0 = _metrics_sum_count(metrics_client, path)
    cpu0_server, cpu0_client, busy0 = server_cpu(), time.process_time(), _busy_cpu_s()
    t_start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    cpu_server, cpu_client = server_cpu() - cpu0_server, time.process_time() - cpu0_client
    busy = _busy_cpu_s() - busy0
    sum1, count1 = _metrics_sum_count(metrics_client, path)
    if failures:
        raise RuntimeError(f"load on {path} failed: {failures[0]!r}")
    flat = sorted(itertools.chain.from_iterable(latencies))
    n = len(flat)
    return LoadResult(
        requests=n,
        errors=sum(errors),
        elapsed_s=elapsed,
        p50_ms=percentile(flat, 0.50) * 1e3,
        p99_ms=percentile(flat, 0.99) * 1e3,
        rps=n / elapsed,
        server_cpu_us=cpu_server / n * 1e6,
        client_cpu_us=cpu_client / n * 1e6,
        server_mean_ms=(sum1 - sum0) / (count1 - count0) * 1e3 if count1 > count0 else float("nan"),
        other_cpu_pct=max(0.0, busy - cpu_server - cpu_client) / (elapsed * (os.cpu_count() or 1)) * 100,
    )


# --------------------------------------------------------------------------------------------
# Benchmark


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def measure_idle_rss(daemon: Child, bare: Child, idle_s: float, samples: int) -> dict[str, Any]:
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
        key: (child.cpu_s() - child.cpu_at_ready) / (now - child.ready_at) * 100
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


def measure_api(daemon: Child, args: argparse.Namespace) -> dict[str, Any]:
    url = str(daemon.info["url"])
    token = (Path(args.home_dir) / "api.token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    endpoints = {"healthz": ("/healthz", {}), "status": ("/v1/status", auth)}
    loaded: dict[str, list[LoadResult]] = {k: [] for k in endpoints}
    single: dict[str, list[LoadResult]] = {k: [] for k in endpoints}
    with httpx.Client(base_url=url, headers=auth, timeout=30.0) as metrics_client:
        for rnd in range(args.rounds):
            order = list(endpoints) if rnd % 2 == 0 else list(reversed(endpoints))
            for key in order:
                path, headers = endpoints[key]
                result = run_load(
                    url,
                    path,
                    headers,
                    total=args.requests,
                    concurrency=args.concurrency,
                    warmup=args.warmup,
                    server_cpu=daemon.cpu_s,
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
                        path,
                        headers,
                        total=args.single_requests,
                        concurrency=1,
                        warmup=args.warmup,
                        server_cpu=daemon.cpu_s,
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
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_1m_at_start": os.getloadavg()[0],
        },
    }
    with tempfile.TemporaryDirectory(prefix="accel-bench-") as tmp:
        tmpdir = Path(tmp)
        home = tmpdir / "home"
        args.home_dir = str(home)
        children: list[Child] = []
        try:
            log("starting daemon and bare libp2p host")
            daemon = Child(
                "daemon",
                [sys.executable, "-m", "accel_node", "--home", str(home), "run"],
                home / "api.json",
                tmpdir / "daemon.log",
                _child_env(
                    {
                        "ACCEL_NODE_P2P_LISTEN_ADDRS": '["/ip4/127.0.0.1/tcp/0"]',
                        "ACCEL_NODE_P2P_MDNS": "false",
                        "ACCEL_NODE_API_PORT": "0",
                        "ACCEL_NODE_NODE_SHUTDOWN_GRACE_S": "5",
                        **dict(kv.split("=", 1) for kv in args.daemon_env),
                    }
                ),
            )
            children.append(daemon)
            bare_ready = tmpdir / "bare.json"
            bare = Child(
                "bare libp2p host",
                [sys.executable, "-c", BARE_HOST_SCRIPT, str(bare_ready)],
                bare_ready,
                tmpdir / "bare.log",
                _child_env(),
            )
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
                log(f"warning: daemon exited with {code} after SIGTERM:\n{daemon.log()}")
        except BaseException:
            for child in children:
                if child.proc.poll() is None:
                    log(f"{child.name} log tail:\n{child.log()}")
            raise
        finally:
            for child in children:
                child.kill()
    results["machine"]["loadavg_1m_at_end"] = os.getloadavg()[0]
    return results


# --------------------------------------------------------------------------------------------
# Report


def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(results: dict[str, Any]) -> str:
    rss, api = results["rss"], results["api"]
    s, h = api["status"], api["healthz"]
    rows: list[tuple[str, str, str, str]] = []
    kids = rss["daemon_child_processes"]
    label = f"Idle RSS, daemon (+{kids} child processes)" if kids else "Idle RSS, daemon"
    rows.append((label, f"{rss['daemon_rss_mib']:.1f} MiB", "", ""))
    rows.append(("Idle RSS, bare libp2p host (baseline)", f"{rss['bare_rss_mib']:.1f} MiB", "", ""))
    rows.append(
        (
            "Idle RSS ratio daemon/bare",
            f"{rss['rss_ratio']:.2f}x",
            f"<= {RSS_RATIO_TARGET}x",
            mark(rss["rss_ratio"] <= RSS_RATIO_TARGET),
        )
    )
    rows.append(
        (
            "  (USS daemon / bare, info)",
            f"{rss['daemon_uss_mib']:.1f} / {rss['bare_uss_mib']:.1f} MiB = {rss['uss_ratio']:.2f}x",
            "",
            "",
        )
    )
    rows.append(
        (
            "  (CPU while idle, daemon / bare, info)",
            f"{rss['daemon_idle_cpu_pct']:.1f} / {rss['bare_idle_cpu_pct']:.1f} %",
            "",
            "",
        )
    )
    rows.append(("  (daemon RSS after load, info)", f"{rss['daemon_rss_after_load_mib']:.1f} MiB", "", ""))
    c = api["concurrency"]
    rows.append(
        (
            f"GET /v1/status p50, {c} clients",
            f"{s['p50_ms']:.2f} ms",
            f"<= {STATUS_P50_TARGET_MS:g} ms",
            mark(s["p50_ms"] <= STATUS_P50_TARGET_MS),
        )
    )
    rows.append((f"GET /v1/status p99, {c} clients", f"{s['p99_ms']:.2f} ms", "", ""))
    rows.append((f"GET /v1/status throughput, {c} clients", f"{s['rps']:.0f} req/s", "", ""))
    rows.append((f"GET /healthz p50, {c} clients (baseline)", f"{h['p50_ms']:.2f} ms", "", ""))
    rows.append((f"GET /healthz p99, {c} clients (baseline)", f"{h['p99_ms']:.2f} ms", "", ""))
    rows.append((f"GET /healthz throughput, {c} clients (baseline)", f"{h['rps']:.0f} req/s", "", ""))
    rows.append(("Ratio status/healthz, p50 latency", f"{api['ratio_p50']:.2f}x", "", ""))
    rows.append(("Ratio status/healthz, throughput", f"{api['ratio_rps']:.2f}x", "", ""))
    rows.append(
        (
            "Daemon CPU per request, status / healthz",
            f"{s['server_cpu_us']:.0f} / {h['server_cpu_us']:.0f} us = {api['ratio_server_cpu']:.2f}x",
            "",
            "",
        )
    )
    rows.append(
        (
            "In-app time (middleware histogram), status / healthz",
            f"{s['server_mean_ms']:.3f} / {h['server_mean_ms']:.3f} ms",
            "",
            "",
        )
    )
    rows.append(
        (
            "Client CPU per request, status / healthz",
            f"{s['client_cpu_us']:.0f} / {h['client_cpu_us']:.0f} us",
            "",
            "",
        )
    )
    rows.append(
        (
            "  (other processes' CPU during load, status / healthz, info)",
            f"{s['other_cpu_pct']:.0f} / {h['other_cpu_pct']:.0f} % of all CPUs",
            "",
            "",
        )
    )
    if "single_client" in api:
        one = api["single_client"]
        rows.append(
            (
                "p50 with 1 client, status / healthz (info)",
                f"{one['status']['p50_ms']:.2f} / {one['healthz']['p50_ms']:.2f} ms",
                "",
                "",
            )
        )
        rows.append(
            (
                "p99 with 1 client, status / healthz (info)",
                f"{one['status']['p99_ms']:.2f} / {one['healthz']['p99_ms']:.2f} ms",
                "",
                "",
            )
        )
    errors = s["errors"] + h["errors"]
    rows.append(("Non-200 responses", str(errors), "0", mark(errors == 0)))
    rows.append(
        (
            "Daemon exit code after SIGTERM",
            str(results.get("daemon_exit_code")),
            "0",
            mark(results.get("daemon_exit_code") == 0),
        )
    )

    headers = ("Figure", "Value", "Target", "")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(4)]
    lines = [
        f"accel-node benchmark, {results['date']}, {results['machine']['nproc']} CPUs, "
        f"Python {results['machine']['python']}",
        f"Source: {results['source']['root']} at {results['source']['revision']}"
        + (f"; daemon env: {' '.join(results['daemon_env'])}" if results["daemon_env"] else ""),
        f"RSS: median of {rss['samples']} samples after {rss['idle_s']:g} s idle. "
        f"HTTP: median over {api['rounds']} rounds of {api['requests_per_round']} requests, "
        "clients on the same CPUs as the daemon.",
        f"Load average (1 min) at start / end: {results['machine']['loadavg_1m_at_start']:.2f} / "
        f"{results['machine']['loadavg_1m_at_end']:.2f} (other work on the machine skews every figure).",
        "",
    ]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*headers).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt.format(*r).rstrip() for r in rows)
    return "\n".join(lines)


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
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    if any("=" not in kv for kv in args.daemon_env):
        parser.error("--daemon-env takes KEY=VALUE")

    results = run_benchmark(args)
    print(render(results))
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
