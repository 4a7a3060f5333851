"""The shard benchmark's throughput part: local against sharded configurations under the same
closed-loop load, in-process ORT as the compute reference, and a one-client probe of the overhead."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from scripts.bench.cpu import CpuMeter, tree_cpu_s
from scripts.bench.harness import (
    Daemon,
    log,
    npz,
)
from scripts.bench.shard_cluster import ShardCluster, ort_session, token_inputs
from scripts.bench.shard_load import Window, check_answer, measure_window, post_infer
from scripts.bench.stats import median

CONFIG_LABELS = {
    "local2": "one node, mode=local, 2 threads (baseline)",
    "sharded2": "2 stages x 1 thread (s0, s1)",
    "local3": "one node, mode=local, 3 threads",
    "sharded3": "3 stages x 1 thread (s0, s1, s2)",
}


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
    cluster: ShardCluster,
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
            cpu0 = [tree_cpu_s(n.pid) for n in nodes]
            for i in range(requests):
                t0 = time.perf_counter()
                post_infer(c, cid, bodies[i % len(bodies)], params).raise_for_status()
                latencies.append(time.perf_counter() - t0)
            cpu = [
                (tree_cpu_s(n.pid) - c0) * 1e3 / (rows * requests) for n, c0 in zip(nodes, cpu0, strict=True)
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


def bench_throughput(
    cluster: ShardCluster, model: str, plans: dict[int, dict[str, Any]], args: argparse.Namespace
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
        meter = CpuMeter(d.pid for d in cluster.alive())
        key = f"{threads}t"
        inproc[key], inproc_cpu[key] = inprocess_rows_per_s(path, feeds[0], threads, args.window / 3)
        inproc_other[key] = meter.other_pct()
        inproc_steal[key] = meter.steal_pct()

    s0, big = cluster["s0"], cluster["L"]
    configs: dict[str, tuple[Daemon, dict[str, str], list[tuple[str, Daemon, str, int]]]] = {
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
        with node.client(120) as c:
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
