#!/usr/bin/env python
"""Sharded inference benchmarks (issue 6): pipelined throughput across local daemons, encrypted
activation transport, and recovery from a killed replica.

Run from the repository root with the project's virtual environment::

    python scripts/bench_shard.py              # ~7.5 minutes on 2 cores; human-readable tables
    python scripts/bench_shard.py --quick      # smoke run, ~3.5 minutes
    python scripts/bench_shard.py --json       # the tables, then one JSON document on the last line

Everything runs against real daemons (``python -m accel_node run``, separate processes, loopback,
no mDNS, no automatic profiling): ``s0``, ``s1``, ``s2`` and a spare ``r`` with one ONNX Runtime
intra-op thread each (``ACCEL_NODE_RUNTIME_INTRA_OP_THREADS=1``), and ``L`` with two. ``s0`` holds
the models (a publisher key of its own), the others trust that key and fetch them. Requests enter
at ``s0`` (``POST /v1/infer/{cid}`` with an ``.npz`` body), which also runs stage 0 of every plan.

1. **Throughput** (``--models``, default ``minilm`` and ``tf12``): all-MiniLM-L6-v2
   (``--minilm``, exported by ``scripts/export_minilm.py``) and a 12-layer synthetic transformer
   (``tests.support.modelzoo.build_transformer``: d_model 256, 4 heads, ff 1024) are planned by ``s0``
   (``POST /v1/shards/plan``, the API behind ``accel-node shard plan CID --stages K --peers ...``)
   into 2 stages on ``s0, s1`` and 3 stages on ``s0, s1, s2``, each stage served by its daemon
   (``POST /v1/shards/serve``). ``--clients`` closed-loop HTTP clients post requests of
   ``--batch`` rows (``--seq`` tokens); the router splits each into micro-batches of
   ``--micro-batch`` rows (``ACCEL_NODE_SHARD_MICRO_BATCH`` on ``s0``; 0, the default, sends the
   whole request: with several requests in flight every stage has work anyway, and micro-batches
   cost CPU per row). Configurations, in rotated order over ``--rounds`` rounds (never one twice in
   a row), each measured for ``--window`` s after ``--warmup`` s of the same load:

   - ``local2``: ``mode=local`` on ``L`` (2 threads, dynamic batching): the baseline with the same
     total threads as 2 stages x 1 thread;
   - ``sharded2``: ``mode=sharded`` on ``s0`` through the 2-stage plan;
   - ``local3``: ``mode=local&threads=3`` on ``L``: the same total threads as 3 stages x 1 thread
     (3 threads on 2 cores: oversubscribed);
   - ``sharded3``: through the 3-stage plan (3 threads on 2 cores as well).

   The 2-stage ratio is sharded2/local2; the 3-stage ratio is sharded3 over the *better* of local2
   and local3 (the machine has 2 cores, so a fair single node may use only 2 threads). Target
   >= 0.8x. Each figure is the median over rounds of rows answered within the window per second.
   Beside it: the CPU time the daemons spent per row (psutil; moves less with machine load than
   wall time), and in-process ONNX Runtime (this process, one request of ``--batch`` rows after
   another, 1, 2 and 3 threads) with its CPU time per row, as the compute-only reference, and a
   one-client probe on ``s0`` (``--probe-requests`` requests one after another with
   ``mode=local``, s0's own 1-thread session, and through each plan): latency and the CPU time
   per row of s0, s1 and s2, i.e. what the sharded path costs over the local one, HTTP included
   in both.
   Per-stage utilisation is each stage's ``busy_fraction`` from ``GET /v1/shards`` (the share of
   the last 10 s its ORT slot was busy), sampled every second on every stage's daemon during the
   window; a sample taken e < 10 s after the load began is scaled by 10/e (the stage was idle
   before, since no configuration runs twice in a row).
2. **Transport**: a model of elementwise ``Add`` nodes on a ``[rows, 2**20]`` float32 tensor
   (4 MiB per row, ~nothing to compute) is planned into 2 stages on ``s0, s1``. One client posts
   ``--transport-rows`` rows at a time, alternating ``mode=sharded`` and ``mode=local`` (on ``s0``);
   the difference of the medians is what moving the activations costs: ``s0 -> s1`` (RUN) and
   ``s1 -> s0`` (RESULT), two encrypted bulk messages of the tensor each. Effective MiB/s = bytes
   moved / difference (also from the fastest run of each mode), and the extra CPU time of ``s0``
   and ``s1`` per MiB moved. Beside it, the channel microbenchmark of ``scripts/bench_content.py`` on
   ``--chan-mib`` MiB: 1 MiB frames over an encrypted (AES-256-GCM) and a plain bulk channel to a
   sink in another process, raw TCP, and one core sealing the same bytes with PyNaCl's
   ChaCha20-Poly1305. Targets (issue 6): the effective activation transport (medians) and the
   encrypted channel each >= 0.5x PyNaCl.
3. **Recovery**: ``r`` also serves stage 1 of the ``tf12`` 3-stage plan (two replicas of the middle
   stage). ``--clients`` clients stream requests; after ``--pre-kill`` s the replica that carries
   the traffic (the one whose ``served`` count grows) is killed with SIGKILL, and the stream goes on
   for ``--post-kill`` s. Every answer is checked against in-process ONNX Runtime. Reported: p50
   before the kill, p50/p99/max of the requests in flight at the kill or started within 2 s after
   it, the time from the kill until the last request in flight at the kill was answered, errors.

The machine is shared: each phase also prints the share of the CPUs other processes used while it
ran (all CPU time on the machine minus this process's and the daemons'), the share the hypervisor
gave to other guests (steal), and the load average.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from benchlib import percentile, source_revision

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

MIB = 1024 * 1024
THROUGHPUT_TARGET = 0.8
ENCRYPTED_TARGET_VS_NACL = 0.5
BUSY_WINDOW_S = 10.0  # StageServer's busy_window_s: busy_fraction covers this many seconds
TRANSPORT_COLUMNS = 1 << 20  # float32 per row: 4 MiB
TRANSPORT_ADDS = 8
AFFECTED_AFTER_KILL_S = 2.0
NPZ = "application/x-npz"
MAX_ABS_DIFF = 1e-4
PARTS = ("throughput", "transport", "channel", "recovery")
CONFIG_LABELS = {
    "local2": "one node, mode=local, 2 threads (baseline)",
    "sharded2": "2 stages x 1 thread (s0, s1)",
    "local3": "one node, mode=local, 3 threads",
    "sharded3": "3 stages x 1 thread (s0, s1, s2)",
}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def npz(**arrays: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def unnpz(raw: bytes) -> dict[str, np.ndarray[Any, Any]]:
    with np.load(io.BytesIO(raw), allow_pickle=False) as found:
        return {k: found[k] for k in found.files}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------------------------
# Models


def build_transport_model(
    directory: Path, *, columns: int = TRANSPORT_COLUMNS, adds: int = TRANSPORT_ADDS
) -> Path:
    """``y = x + c_1 + ... + c_adds`` on ``x`` float32 ``[rows, columns]`` (rows dynamic): every cut
    point moves the whole tensor, and there is next to nothing to compute."""
    import onnx
    from onnx import TensorProto, helper

    nodes, inits = [], []
    prev = "x"
    for i in range(adds):
        const = f"c{i}"
        inits.append(helper.make_tensor(const, TensorProto.FLOAT, [1], [0.25 * (i + 1)]))
        out = "y" if i == adds - 1 else f"h{i}"
        nodes.append(helper.make_node("Add", [prev, const], [out], name=f"add{i}"))
        prev = out
    graph = helper.make_graph(
        nodes,
        "transport",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", columns])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", columns])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "transport.onnx"
    onnx.save(model, str(path))
    return path


TF12_SCRIPT = """
import sys
from pathlib import Path
from tests.support.modelzoo import build_transformer
print(build_transformer(Path(sys.argv[1]), layers=12, d_model=256, heads=4, ff=1024))
"""


def start_tf12_build(directory: Path) -> subprocess.Popen[str]:
    """Build the 12-layer transformer in a child process (torch import and export take a while)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_NODE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-c", TF12_SCRIPT, str(directory)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def token_inputs(rng: np.random.Generator, batch: int, seq: int) -> dict[str, np.ndarray[Any, Any]]:
    ids = rng.integers(0, 100, (batch, seq)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------
# CPU accounting


def _busy_cpu_s() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0))


