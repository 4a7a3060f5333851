"""The shard benchmark's load: closed-loop clients, measurement windows with per-stage utilisation
and CPU per row, and answers checked against in-process ONNX Runtime."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from accel_node.client import Client
from accel_node.core import endpoints as E
from accel_node.errors import ApiError, DaemonNotRunningError
from scripts.bench.cpu import CpuMeter, tree_cpu_s
from scripts.bench.harness import (
    Daemon,
    log,
    unnpz,
)
from scripts.bench.shard_cluster import ShardCluster, stage_loads
from scripts.bench.stats import median, percentile

BUSY_WINDOW_S = 10.0  # StageServer's busy_window_s: busy_fraction covers this many seconds
NPZ = "application/x-npz"
MAX_ABS_DIFF = 1e-4


@dataclass
class Sample:
    start: float
    end: float
    ok: bool
    body: int  # index of the request body
    detail: str = ""


def post_infer(client: Client, cid: str, body: bytes, params: dict[str, str]) -> httpx.Response:
    """One ``.npz`` inference request, its raw answer (unchecked: callers time it and count errors)."""
    return client.transport.send(
        E.INFER,
        path={"cid": cid},
        query=params,
        content=body,
        headers={"Content-Type": NPZ, "Accept": NPZ},
        checked=False,
    )


def closed_loop(
    node: Daemon,
    cid: str,
    bodies: list[bytes],
    params: dict[str, str],
    *,
    clients: int,
    stop_at: Callable[[], bool],
    check: Callable[[int, bytes], str] | None = None,
) -> list[Sample]:
    """``clients`` threads post ``bodies`` (in turn) until ``stop_at()``; every request's timing.
    ``check(body_index, response)`` returns "" when the answer is right (else why not)."""
    samples: list[list[Sample]] = [[] for _ in range(clients)]
    counter = itertools.count()

    def worker(i: int) -> None:
        with node.client() as c:
            while not stop_at():
                k = next(counter) % len(bodies)
                t0 = time.perf_counter()
                try:
                    response = post_infer(c, cid, bodies[k], params)
                except DaemonNotRunningError as exc:  # the typed client's transport error
                    samples[i].append(Sample(t0, time.perf_counter(), False, k, repr(exc)))
                    continue
                t1 = time.perf_counter()
                detail = (
                    "" if response.status_code == 200 else f"{response.status_code} {response.text[:200]}"
                )
                if not detail and check is not None:
                    detail = check(k, response.content)
                samples[i].append(Sample(t0, t1, not detail, k, detail))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(itertools.chain.from_iterable(samples), key=lambda s: s.start)


@dataclass
class Window:
    rows_per_s: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    other_cpu_pct: float
    steal_pct: float
    cpu_ms_per_row: dict[str, float]  # CPU time per row of each involved daemon and of the clients
    busy: dict[str, float] = field(default_factory=dict)  # label -> utilisation (see measure_window)


class Marks:
    """CPU times of some processes at the start and at the end of a window, taken by whichever thread
    first sees the time pass."""

    def __init__(self, t_start: float, t_end: float, pids: dict[str, int], cluster: ShardCluster) -> None:
        self.t_start, self.t_end = t_start, t_end
        self.pids = pids
        self.cluster = cluster
        self.lock = threading.Lock()
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}
        self.meter: CpuMeter | None = None
        self.other_pct = float("nan")
        self.steal_pct = float("nan")

    def _cpu(self) -> dict[str, float]:
        out = {name: tree_cpu_s(pid) for name, pid in self.pids.items()}
        out["clients"] = time.process_time()
        return out

    def tick(self) -> bool:
        """Take the marks that are due; whether the window is over."""
        now = time.perf_counter()
        if now >= self.t_start and not self.start:
            with self.lock:
                if not self.start:
                    self.meter = CpuMeter(d.pid for d in self.cluster.alive())
                    self.start = self._cpu()
        if now >= self.t_end and not self.end:
            with self.lock:
                if not self.end:
                    self.end = self._cpu()
                    if self.meter is not None:
                        self.other_pct, self.steal_pct = self.meter.other_pct(), self.meter.steal_pct()
        return now >= self.t_end


def measure_window(
    node: Daemon,
    cid: str,
    bodies: list[bytes],
    params: dict[str, str],
    *,
    rows: int,
    clients: int,
    warmup_s: float,
    window_s: float,
    cluster: ShardCluster,
    watch: list[tuple[str, Daemon, str, int]],
) -> Window:
    """Closed-loop load for ``warmup_s + window_s``; throughput and latency of the requests that finished
    within the window, and the CPU time the daemons and the clients spent per row meanwhile.

    ``watch``: (label, daemon, plan CID, stage) whose ``busy_fraction`` (``GET /v1/shards``) to sample
    every second. busy_fraction covers the last 10 s; a sample taken ``e`` < 10 s after the load began
    (the stage idle before: configurations never run twice in a row) is scaled by 10/e. The utilisation
    is the median of the scaled samples taken within the window."""
    t_start = time.perf_counter()
    t_window = t_start + warmup_s
    t_end = t_window + window_s
    busy: dict[str, list[float]] = {label: [] for label, *_ in watch}
    done = threading.Event()

    def poll() -> None:
        clients = {label: daemon.client(10) for label, daemon, _, _ in watch}
        try:
            while not done.wait(1.0):
                now = time.perf_counter()
                if now > t_end:
                    return
                for label, daemon, plan_cid, stage in watch:
                    try:
                        load = stage_loads(daemon, plan_cid, clients[label]).get(stage)
                    except (ApiError, DaemonNotRunningError, ValueError):
                        continue
                    elapsed = now - t_start
                    if load is not None and now >= t_window:
                        scale = BUSY_WINDOW_S / min(BUSY_WINDOW_S, elapsed)
                        busy[label].append(min(1.0, float(load["busy_fraction"]) * scale))
        finally:
            for client in clients.values():
                client.close()

    poller = threading.Thread(target=poll, daemon=True)
    if watch:
        poller.start()
    involved = {"entry " + node.name: node} | {d.name: d for _, d, _, _ in watch}
    pids = {name: d.pid for name, d in involved.items()}
    marks = Marks(t_window, t_end, pids, cluster)
    samples = closed_loop(node, cid, bodies, params, clients=clients, stop_at=marks.tick)
    done.set()
    if watch:
        poller.join()
    inside = [s for s in samples if t_window <= s.end <= t_end]
    latencies = sorted((s.end - s.start) * 1e3 for s in inside if s.ok)
    errors = [s for s in samples if not s.ok]
    if errors:
        log(f"  {len(errors)} failed requests, e.g. {errors[0].detail}")
    done_rows = sum(rows for s in inside if s.ok)
    cpu = {k: (marks.end[k] - marks.start[k]) * 1e3 / max(1, done_rows) for k in marks.end}
    if "entry s0" in cpu and "s0" in cpu:
        del cpu["entry s0"]  # the same process
    return Window(
        rows_per_s=done_rows / window_s,
        requests=len(inside),
        errors=len(errors),
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
        other_cpu_pct=marks.other_pct,
        steal_pct=marks.steal_pct,
        cpu_ms_per_row=cpu,
        busy={label: median(v) for label, v in busy.items()},
    )


def check_answer(expected: np.ndarray[Any, Any], raw: bytes) -> tuple[str, float]:
    got = unnpz(raw)
    if len(got) != 1:
        return f"expected one output, got {sorted(got)}", float("inf")
    (value,) = got.values()
    if value.shape != expected.shape:
        return f"shape {value.shape}, expected {expected.shape}", float("inf")
    diff = float(np.abs(value.astype(np.float64) - expected).max())
    return ("" if diff <= MAX_ABS_DIFF else f"max abs diff {diff:.3g}"), diff
