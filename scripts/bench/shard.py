"""Sharded inference benchmarks (issue 6): pipelined throughput across local daemons, encrypted
activation transport, and recovery from a killed replica.

Run from the repository root with the project's virtual environment::

    python -m scripts.bench.shard              # ~7.5 minutes on 2 cores; human-readable tables
    python -m scripts.bench.shard --quick      # smoke run, ~3.5 minutes
    python -m scripts.bench.shard --json       # the tables, then one JSON document on the last line

Everything runs against real daemons (``python -m accel_node run``, separate processes, loopback,
no mDNS, no automatic profiling): ``s0``, ``s1``, ``s2`` and a spare ``r`` with one ONNX Runtime
intra-op thread each (``ACCEL_NODE_RUNTIME_INTRA_OP_THREADS=1``), and ``L`` with two. ``s0`` holds
the models (a publisher key of its own), the others trust that key and fetch them. Requests enter
at ``s0`` (``POST /v1/infer/{cid}`` with an ``.npz`` body), which also runs stage 0 of every plan.

1. **Throughput** (``--models``, default ``minilm`` and ``tf12``): all-MiniLM-L6-v2
   (``--minilm``, exported by ``python -m scripts.bench.export_minilm``) and a 12-layer synthetic transformer
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
   and ``s1`` per MiB moved. Beside it, the channel microbenchmark of ``scripts.bench.content`` on
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
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts.bench.harness import (
    REPO_ROOT,
    log,
    machine_info,
    source_revision,
)
from scripts.bench.shard_cluster import (
    build_transport_model,
    cluster_of,
    link_or_copy,
    make_plan,
    share_models,
    start_tf12_build,
    wait_for_route,
)
from scripts.bench.shard_recovery import bench_recovery
from scripts.bench.shard_report import render, targets_met
from scripts.bench.shard_throughput import bench_throughput
from scripts.bench.shard_transport import bench_channel, bench_transport, sink_server

PARTS = ("throughput", "transport", "channel", "recovery")


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "benchmark": "shard",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "source": {"root": str(REPO_ROOT), "revision": source_revision()},
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "check", "sink", "markdown")},
        "machine": machine_info(),
        "notes": [],
    }
    started = time.perf_counter()
    parts = set(args.only or PARTS)
    measured = [m for m in args.models if m != "minilm" or Path(args.minilm).exists()]
    if "minilm" in args.models and "minilm" not in measured:
        results["notes"].append(
            f"{args.minilm} is missing: run python -m scripts.bench.export_minilm; MiniLM skipped"
        )
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
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown rows")
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
    print(render(results, as_markdown=args.markdown))
    if args.json:
        print(json.dumps(results, sort_keys=True, default=float))
    return 0 if targets_met(results) or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