def _steal_s() -> float:
    return float(getattr(psutil.cpu_times(), "steal", 0.0))


def _tree_cpu_s(pid: int) -> float:
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


class CpuMeter:
    """CPU used by our processes (this one and the daemons) and by everything else, over a span.
    Call :meth:`sample` just before killing one of the processes: a process that is gone keeps the
    CPU time it was last seen with (CPU time only grows, so the maximum reading is the latest)."""

    def __init__(self, daemons: list[Node]) -> None:
        self.pids = [os.getpid(), *(d.pid for d in daemons if d.alive)]
        self.t0 = time.perf_counter()
        self.busy0 = _busy_cpu_s()
        self.steal0 = _steal_s()
        self.first = {p: _tree_cpu_s(p) for p in self.pids}
        self.last = dict(self.first)

    def sample(self) -> None:
        for p in self.pids:
            self.last[p] = max(self.last[p], _tree_cpu_s(p))

    def other_pct(self) -> float:
        """CPU used by other processes since the start, in % of all CPUs."""
        self.sample()
        elapsed = time.perf_counter() - self.t0
        busy = _busy_cpu_s() - self.busy0
        ours = sum(self.last.values()) - sum(self.first.values())
        return max(0.0, busy - ours) / (elapsed * (os.cpu_count() or 1)) * 100

    def steal_pct(self) -> float:
        """CPU time the hypervisor gave to other guests since the start, in % of all CPUs."""
        elapsed = time.perf_counter() - self.t0
        return (_steal_s() - self.steal0) / (elapsed * (os.cpu_count() or 1)) * 100


# --------------------------------------------------------------------------------------------
# Nodes


class Node:
    """One ``accel-node run`` process with its own home (loopback, free ports, no mDNS, no profiling)."""

    def __init__(self, home: Path, **env: str) -> None:
        self.name = home.name
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_NODE_")}
        self.env.update(
            {
                "ACCEL_NODE_P2P_LISTEN_ADDRS": '["/ip4/127.0.0.1/tcp/0"]',
                "ACCEL_NODE_P2P_MDNS": "false",
                "ACCEL_NODE_P2P_AUTO_CONNECT": "false",
                "ACCEL_NODE_API_PORT": "0",
                "ACCEL_NODE_PROFILE_AUTO": "off",
                "ACCEL_NODE_NODE_SHUTDOWN_GRACE_S": "5",
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
                **env,
            }
        )
        self.log_path = home.parent / f"{home.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self._token = ""

    def start(self) -> None:
        self.home.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "accel_node", "--home", str(self.home), "run"],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"daemon {self.name} exited:\n{self.log()}")
            try:
                info = json.loads((self.home / "api.json").read_text())
            except (FileNotFoundError, ValueError):
                info = {}
            if info.get("pid") == self.proc.pid:
                self.info = info
                self._token = (self.home / "api.token").read_text().strip()
                return
            time.sleep(0.1)
        raise RuntimeError(f"daemon {self.name} not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def peer_id(self) -> str:
        return str(self.info["peer_id"])

    @property
    def addr(self) -> str:
        return next(str(a) for a in self.info["addrs"] if str(a).startswith("/ip4/127.0.0.1/"))

    def token(self) -> str:
        return self._token

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self._token}"}, timeout=timeout
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 20 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Cluster:
    """The benchmark's daemons, by name, and the models published on s0 (name -> CID)."""

    nodes: dict[str, Node]
    models: dict[str, str] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def alive(self) -> list[Node]:
        return [d for d in self.nodes.values() if d.alive]


