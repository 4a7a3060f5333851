"""One model through the serving benchmark: publish, compare with in-process ORT, single requests
against ORT and ``/healthz``, throughput under load against ORT's best batch, and the int8 variant."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accel_node.api.media import decode_response
from accel_node.client import Client
from accel_node.core import endpoints as E
from accel_node.core.schemas import PublishRequest
from accel_node.models.manifest import TensorSpec
from accel_node.runtime.codecs import TensorLimits
from accel_node.runtime.sessions import create_session
from accel_node.runtime.synthetic import random_inputs
from accel_node.runtime.validation import Arrays
from scripts.bench.cpu import CpuWindow
from scripts.bench.harness import Daemon
from scripts.bench.harness import log_timed as log
from scripts.bench.serving_breakdown import breakdown
from scripts.bench.serving_load import (
    InferCall,
    LoadResult,
    Workload,
    daemon_quiet,
    encode_body,
    mean_between,
    ort_throughput,
    run_load,
    scrape,
    time_calls,
)
from scripts.bench.stats import latency_ms, median

BREAKDOWN_MAX_ORT_MS = 2.0
SETTLE_S = 0.2  # before each measured block: ORT's idle worker threads spin ~100 ms after a run
LIMITS = TensorLimits(max_body_bytes=1 << 30, max_elements=1 << 28)


@dataclass
class ModelBench:
    daemon: Daemon
    api: Client
    url: str
    token: str
    home: Path
    args: argparse.Namespace
    runtime: dict[str, Any]
    output_names: dict[str, list[str]] = field(default_factory=dict)

    def infer_outputs(self, cid: str, body: bytes, ctype: str, variant: str = "fp32") -> Arrays:
        response = InferCall(cid, body, ctype, variant).send(self.api)
        if response.status_code != 200:
            raise RuntimeError(
                f"POST {E.INFER.url(cid=cid)} ({variant}) answered {response.status_code}: {response.text}"
            )
        outputs = self.output_names.get(cid, ["output"])
        return decode_response(
            response.content, response.headers.get("content-type"), LIMITS, npy_name=outputs[0]
        )

    def session_options(self, cid: str, variant: str) -> dict[str, Any]:
        """Thread counts and graph optimisation of the daemon's cached session for ``cid``/``variant``."""
        for entry in self.api.inference.runtime()["sessions"]:
            if entry["cid"] == cid and entry["variant"] == variant:
                return {k: entry[k] for k in ("intra_op_threads", "inter_op_threads", "graph_optimization")}
        raise RuntimeError(f"the daemon holds no session for {cid}/{variant}")

    def run(self, wl: Workload) -> dict[str, Any]:
        args = self.args
        out: dict[str, Any] = {"model": wl.name, "description": wl.description}
        log(f"{wl.name}: publishing")
        t0 = time.perf_counter()
        cid = self.api.models.publish(PublishRequest(dir=str(wl.directory), key="bench", name=wl.name)).cid
        out["cid"] = cid
        out["publish_s"] = time.perf_counter() - t0
        manifest = self.api.models.show(cid).manifest
        signature = tuple(
            TensorSpec(e["name"], e["dtype"], tuple(e["shape"])) for e in manifest["io"]["inputs"]
        )
        self.output_names[cid] = [e["name"] for e in manifest["io"]["outputs"]]
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
        out["daemon_cpu_share_before"] = daemon_quiet(self.daemon)

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
            record = self.api.models.build_variant(cid, "int8")
            int8_path = self.home / "variants" / f"{record['cid']}.onnx"
            api_int8 = self.infer_outputs(cid, body, ctype, "int8")  # loads the variant's session
            int8_session = create_session(int8_path, **self.session_options(cid, "int8"))
            daemon_quiet(self.daemon)
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
        call = InferCall(cid, body, ctype)
        for rnd in range(args.rounds):
            order = ["ort", "api", "healthz"]
            for kind in order[rnd % 3 :] + order[: rnd % 3]:
                time.sleep(SETTLE_S)
                if kind == "ort":
                    lat = time_calls(lambda: session.run(None, feeds), args.single_seconds, 20)
                    per_round["ort"].append(latency_ms(lat))
                    continue
                before = scrape(self.api)
                cpu = CpuWindow(self.daemon.pid)
                if kind == "api":
                    lat = time_calls(lambda: call.send(self.api).raise_for_status(), args.single_seconds, 20)
                else:
                    lat = time_calls(lambda: self.api.transport.send(E.HEALTH), args.single_seconds, 20)
                usage = cpu.stop()
                after = scrape(self.api)
                result = latency_ms(lat)
                result["daemon_cpu_ms_per_request"] = usage["daemon_cpu_s"] / len(lat) * 1e3
                result["client_cpu_ms_per_request"] = usage["client_cpu_s"] / len(lat) * 1e3
                result["other_cpu_pct"] = usage["other_cpu_pct"]
                if kind == "api":
                    result["in_app_ms"] = 1e3 * mean_between(
                        before, after, "accel_node_api_request_duration_seconds", route=E.INFER.path
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
            log(
                f"  {wl.name} {variant} in-process batch {batch}: {point['items_s']:.1f} items/s",
            )
        best = max(sweep, key=lambda p: p["items_s"])
        best_feeds = random_inputs(
            signature, batch=int(best["batch"]), seq_len=args.seq_len, seed=int(best["batch"])
        )
        call = InferCall(cid, body, ctype, variant)
        loads: list[LoadResult] = []
        ort_again: list[dict[str, float]] = []
        for rnd in range(args.load_rounds):
            result = run_load(
                self.url, self.token, call, clients=args.clients, warmup_s=args.load_warmup,
                window_s=args.load_seconds, completions=args.load_completions, daemon=self.daemon,
                metrics_client=self.api, labels={"cid": cid, "variant": variant},
            )  # fmt: skip
            loads.append(result)
            if result.errors:
                log(
                    f"  {wl.name} {variant}: {result.errors} failed requests, first: {result.first_error}",
                )
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
