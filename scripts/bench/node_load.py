"""The node benchmark's HTTP load: GETs from threads with keep-alive clients, timed, with the
daemon's and this process's CPU per request and the daemon's own in-app time (its histogram).

Each thread holds one typed client (:class:`accel_node.client.Client`, one keep-alive connection)
and times its raw ``transport.send``: one HTTP request per call, no decoding into models."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from accel_node.client import Client
from accel_node.core import endpoints as E
from accel_node.core.endpoints import Endpoint
from scripts.bench.cpu import busy_cpu_s, share_of_all_cpus
from scripts.bench.stats import percentile


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


def _metrics_sum_count(client: Client, route: str) -> tuple[float, float]:
    text = client.transport.send(E.METRICS).text
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
    token: str | None,
    endpoint: Endpoint,
    *,
    total: int,
    concurrency: int,
    warmup: int,
    server_cpu: Callable[[], float],
    metrics_client: Client,
) -> LoadResult:
    """``total`` requests to ``endpoint`` from ``concurrency`` threads with one keep-alive client
    each (``token`` None: sent without one)."""
    path = endpoint.path
    counter = itertools.count()
    barrier = threading.Barrier(concurrency + 1)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        lat = latencies[i]
        try:
            with Client(url, token, timeout_s=30.0) as client:
                send = client.transport.send
                for _ in range(warmup):
                    send(endpoint)
                barrier.wait()
                perf = time.perf_counter
                while next(counter) < total:
                    t0 = perf()
                    response = send(endpoint, checked=False)
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
    cpu0_server, cpu0_client, busy0 = server_cpu(), time.process_time(), busy_cpu_s()
    t_start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    cpu_server, cpu_client = server_cpu() - cpu0_server, time.process_time() - cpu0_client
    busy = busy_cpu_s() - busy0
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
        other_cpu_pct=share_of_all_cpus(max(0.0, busy - cpu_server - cpu_client), elapsed),
    )