def api_json(node: Node, method: str, path: str, *, timeout: float = 300.0, **kwargs: Any) -> Any:
    with node.client(timeout) as client:
        response = client.request(method, path, **kwargs)
    if response.status_code >= 300:
        raise RuntimeError(f"{method} {path} on {node.name}: {response.status_code} {response.text[:500]}")
    return response.json()


def in_threads(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run blocking calls concurrently (one thread each); their results, or the first error raised."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            results[i] = call()
        except BaseException as exc:  # report it in the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def new_cluster(tmp: Path, micro_batch: int) -> Cluster:
    one = {"ACCEL_NODE_RUNTIME_INTRA_OP_THREADS": "1"}
    specs = {
        "s0": {**one, "ACCEL_NODE_SHARD_MICRO_BATCH": str(micro_batch)},
        "s1": one,
        "s2": one,
        "r": one,
        "L": {"ACCEL_NODE_RUNTIME_INTRA_OP_THREADS": "2"},
    }
    return Cluster({name: Node(tmp / "nodes" / name, **env) for name, env in specs.items()})


def start_cluster(cluster: Cluster) -> None:
    """Start every daemon and connect each pair."""
    for node in cluster.nodes.values():
        node.start()
    for node in cluster.nodes.values():
        node.wait_ready(timeout=180)
    names = list(cluster.nodes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            api_json(cluster[a], "POST", "/v1/peers/connect", json={"addr": cluster[b].addr})


def share_models(cluster: Cluster, dirs: dict[str, Path], holders: dict[str, list[str]]) -> None:
    """Publish each model directory on s0 and fetch it on the daemons ``holders[name]``."""
    s0 = cluster["s0"]
    key = api_json(s0, "POST", "/v1/keys", json={"name": "bench"})
    for node in cluster.nodes.values():
        if node is not s0:
            api_json(node, "POST", "/v1/trust", json={"public_key": key["public_key"], "name": "bench"})
    for name, directory in dirs.items():
        view = api_json(s0, "POST", "/v1/models/publish", json={"dir": str(directory), "key": "bench"})
        cluster.models[name] = view["cid"]
        cluster.paths[name] = next(directory.glob("*.onnx"))
    calls: list[Callable[[], Any]] = []
    for name, names in holders.items():
        cid = cluster.models[name]
        for holder in names:
            calls.append(partial(api_json, cluster[holder], "POST", "/v1/models/fetch", json={"cid": cid}))
    in_threads(calls)


def make_plan(cluster: Cluster, model: str, stage_nodes: list[str]) -> dict[str, Any]:
    """Plan ``model`` on s0 for ``stage_nodes`` (one stage each) and serve every stage on its node."""
    peers = [cluster[n].peer_id for n in stage_nodes]
    cid = cluster.models[model]
    plan: dict[str, Any] = api_json(
        cluster["s0"], "POST", "/v1/shards/plan", json={"cid": cid, "stages": len(peers), "peers": peers}
    )
    serve_stages(cluster, model, plan["plan"], list(enumerate(stage_nodes)))
    return plan


def serve_stages(cluster: Cluster, model: str, plan_cid: str, placement: list[tuple[int, str]]) -> None:
    cid = cluster.models[model]
    body = {"cid": cid, "plan": plan_cid}
    in_threads(
        [
            partial(api_json, cluster[name], "POST", "/v1/shards/serve", json={**body, "stage": stage})
            for stage, name in placement
        ]
    )


def wait_for_route(
    cluster: Cluster, model: str, plan_cid: str, want: list[set[str]], timeout: float = 90
) -> None:
    """Until s0 lists exactly the peers ``want[i]`` (daemon names) as serving stage i of the plan."""
    ids = {cluster[n].peer_id: n for n in cluster.nodes}
    deadline = time.monotonic() + timeout
    seen: list[set[str]] = []
    while time.monotonic() < deadline:
        listing = api_json(cluster["s0"], "GET", "/v1/shards", params={"cid": cluster.models[model]})
        found = next((p for p in listing["plans"] if p["plan"] == plan_cid), None)
        if found is not None:
            seen = [{ids.get(p, p) for p in s.get("peers", [])} for s in found["stages"]]
            if seen == want:
                return
        time.sleep(0.5)
    raise RuntimeError(f"s0 does not see the replicas of plan {plan_cid}: {seen} (want {want})")


def stage_loads(node: Node, plan_cid: str, client: httpx.Client | None = None) -> dict[int, dict[str, Any]]:
    """``GET /v1/shards`` loads of ``plan_cid``'s stages served by ``node``, by stage index."""
    if client is None:
        with node.client(30) as own:
            listing = own.get("/v1/shards", params={"lookup": "false"}).json()
    else:
        headers = {"Authorization": f"Bearer {node.token()}"}
        listing = client.get(f"{node.url}/v1/shards", params={"lookup": "false"}, headers=headers).json()
    return {int(load["stage"]): load for load in listing["loads"] if load["model"] == plan_cid}


# --------------------------------------------------------------------------------------------
# HTTP load


@dataclass
class Sample:
    start: float
    end: float
    ok: bool
    body: int  # index of the request body
    detail: str = ""


def post_infer(client: httpx.Client, cid: str, body: bytes, params: dict[str, str]) -> httpx.Response:
    return client.post(
        f"/v1/infer/{cid}", content=body, params=params, headers={"Content-Type": NPZ, "Accept": NPZ}
    )


def closed_loop(
    node: Node,
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
                except httpx.HTTPError as exc:
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

    def __init__(self, t_start: float, t_end: float, pids: dict[str, int], cluster: Cluster) -> None:
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
        out = {name: _tree_cpu_s(pid) for name, pid in self.pids.items()}
        out["clients"] = time.process_time()
        return out

    def tick(self) -> bool:
        """Take the marks that are due; whether the window is over."""
        now = time.perf_counter()
        if now >= self.t_start and not self.start:
            with self.lock:
                if not self.start:
                    self.meter = CpuMeter(self.cluster.alive())
                    self.start = self._cpu()
        if now >= self.t_end and not self.end:
            with self.lock:
                if not self.end:
                    self.end = self._cpu()
                    if self.meter is not None:
                        self.other_pct, self.steal_pct = self.meter.other_pct(), self.meter.steal_pct()
        return now >= self.t_end


def measure_window(
    node: Node,
    cid: str,
    bodies: list[bytes],
    params: dict[str, str],
    *,
    rows: int,
    clients: int,
    warmup_s: float,
    window_s: float,
    cluster: Cluster,
    watch: list[tuple[str, Node, str, int]],
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
        with httpx.Client(timeout=10) as client:
            while not done.wait(1.0):
                now = time.perf_counter()
                if now > t_end:
                    return
                for label, daemon, plan_cid, stage in watch:
                    try:
                        load = stage_loads(daemon, plan_cid, client).get(stage)
                    except (httpx.HTTPError, ValueError):
                        continue
                    elapsed = now - t_start
                    if load is not None and now >= t_window:
                        scale = BUSY_WINDOW_S / min(BUSY_WINDOW_S, elapsed)
                        busy[label].append(min(1.0, float(load["busy_fraction"]) * scale))

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


# --------------------------------------------------------------------------------------------
# Part 1: throughput


def inprocess_rows_per_s(
    path: Path, feed: dict[str, np.ndarray[Any, Any]], threads: int, seconds: float
) -> tuple[float, float]:
    """Rows per second of one session running ``feed`` again and again, and its CPU ms per row."""
    session = ort_session(path, threads)
    session.run(None, feed)
    rows = len(next(iter(feed.values())))
    n = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or n < 2:
        session.run(None, feed)
        n += 1
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return n * rows / elapsed, cpu * 1e3 / (n * rows)


def probe_overhead(
    cluster: Cluster,
    cid: str,
    bodies: list[bytes],
    plans: dict[int, dict[str, Any]],
    *,
    rows: int,
    requests: int,
) -> dict[str, dict[str, float]]:
    """One client, one request after another, on s0: ``mode=local`` (s0's own session, 1 thread) and
    through the 2- and 3-stage plans. Latency, and CPU time per row of s0, s1 and s2 together and of
    each: the cost of the sharded path over the local one, HTTP included in both."""
    s0 = cluster["s0"]
    nodes = [cluster[n] for n in ("s0", "s1", "s2")]
    modes = {
        "local1": {"mode": "local"},
        "sharded2": {"mode": "sharded", "plan": plans[2]["plan"]},
        "sharded3": {"mode": "sharded", "plan": plans[3]["plan"]},
    }
    out: dict[str, dict[str, float]] = {}
    with s0.client() as c:
        for name, params in modes.items():
            post_infer(c, cid, bodies[0], params).raise_for_status()
            latencies = []
            cpu0 = [_tree_cpu_s(n.pid) for n in nodes]
            for i in range(requests):
                t0 = time.perf_counter()
                post_infer(c, cid, bodies[i % len(bodies)], params).raise_for_status()
                latencies.append(time.perf_counter() - t0)
            cpu = [
                (_tree_cpu_s(n.pid) - c0) * 1e3 / (rows * requests) for n, c0 in zip(nodes, cpu0, strict=True)
            ]
            out[name] = {
                "p50_ms": median(latencies) * 1e3,
                "cpu_ms_per_row": sum(cpu),
                **{f"cpu_ms_per_row_{n.name}": v for n, v in zip(nodes, cpu, strict=True)},
            }
            log(
                f"  one client, {name}: p50 {out[name]['p50_ms']:.0f} ms, CPU ms/row "
                + " ".join(f"{n.name} {v:.1f}" for n, v in zip(nodes, cpu, strict=True))
            )
    return out


def check_answer(expected: np.ndarray[Any, Any], raw: bytes) -> tuple[str, float]:
    got = unnpz(raw)
    if len(got) != 1:
        return f"expected one output, got {sorted(got)}", float("inf")
    (value,) = got.values()
    if value.shape != expected.shape:
        return f"shape {value.shape}, expected {expected.shape}", float("inf")
    diff = float(np.abs(value.astype(np.float64) - expected).max())
    return ("" if diff <= MAX_ABS_DIFF else f"max abs diff {diff:.3g}"), diff


def bench_throughput(
    cluster: Cluster, model: str, plans: dict[int, dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    path = cluster.paths[model]
    cid = cluster.models[model]
    rng = np.random.default_rng(1)
    feeds = [token_inputs(rng, args.batch, args.seq) for _ in range(4)]
    bodies = [npz(**f) for f in feeds]
    reference = ort_session(path, 2)
    expected = [reference.run(None, f)[0].astype(np.float64) for f in feeds]
    del reference

    log(f"{model}: in-process ONNX Runtime reference")
    inproc: dict[str, float] = {}
    inproc_cpu: dict[str, float] = {}
    inproc_other: dict[str, float] = {}
    inproc_steal: dict[str, float] = {}
    for threads in (1, 2, 3):
        meter = CpuMeter(cluster.alive())
        key = f"{threads}t"
        inproc[key], inproc_cpu[key] = inprocess_rows_per_s(path, feeds[0], threads, args.window / 3)
        inproc_other[key] = meter.other_pct()
        inproc_steal[key] = meter.steal_pct()

    s0, big = cluster["s0"], cluster["L"]
    configs: dict[str, tuple[Node, dict[str, str], list[tuple[str, Node, str, int]]]] = {
        "local2": (big, {"mode": "local"}, []),
        "sharded2": (
            s0,
            {"mode": "sharded", "plan": plans[2]["plan"]},
            [(f"stage {i} ({n})", cluster[n], plans[2]["plan"], i) for i, n in enumerate(("s0", "s1"))],
        ),
        "local3": (big, {"mode": "local", "threads": "3"}, []),
        "sharded3": (
            s0,
            {"mode": "sharded", "plan": plans[3]["plan"]},
            [(f"stage {i} ({n})", cluster[n], plans[3]["plan"], i) for i, n in enumerate(("s0", "s1", "s2"))],
        ),
    }
    # One request each first: sessions load, links open, and each answer is checked.
    diffs: dict[str, float] = {}
    for name, (node, params, _) in configs.items():
        with httpx.Client(
            base_url=node.url, headers={"Authorization": f"Bearer {node.token()}"}, timeout=120
        ) as c:
            response = post_infer(c, cid, bodies[0], params)
        if response.status_code != 200:
            raise RuntimeError(f"{model} {name}: {response.status_code} {response.text[:500]}")
        why, diffs[name] = check_answer(expected[0], response.content)
        if why:
            log(f"  {model} {name}: answer differs from in-process ORT: {why}")

    probe = probe_overhead(cluster, cid, bodies, plans, rows=args.batch, requests=args.probe_requests)
    windows: dict[str, list[Window]] = {name: [] for name in configs}
    for rnd in range(args.rounds):
        names = list(configs)  # rotated, so that no configuration runs twice in a row
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for name in order:
            node, params, watch = configs[name]
            w = measure_window(
                node,
                cid,
                bodies,
                params,
                rows=args.batch,
                clients=args.clients,
                warmup_s=args.warmup,
                window_s=args.window,
                cluster=cluster,
                watch=watch,
            )
            windows[name].append(w)
            busy = ", ".join(f"{k} {v:.2f}" for k, v in w.busy.items())
            log(
                f"{model} round {rnd + 1}/{args.rounds} {name:<9} {w.rows_per_s:6.2f} rows/s  "
                f"p50 {w.p50_ms:7.1f} ms  p99 {w.p99_ms:7.1f} ms  {w.requests} req  "
                f"others {w.other_cpu_pct:.0f}% steal {w.steal_pct:.0f}%  CPU ms/row "
                + " ".join(f"{k} {v:.0f}" for k, v in w.cpu_ms_per_row.items())
                + (f"  busy: {busy}" if busy else "")
            )

    def summary(ws: list[Window]) -> dict[str, Any]:
        labels = ws[0].busy.keys()
        return {
            "rows_per_s": median([w.rows_per_s for w in ws]),
            "p50_ms": median([w.p50_ms for w in ws]),
            "p99_ms": median([w.p99_ms for w in ws]),
            "errors": sum(w.errors for w in ws),
            "requests": sum(w.requests for w in ws),
            "other_cpu_pct": median([w.other_cpu_pct for w in ws]),
            "steal_pct": median([w.steal_pct for w in ws]),
            "busy_fraction": {k: median([w.busy[k] for w in ws]) for k in labels},
            "cpu_ms_per_row": {k: median([w.cpu_ms_per_row[k] for w in ws]) for k in ws[0].cpu_ms_per_row},
            "rounds": [vars(w) for w in ws],
        }

    out: dict[str, Any] = {
        "model": model,
        "cid": cid,
        "batch": args.batch,
        "seq": args.seq,
        "clients": args.clients,
        "micro_batch": args.micro_batch,
        "plans": {
            str(k): {"plan": p["plan"], "flops": [s["flops"] for s in p["stages"]]} for k, p in plans.items()
        },
        "inprocess_rows_per_s": inproc,
        "inprocess_cpu_ms_per_row": inproc_cpu,
        "inprocess_other_cpu_pct": inproc_other,
        "inprocess_steal_pct": inproc_steal,
        "max_abs_diff_vs_ort": diffs,
        "configs": {name: summary(ws) for name, ws in windows.items()},
        "one_client": probe,
    }
    c = out["configs"]
    base3 = max(c["local2"]["rows_per_s"], c["local3"]["rows_per_s"])
    out["ratio_2_stages"] = c["sharded2"]["rows_per_s"] / c["local2"]["rows_per_s"]
    out["ratio_3_stages"] = c["sharded3"]["rows_per_s"] / base3
    out["ratio_3_stages_vs_local3"] = c["sharded3"]["rows_per_s"] / c["local3"]["rows_per_s"]
    return out


# --------------------------------------------------------------------------------------------
# Part 2: transport


def bench_transport(cluster: Cluster, plan: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
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
    meter = CpuMeter(cluster.alive())
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
                cpu0 = sum(_tree_cpu_s(d.pid) for d in daemons)
                t0 = time.perf_counter()
                response = post_infer(c, cid, body, params[mode])
                times[mode].append(time.perf_counter() - t0)
                cpu[mode].append(sum(_tree_cpu_s(d.pid) for d in daemons) - cpu0)
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
    """bench_content.py's channel rows: encrypted and plain bulk channels to a sink in another process,
    raw TCP, and one core sealing the same bytes (PyNaCl ChaCha20-Poly1305, AES-256-GCM)."""
    import trio
    from bench_content import FRAME, make_data, raw_tcp_receive, seal_all
    from libp2p.peer.id import ID
    from multiaddr import Multiaddr

    from p2p.bulk import BulkService
    from p2p.host import HostSettings, build_host, dial, run_host
    from p2p.identity import generate_identity

    data = make_data(mib * MIB)
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--sink", str(len(data))],
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


# --------------------------------------------------------------------------------------------
# Part 3: recovery


def bench_recovery(cluster: Cluster, plan: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    model = "tf12"
    cid = cluster.models[model]
    plan_cid = plan["plan"]
    serve_stages(cluster, model, plan_cid, [(1, "r")])
    wait_for_route(cluster, model, plan_cid, [{"s0"}, {"s1", "r"}, {"s2"}])
    rng = np.random.default_rng(3)
    feeds = [token_inputs(rng, args.recovery_batch, args.seq) for _ in range(8)]
    bodies = [npz(**f) for f in feeds]
    session = ort_session(cluster.paths[model], 1)
    expected = [session.run(None, f)[0].astype(np.float64) for f in feeds]

    def check(k: int, raw: bytes) -> str:
        return check_answer(expected[k], raw)[0]

    s0 = cluster["s0"]
    params = {"mode": "sharded", "plan": plan_cid, "timeout_s": "60"}
    with s0.client() as c:
        for body in bodies[:2]:  # warm-up
            post_infer(c, cid, body, params).raise_for_status()

    t_start = time.perf_counter()
    t_kill_at = t_start + args.pre_kill
    kill: dict[str, Any] = {}
    meter = CpuMeter(cluster.alive())

    def killer() -> None:
        replicas = {n: cluster[n] for n in ("s1", "r")}

        def served() -> dict[str, int]:
            return {n: int(stage_loads(d, plan_cid).get(1, {}).get("served", 0)) for n, d in replicas.items()}

        try:
            time.sleep(max(0.0, t_kill_at - 1.5 - time.perf_counter()))
            before = served()
            time.sleep(max(0.0, t_kill_at - time.perf_counter()))
            growth = {n: v - before[n] for n, v in served().items()}
        except (httpx.HTTPError, ValueError) as exc:
            kill["error"] = repr(exc)
            return
        victim = max(growth, key=lambda n: growth[n])
        node = replicas[victim]
        meter.sample()
        os.kill(node.pid, signal.SIGKILL)
        kill.update(t=time.perf_counter(), victim=victim, served_growth=growth)
        node.stop()  # reaps it

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    end_at = t_kill_at + args.post_kill
    samples = closed_loop(
        s0,
        cid,
        bodies,
        params,
        clients=args.clients,
        stop_at=lambda: time.perf_counter() >= end_at,
        check=check,
    )
    thread.join()
    if "t" not in kill:
        raise RuntimeError(f"recovery: could not choose the replica to kill: {kill.get('error')}")
    other, steal = meter.other_pct(), meter.steal_pct()
    tk = kill["t"]
    before = sorted((s.end - s.start) * 1e3 for s in samples if s.start >= t_start + 1.0 and s.end < tk)
    in_flight = [s for s in samples if s.start < tk <= s.end]
    affected = [s for s in samples if s.start < tk <= s.end or tk <= s.start < tk + AFFECTED_AFTER_KILL_S]
    after = sorted((s.end - s.start) * 1e3 for s in samples if s.start >= tk + AFFECTED_AFTER_KILL_S)
    lat = sorted((s.end - s.start) * 1e3 for s in affected)
    failed = [s for s in samples if not s.ok]
    loads = stage_loads(s0, plan_cid).get(0, {})
    out = {
        "clients": args.clients,
        "batch": args.recovery_batch,
        "seq": args.seq,
        "victim": kill["victim"],
        "served_growth_before_kill": kill["served_growth"],
        "requests": len(samples),
        "failed": len(failed),
        "failures": [s.detail for s in failed[:5]],
        "correct": sum(s.ok for s in samples),
        "before_p50_ms": percentile(before, 0.5),
        "before_p99_ms": percentile(before, 0.99),
        "before_requests": len(before),
        "in_flight_at_kill": len(in_flight),
        "affected_requests": len(affected),
        "affected_p50_ms": percentile(lat, 0.5),
        "affected_p99_ms": percentile(lat, 0.99),
        "affected_max_ms": lat[-1] if lat else float("nan"),
        "last_in_flight_done_after_kill_ms": max(((s.end - tk) * 1e3 for s in in_flight), default=0.0),
        "after_p50_ms": percentile(after, 0.5),
        "stage0_replays": loads.get("replays"),
        "other_cpu_pct": other,
        "steal_pct": steal,
    }
    out["affected_p50_vs_before"] = out["affected_p50_ms"] / out["before_p50_ms"]
    out["affected_p99_vs_before_p50"] = out["affected_p99_ms"] / out["before_p50_ms"]
    log(
        f"recovery: killed {kill['victim']}; before p50 {out['before_p50_ms']:.0f} ms; affected "
        f"({len(affected)}) p50 {out['affected_p50_ms']:.0f} / p99 {out['affected_p99_ms']:.0f} ms; "
        f"{len(failed)} failed of {len(samples)}"
    )
    return out


# --------------------------------------------------------------------------------------------
# Driver


@contextmanager
def cluster_of(tmp: Path, micro_batch: int) -> Iterator[Cluster]:
    cluster = new_cluster(tmp, micro_batch)
    try:
        start_cluster(cluster)
        yield cluster
    except BaseException:
        for name, node in cluster.nodes.items():
            if node.proc is not None:
                log(f"log tail of {name}:\n{node.log()}")
        raise
    finally:
        for node in cluster.alive():
            os.kill(node.pid, signal.SIGTERM)
        for node in cluster.nodes.values():
            node.stop()


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "benchmark": "shard",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "source": {"root": str(REPO_ROOT), "revision": source_revision()},
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "check", "sink")},
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_1m_at_start": os.getloadavg()[0],
        },
        "notes": [],
    }
    started = time.perf_counter()
    parts = set(args.only or PARTS)
    measured = [m for m in args.models if m != "minilm" or Path(args.minilm).exists()]
    if "minilm" in args.models and "minilm" not in measured:
        results["notes"].append(f"{args.minilm} is missing: run scripts/export_minilm.py; MiniLM skipped")
    models = list(measured) if "throughput" in parts else []  # the models to plan
    if "recovery" in parts and "tf12" not in models:
        models.append("tf12")
    tmp = Path(tempfile.mkdtemp(prefix="bench-shard-"))
    builder: subprocess.Popen[str] | None = None
    try:
        if "channel" in parts:
            log(f"channel microbenchmark ({args.chan_mib} MiB, {args.chan_runs} runs)")
            results["channel"] = bench_channel(args.chan_mib, args.chan_runs)
        if parts & {"throughput", "transport", "recovery"}:
            builder = start_tf12_build(tmp / "tf12") if "tf12" in models else None
            dirs: dict[str, Path] = {}
            if "minilm" in models:
                dirs["minilm"] = tmp / "minilm"
                dirs["minilm"].mkdir()
                link_or_copy(Path(args.minilm), dirs["minilm"] / "model.onnx")
            if "transport" in parts:
                build_transport_model(tmp / "transport")
                dirs["transport"] = tmp / "transport"
            log("starting 5 daemons")
            with cluster_of(tmp, args.micro_batch) as cluster:
                if builder is not None:
                    _, err = builder.communicate(timeout=600)
                    if builder.returncode != 0:
                        raise RuntimeError(f"building the transformer failed:\n{err[-3000:]}")
                    dirs["tf12"] = tmp / "tf12"
                log(f"daemons ready after {time.perf_counter() - started:.0f} s; sharing models")
                holders = {
                    "minilm": ["s1", "s2", "L"],
                    "tf12": ["s1", "s2", "r", "L"],
                    "transport": ["s1"],
                }
                share_models(cluster, dirs, {k: v for k, v in holders.items() if k in dirs})
                log(f"models shared after {time.perf_counter() - started:.0f} s; planning")
                plans: dict[str, dict[int, dict[str, Any]]] = {}
                for model in models:
                    plans[model] = {
                        2: make_plan(cluster, model, ["s0", "s1"]),
                        3: make_plan(cluster, model, ["s0", "s1", "s2"]),
                    }
                if "transport" in parts:
                    transport_plan = make_plan(cluster, "transport", ["s0", "s1"])
                for model in models:
                    wait_for_route(cluster, model, plans[model][2]["plan"], [{"s0"}, {"s1"}])
                    wait_for_route(cluster, model, plans[model][3]["plan"], [{"s0"}, {"s1"}, {"s2"}])
                log(f"stages served after {time.perf_counter() - started:.0f} s")
                if "throughput" in parts:
                    results["throughput"] = {
                        m: bench_throughput(cluster, m, plans[m], args) for m in measured
                    }
                if "transport" in parts:
                    wait_for_route(cluster, "transport", transport_plan["plan"], [{"s0"}, {"s1"}])
                    results["transport"] = bench_transport(cluster, transport_plan, args)
                if "recovery" in parts:
                    results["recovery"] = bench_recovery(cluster, plans["tf12"][3], args)
    finally:
        if builder is not None and builder.poll() is None:
            builder.kill()
            builder.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    if "transport" in results and "channel" in results:
        nacl = results["channel"]["mib_per_s"]["nacl_chacha"]
        results["transport"]["ratio_vs_nacl"] = results["transport"]["effective_mib_per_s"] / nacl
        results["transport"]["ratio_best_vs_nacl"] = results["transport"]["effective_best_mib_per_s"] / nacl
    results["elapsed_s"] = time.perf_counter() - started
    results["machine"]["loadavg_1m_at_end"] = os.getloadavg()[0]
    return results


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)


# --------------------------------------------------------------------------------------------
# Report


def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []

    def row(label: str, value: str = "", target: str = "", verdict: str = "") -> None:
        rows.append((label, value, target, verdict))

    for model, t in results.get("throughput", {}).items():
        c = t["configs"]
        micro = t["micro_batch"] or "off"
        row(f"{model}: batch {t['batch']} x seq {t['seq']}, {t['clients']} clients, micro-batch {micro}")
        for name, label in CONFIG_LABELS.items():
            x = c[name]
            busy = "/".join(f"{v:.2f}" for v in x["busy_fraction"].values())
            daemon_cpu = sum(v for k, v in x["cpu_ms_per_row"].items() if k != "clients")
            row(
                f"  {label}",
                f"{x['rows_per_s']:.2f} rows/s, p50 {x['p50_ms']:.0f} ms, "
                f"daemons' CPU {daemon_cpu:.0f} ms/row"
                + (f", busy {busy}" if busy else "")
                + (f", {x['errors']} errors" if x["errors"] else ""),
            )
        for key, label in (
            ("ratio_2_stages", "  ratio 2 stages / local 2 threads"),
            ("ratio_3_stages", "  ratio 3 stages / best of local 2, 3 threads"),
        ):
            row(label, f"{t[key]:.2f}x", f">= {THROUGHPUT_TARGET}x", mark(t[key] >= THROUGHPUT_TARGET))
        cpu_row, other = t["inprocess_cpu_ms_per_row"], t["inprocess_other_cpu_pct"]
        inproc = ", ".join(
            f"{v:.2f} ({cpu_row[k]:.0f} ms/row, others {other[k]:.0f}%)"
            for k, v in t["inprocess_rows_per_s"].items()
        )
        row("  in-process ORT, 1/2/3 threads, rows/s (reference)", inproc)
        diffs = t["max_abs_diff_vs_ort"]
        row(
            "  max abs diff vs in-process ORT",
            ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()),
            f"<= {MAX_ABS_DIFF:g}",
            mark(all(v <= MAX_ABS_DIFF for v in diffs.values())),
        )
        row(
            "  other processes' CPU / steal, median",
            ", ".join(f"{k} {v['other_cpu_pct']:.0f}%/{v['steal_pct']:.0f}%" for k, v in c.items()),
        )
        one = t["one_client"]
        row(
            "  one client on s0: local 1 thread / 2 stages / 3 stages",
            " / ".join(f"p50 {v['p50_ms']:.0f} ms, {v['cpu_ms_per_row']:.0f} ms/row" for v in one.values()),
        )
    if "transport" in results:
        t = results["transport"]
        row(
            f"Activations s0 -> s1 -> s0, {t['tensor_mib']:.0f} MiB each way",
            f"local {t['local_ms']:.0f} ms, sharded {t['sharded_ms']:.0f} ms: "
            f"{t['effective_mib_per_s']:.0f} MiB/s effective "
            f"(best runs {t['effective_best_mib_per_s']:.0f}), "
            f"+{t['extra_cpu_ms_per_mib']:.2f} CPU ms/MiB",
        )
    if "channel" in results:
        ch = results["channel"]
        r = ch["mib_per_s"]
        row(f"Bulk channel, {ch['mib']} MiB in 1 MiB frames, encrypted", f"{r['chan_encrypted']:.0f} MiB/s")
        row("  plain channel / raw TCP", f"{r['chan_plain']:.0f} / {r['raw_tcp']:.0f} MiB/s")
        row(
            "  one core sealing: PyNaCl ChaCha20-Poly1305 / AES-256-GCM",
            f"{r['nacl_chacha']:.0f} / {r['aesgcm']:.0f} MiB/s",
        )
        ratio = ch["ratio_encrypted_vs_nacl"]
        row(
            "  ratio encrypted channel / PyNaCl",
            f"{ratio:.2f}x",
            f">= {ENCRYPTED_TARGET_VS_NACL}x",
            mark(ratio >= ENCRYPTED_TARGET_VS_NACL),
        )
        if "transport" in results:
            t = results["transport"]
            effective, best = t["ratio_vs_nacl"], t["ratio_best_vs_nacl"]
            row(
                "  ratio activation transport (effective; best runs) / PyNaCl",
                f"{effective:.2f}x; {best:.2f}x",
                f">= {ENCRYPTED_TARGET_VS_NACL}x",
                mark(effective >= ENCRYPTED_TARGET_VS_NACL),
            )
    if "recovery" in results:
        rc = results["recovery"]
        row(
            f"Recovery: kill -9 {rc['victim']} (stage 1 of 3, 2 replicas), {rc['clients']} clients",
            f"{rc['correct']}/{rc['requests']} correct, {rc['failed']} failed",
            "0 failed",
            mark(rc["failed"] == 0),
        )
        row("  p50 before the kill", f"{rc['before_p50_ms']:.0f} ms")
        row(
            f"  affected: {rc['in_flight_at_kill']} in flight + started <= {AFFECTED_AFTER_KILL_S:g} s after "
            f"({rc['affected_requests']})",
            f"p50 {rc['affected_p50_ms']:.0f} ms ({rc['affected_p50_vs_before']:.2f}x), "
            f"p99 {rc['affected_p99_ms']:.0f} ms ({rc['affected_p99_vs_before_p50']:.2f}x)",
        )
        row(
            "  last in-flight request answered after the kill",
            f"{rc['last_in_flight_done_after_kill_ms']:.0f} ms",
        )
        row("  p50 after (one replica left)", f"{rc['after_p50_ms']:.0f} ms")
    headers = ("Figure", "Value", "Target", "")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(4)]
    m = results["machine"]
    lines = [
        f"accel-node shard benchmark, {results['date']}, {m['nproc']} CPUs, Python {m['python']}",
        f"Source: {results['source']['root']} at {results['source']['revision']}; "
        f"{results['elapsed_s']:.0f} s; load average (1 min) at start / end: "
        f"{m['loadavg_1m_at_start']:.2f} / {m['loadavg_1m_at_end']:.2f}",
        *(f"note: {n}" for n in results["notes"]),
        "",
    ]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*headers).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt.format(*r).rstrip() for r in rows)
    return "\n".join(lines)


