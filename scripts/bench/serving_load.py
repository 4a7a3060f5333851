"""The serving benchmark's measuring tools: request bodies, ``/metrics`` scrapes, timed calls,
in-process ORT throughput and the HTTP load of many keep-alive clients against the daemon.

Clients are the typed :class:`accel_node.client.Client`; what is timed is its raw
``transport.send`` (:class:`InferCall`), one HTTP request per call with the body already encoded,
so the figures hold the daemon's and the HTTP stack's costs, not the client's decoding."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from accel_node.client import Client
from accel_node.core import endpoints as E
from accel_node.runtime.codecs import NPY_TYPE, NPZ_TYPE
from accel_node.runtime.validation import Arrays
from scripts.bench.cpu import CpuWindow, busy_cpu_s, own_cpu_s, share_of_all_cpus, wait_quiet
from scripts.bench.harness import Daemon
from scripts.bench.stats import latency_ms, percentile

HTTP_TIMEOUT_S = 600.0


@dataclass
class Workload:
    name: str
    directory: Path  # published as is: one .onnx file
    path: Path
    description: str


def encode_body(feeds: Arrays) -> tuple[bytes, str]:
    """``.npy`` for one input (its name is implied), ``.npz`` otherwise."""
    buffer = io.BytesIO()
    if len(feeds) == 1:
        np.save(buffer, next(iter(feeds.values())), allow_pickle=False)
        return buffer.getvalue(), NPY_TYPE
    np.savez(buffer, **feeds)  # type: ignore[arg-type]
    return buffer.getvalue(), NPZ_TYPE


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class Scrape:
    """One read of ``/metrics``: sums of samples by name and labels."""

    def __init__(self, text: str) -> None:
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for line in text.splitlines():
            match = SAMPLE.match(line)
            if match and not line.startswith("#"):
                labels = dict(LABEL.findall(match.group(2) or ""))
                self.samples.append((match.group(1), labels, float(match.group(3))))

    def value(self, name: str, **labels: str) -> float:
        return sum(
            v for n, lab, v in self.samples if n == name and all(lab.get(k) == x for k, x in labels.items())
        )


def scrape(client: Client) -> Scrape:
    return Scrape(client.transport.send(E.METRICS).text)


@dataclass(frozen=True)
class InferCall:
    """One ``POST /v1/infer/{cid}`` with an encoded body, as the benchmark sends it again and again
    (the ``variant`` query only when it is not fp32; no ``Accept``: the daemon answers in kind)."""

    cid: str
    body: bytes = field(repr=False)
    content_type: str
    variant: str = "fp32"

    def send(self, client: Client) -> httpx.Response:
        """The raw answer (not checked: the caller counts errors)."""
        return client.transport.send(
            E.INFER,
            path={"cid": self.cid},
            query={"variant": self.variant} if self.variant != "fp32" else None,
            content=self.body,
            headers={"Content-Type": self.content_type},
            checked=False,
        )


def mean_between(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """Mean of a histogram between two scrapes (``name`` without ``_sum``/``_count``)."""
    count = after.value(f"{name}_count", **labels) - before.value(f"{name}_count", **labels)
    total = after.value(f"{name}_sum", **labels) - before.value(f"{name}_sum", **labels)
    return total / count if count > 0 else float("nan")


def daemon_quiet(daemon: Daemon, timeout_s: float = 10.0) -> float:
    """Wait until the daemon idles (< 5% of a core over 0.5 s); its last CPU share."""
    return wait_quiet(lambda: own_cpu_s(daemon.pid), below=0.05, window_s=0.5, max_wait_s=timeout_s)


def time_calls(call: Callable[[], object], seconds: float, min_calls: int) -> list[float]:
    """Latencies (s) of back-to-back calls for ``seconds`` and at least ``min_calls``."""
    latencies: list[float] = []
    perf = time.perf_counter
    end = perf() + seconds
    while len(latencies) < min_calls or perf() < end:
        t0 = perf()
        call()
        latencies.append(perf() - t0)
    return latencies


def ort_throughput(session: Any, feeds: Arrays, seconds: float, min_runs: int = 2) -> dict[str, float]:
    """Items/s of back-to-back ``session.run`` on one batch (after one untimed warm-up run), and
    this process's CPU time per item (ORT's threads; nothing else runs here meanwhile)."""
    session.run(None, feeds)
    batch = next(iter(feeds.values())).shape[0]
    cpu0, busy0, wall0 = time.process_time(), busy_cpu_s(), time.perf_counter()
    runs = time_calls(lambda: session.run(None, feeds), seconds, min_runs)
    cpu, busy, wall = time.process_time() - cpu0, busy_cpu_s() - busy0, time.perf_counter() - wall0
    return {
        "batch": batch,
        "runs": len(runs),
        "items_s": batch * len(runs) / sum(runs),
        "cpu_ms_per_item": cpu / (batch * len(runs)) * 1e3,
        "other_cpu_pct": share_of_all_cpus(max(0.0, busy - cpu), wall),
        **latency_ms(runs),
    }


@dataclass
class LoadResult:
    items_s: float
    requests: int
    errors: int
    window_s: float
    p50_ms: float
    p99_ms: float
    mean_batch_rows: float
    daemon_cpu_ms_per_item: float
    client_cpu_ms_per_item: float
    other_cpu_pct: float
    first_error: str = ""


def run_load(
    url: str,
    token: str,
    call: InferCall,
    *,
    clients: int,
    warmup_s: float,
    window_s: float,
    completions: int,
    daemon: Daemon,
    metrics_client: Client,
    labels: dict[str, str],
) -> LoadResult:
    """``clients`` threads, each with a keep-alive client sending ``call`` back to back.

    Warm-up lasts ``warmup_s`` and until every client has had an answer; the window lasts
    ``window_s`` and until every client has ``completions`` answers in it (at most 20x longer).
    """
    stop = threading.Event()
    done: list[list[tuple[float, float]]] = [[] for _ in range(clients)]
    errors = [0] * clients
    first_error: list[str] = []

    def worker(i: int) -> None:
        mine = done[i]
        perf = time.perf_counter
        try:
            with Client(url, token, timeout_s=HTTP_TIMEOUT_S) as client:
                while not stop.is_set():
                    t0 = perf()
                    response = call.send(client)
                    t1 = perf()
                    if response.status_code == 200:
                        mine.append((t0, t1))
                    else:
                        errors[i] += 1
                        if not first_error:
                            first_error.append(f"{response.status_code} {response.text[:200]}")
        except Exception as exc:
            errors[i] += 1
            first_error.append(repr(exc))

    def wait_until(seconds: float, each: int, since: float) -> float:
        begin = time.perf_counter()
        while True:
            now = time.perf_counter()
            enough = all(sum(1 for _, t1 in mine[-each:] if t1 > since) >= each for mine in done)
            if (now - begin >= seconds and enough) or now - begin >= 20 * seconds or first_error:
                return now
            time.sleep(0.02)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    wait_until(warmup_s, 1, 0.0)
    before = scrape(metrics_client)
    cpu = CpuWindow(daemon.pid)
    w0 = time.perf_counter()
    w1 = wait_until(window_s, completions, w0)
    usage = cpu.stop()
    after = scrape(metrics_client)
    stop.set()
    for t in threads:
        t.join()

    # Per client: (answers - 1) / (last - first answer) in the window. Exact for a client served
    # periodically (one answer per batch cycle), where counting answers in a fixed window is not.
    rate = 0.0
    latencies: list[float] = []
    in_window = 0
    for mine in done:
        ends = [t1 for _, t1 in mine if w0 < t1 <= w1]
        in_window += len(ends)
        latencies.extend(t1 - t0 for t0, t1 in mine if t0 >= w0 and t1 <= w1)
        if len(ends) >= 2:
            rate += (len(ends) - 1) / (ends[-1] - ends[0])
    ordered = sorted(latencies)
    items = max(in_window, 1)
    return LoadResult(
        items_s=rate,
        requests=in_window,
        errors=sum(errors),
        window_s=w1 - w0,
        p50_ms=percentile(ordered, 0.5) * 1e3,
        p99_ms=percentile(ordered, 0.99) * 1e3,
        mean_batch_rows=mean_between(before, after, "accel_node_inference_batch_size", **labels),
        daemon_cpu_ms_per_item=usage["daemon_cpu_s"] / items * 1e3,
        client_cpu_ms_per_item=usage["client_cpu_s"] / items * 1e3,
        other_cpu_pct=usage["other_cpu_pct"],
        first_error=first_error[0] if first_error else "",
    )


def healthz_load(url: str, clients: int, seconds: float) -> dict[str, float]:
    """Requests/s of ``GET /healthz`` from ``clients`` keep-alive clients: the stack's ceiling."""
    stop = threading.Event()
    counts = [0] * clients

    def worker(i: int) -> None:
        with Client(url, None, timeout_s=HTTP_TIMEOUT_S) as client:
            send = client.transport.send
            send(E.HEALTH, checked=False)
            while not stop.is_set():
                send(E.HEALTH, checked=False)
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(min(1.0, seconds / 2))
    c0, t0 = sum(counts), time.perf_counter()
    time.sleep(seconds)
    c1, t1 = sum(counts), time.perf_counter()
    stop.set()
    for t in threads:
        t.join()
    return {"clients": clients, "rps": (c1 - c0) / (t1 - t0)}
