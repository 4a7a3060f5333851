"""The serving benchmark's table: each model's API figures against in-process ORT (and ``/healthz``),
with targets, and whether the run passed."""

from __future__ import annotations

from typing import Any

from scripts.bench.report import mark, render_table
from scripts.bench.stats import median

OVERHEAD_P50_TARGET_MS = 1.0
THROUGHPUT_RATIO_TARGET = 0.9


def render(results: dict[str, Any], *, as_markdown: bool = False) -> str:
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
    headers = ("Figure", "Value", "Baseline", "Ratio / delta", "Target", "")
    lines.extend(render_table(headers, rows, as_markdown=as_markdown))
    return "\n".join(lines)


def passed(results: dict[str, Any]) -> bool:
    ok = results.get("daemon_exit_code") == 0
    for m in results["models"]:
        ok = ok and m["single"]["overhead_p50_ms"] <= OVERHEAD_P50_TARGET_MS and bool(m["outputs_equal_ort"])
        ok = ok and all(m[v]["ratio"] >= THROUGHPUT_RATIO_TARGET and m[v]["errors"] == 0
                        for v in ("fp32", "int8") if m.get(v))  # fmt: skip
    return ok