def targets_met(results: dict[str, Any]) -> bool:
    ok = True
    for t in results.get("throughput", {}).values():
        ok = ok and t["ratio_2_stages"] >= THROUGHPUT_TARGET and t["ratio_3_stages"] >= THROUGHPUT_TARGET
    if "channel" in results:
        ok = ok and results["channel"]["ratio_encrypted_vs_nacl"] >= ENCRYPTED_TARGET_VS_NACL
    if "ratio_vs_nacl" in results.get("transport", {}):
        ok = ok and results["transport"]["ratio_vs_nacl"] >= ENCRYPTED_TARGET_VS_NACL
    if "recovery" in results:
        ok = ok and results["recovery"]["failed"] == 0
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: short windows, one round, small batches"
    )
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    parser.add_argument("--models", nargs="+", default=["minilm", "tf12"], choices=("minilm", "tf12"))
    parser.add_argument("--minilm", default="/tmp/minilm/model.onnx", help="all-MiniLM-L6-v2 ONNX file")
    parser.add_argument("--batch", type=int, help="rows per request [4; quick 2]")
    parser.add_argument("--seq", type=int, help="tokens per row [128; quick 64]")
    parser.add_argument("--micro-batch", type=int, help="[shard] micro_batch on s0; 0 = whole batch [0]")
    parser.add_argument("--clients", type=int, help="concurrent closed-loop clients [4]")
    parser.add_argument("--rounds", type=int, help="rounds per configuration [3; quick 1]")
    parser.add_argument("--warmup", type=float, help="seconds of load before each window [2; quick 1]")
    parser.add_argument(
        "--window", type=float, help="measured seconds per configuration and round [8; quick 4]"
    )
    parser.add_argument(
        "--probe-requests", type=int, help="sequential requests per mode of the one-client probe [8; quick 3]"
    )
    parser.add_argument("--transport-rows", type=int, help="4 MiB rows per transport request [4; quick 2]")
    parser.add_argument("--transport-runs", type=int, help="requests per mode [16; quick 3]")
    parser.add_argument("--chan-mib", type=int, help="MiB through the channel microbenchmark [128; quick 32]")
    parser.add_argument("--chan-runs", type=int, help="runs per channel row [5; quick 3]")
    parser.add_argument("--recovery-batch", type=int, help="rows per request while killing [2]")
    parser.add_argument("--pre-kill", type=float, help="seconds of streaming before the kill [6; quick 4]")
    parser.add_argument("--post-kill", type=float, help="seconds of streaming after the kill [6; quick 4]")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON (last line)")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink is not None:
        sink_server(int(args.sink))
        return 0
    defaults = {
        "batch": (4, 2),
        "seq": (128, 64),
        "micro_batch": (0, 0),
        "clients": (4, 4),
        "rounds": (3, 1),
        "warmup": (2.0, 1.0),
        "window": (8.0, 4.0),
        "probe_requests": (8, 3),
        "transport_rows": (4, 2),
        "transport_runs": (16, 3),
        "chan_mib": (128, 32),
        "chan_runs": (5, 3),
        "recovery_batch": (2, 2),
        "pre_kill": (6.0, 4.0),
        "post_kill": (6.0, 4.0),
    }
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    results = run_benchmark(args)
    print(render(results))
    if args.json:
        print(json.dumps(results, sort_keys=True, default=float))
    return 0 if targets_met(results) or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
