"""The shard benchmark's recovery part: the replica carrying a stage's traffic is killed while
clients stream requests; latency of the requests it affected, and every answer checked."""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from typing import Any

import numpy as np

from accel_node.errors import ApiError, DaemonNotRunningError
from scripts.bench.cpu import CpuMeter
from scripts.bench.harness import (
    log,
    npz,
)
from scripts.bench.shard_cluster import (
    ShardCluster,
    ort_session,
    serve_stages,
    stage_loads,
    token_inputs,
    wait_for_route,
)
from scripts.bench.shard_load import check_answer, closed_loop, post_infer
from scripts.bench.stats import percentile

AFFECTED_AFTER_KILL_S = 2.0


def bench_recovery(cluster: ShardCluster, plan: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
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
    meter = CpuMeter(d.pid for d in cluster.alive())

    def killer() -> None:
        replicas = {n: cluster[n] for n in ("s1", "r")}

        def served() -> dict[str, int]:
            return {n: int(stage_loads(d, plan_cid).get(1, {}).get("served", 0)) for n, d in replicas.items()}

        try:
            time.sleep(max(0.0, t_kill_at - 1.5 - time.perf_counter()))
            before = served()
            time.sleep(max(0.0, t_kill_at - time.perf_counter()))
            growth = {n: v - before[n] for n, v in served().items()}
        except (ApiError, DaemonNotRunningError, ValueError) as exc:
            kill["error"] = repr(exc)
            return
        victim = max(growth, key=lambda n: growth[n])
        node = replicas[victim]
        meter.sample()
        os.kill(node.pid, signal.SIGKILL)
        kill.update(t=time.perf_counter(), victim=victim, served_growth=growth)
        node.stop(force=True)  # reaps it

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
