"""The shard benchmark's table: throughput ratios, transport against PyNaCl, recovery latency."""

from __future__ import annotations

from typing import Any

from scripts.bench.report import mark, render_table
from scripts.bench.shard_load import MAX_ABS_DIFF
from scripts.bench.shard_recovery import AFFECTED_AFTER_KILL_S
from scripts.bench.shard_throughput import CONFIG_LABELS

THROUGHPUT_TARGET = 0.8
ENCRYPTED_TARGET_VS_NACL = 0.5


def render(results: dict[str, Any], *, as_markdown: bool = False) -> str:
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
    m = results["machine"]
    lines = [
        f"accel-node shard benchmark, {results['date']}, {m['nproc']} CPUs, Python {m['python']}",
        f"Source: {results['source']['root']} at {results['source']['revision']}; "
        f"{results['elapsed_s']:.0f} s; load average (1 min) at start / end: "
        f"{m['loadavg_1m_at_start']:.2f} / {m['loadavg_1m_at_end']:.2f}",
        *(f"note: {n}" for n in results["notes"]),
        "",
    ]
    lines.extend(render_table(("Figure", "Value", "Target", ""), rows, as_markdown=as_markdown))
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
