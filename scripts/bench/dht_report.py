"""The DHT benchmark's summaries and table: lookups against the ``GET /v1/status`` baseline, topology, CPU,
memory and the daemons' complaints."""

from __future__ import annotations

import json
from typing import Any

from scripts.bench.report import mark, render_table
from scripts.bench.stats import summarize_ms

LOOKUP_P50_TARGET_MS = 100.0


def summarize_lookups(records: list[dict[str, Any]], cpu_used_s: float) -> dict[str, Any]:
    """Latency summaries of the timed lookups: all, successful only, by hop distance, first and later
    per source, first and second half, the slowest, and the daemons' CPU per lookup."""
    lookup_ms = [r["ms"] for r in records]
    ok_ms = [r["ms"] for r in records if r["ok"]]
    lk = summarize_ms(lookup_ms)
    by_hops = {
        str(h): summarize_ms([r["ms"] for r in records if r["hops"] == h])
        for h in sorted({r["hops"] for r in records})
    }
    half = len(records) // 2
    slowest = sorted(records, key=lambda r: r["ms"], reverse=True)[:5]
    return {
        **lk,
        "successful_only": summarize_ms(ok_ms),
        "success": sum(r["ok"] for r in records),
        "success_rate": sum(r["ok"] for r in records) / len(records),
        "failed_timeout": sum(r["status"] == 0 for r in records),
        "failed_non_200": sum(r["status"] not in (0, 200) for r in records),
        "failed_stale_copy": sum(r["stale"] for r in records),
        "by_hops": by_hops,
        "first_per_source": summarize_ms([r["ms"] for r in records if r["first"]]),
        "later_per_source": summarize_ms([r["ms"] for r in records if not r["first"]]),
        "first_half": summarize_ms(lookup_ms[:half]),
        "second_half": summarize_ms(lookup_ms[half:]),
        "over_1s": sum(ms > 1000 for ms in lookup_ms),
        "slowest": slowest,
        "daemon_cpu_ms_per_lookup": cpu_used_s * 1e3 / len(records),
    }


def render(results: dict[str, Any], *, as_markdown: bool = False) -> str:
    p, topo, lk, st = results["params"], results["topology"], results["lookup"], results["status"]
    mem, start = results["memory"], results["startup"]
    rows: list[tuple[str, str, str, str]] = []
    rows.append(("Nodes / edges (ring + chords)", f"{p['nodes']} / {topo['edges']}", "", ""))
    rows.append(("Topology diameter / mean hops", f"{topo['diameter']} / {topo['mean_hops']:.2f}", "", ""))
    rows.append(
        (
            "Startup: all daemons ready (parallel)",
            f"{start['all_ready_s']:.1f} s (first {start['first_ready_s']:.1f} s)",
            "",
            "",
        )
    )
    rows.append(("Build topology (connect calls)", f"{topo['connect_s']:.1f} s", "", ""))
    rows.append(
        ("Ready to measure, after all ready", f"{results['publish_wait']['since_all_ready_s']:.1f} s", "", "")
    )
    rows.append(
        (
            f"Lookup p50 ({lk['n']} of {lk['planned']} lookups)",
            f"{lk['p50_ms']:.1f} ms",
            f"<= {LOOKUP_P50_TARGET_MS:g} ms",
            mark(lk["p50_ms"] <= LOOKUP_P50_TARGET_MS),
        )
    )
    rows.append(("Lookup p99", f"{lk['p99_ms']:.1f} ms", "", ""))
    rows.append(("Lookup mean", f"{lk['mean_ms']:.1f} ms", "", ""))
    rows.append(("Lookup max", f"{lk['max_ms']:.1f} ms", "", ""))
    rows.append(
        (
            "Lookup success (fresh capability)",
            f"{lk['success']}/{lk['n']} = {lk['success_rate'] * 100:.1f} %",
            "100 %",
            mark(lk["success"] == lk["n"]),
        )
    )
    if lk["success"] < lk["n"]:
        rows.append(
            (
                "  failures: timeout / non-200 / stale stored copy",
                f"{lk['failed_timeout']} / {lk['failed_non_200']} / {lk['failed_stale_copy']}",
                "",
                "",
            )
        )
    rows.append(("GET /v1/status p50 (baseline)", f"{st['p50_ms']:.2f} ms", "", ""))
    rows.append(("GET /v1/status p99 (baseline)", f"{st['p99_ms']:.2f} ms", "", ""))
    rows.append(("GET /v1/status mean (baseline)", f"{st['mean_ms']:.2f} ms", "", ""))
    rows.append(("Ratio lookup p50 / status p50", f"{results['ratio_p50']:.1f}x", "", ""))
    for h, s in lk["by_hops"].items():
        rows.append(
            (
                f"  lookup p50 / p99, {h} hop(s) apart (n={s['n']})",
                f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} ms",
                "",
                "",
            )
        )
    f, later = lk["first_per_source"], lk["later_per_source"]
    rows.append(
        (
            "  lookup p50, first per source / later",
            f"{f['p50_ms']:.1f} (n={f['n']}) / {later['p50_ms']:.1f} ms",
            "",
            "",
        )
    )
    rows.append(
        (
            "  lookup p50, first half / second half",
            f"{lk['first_half']['p50_ms']:.1f} / {lk['second_half']['p50_ms']:.1f} ms",
            "",
            "",
        )
    )
    rows.append(("  lookups over 1 s", str(lk["over_1s"]), "", ""))
    rows.append(("  daemon CPU per lookup (all daemons)", f"{lk['daemon_cpu_ms_per_lookup']:.1f} ms", "", ""))
    c0, c1 = topo["connected_after_build"], results["connected_after_measurement"]
    rows.append(
        (
            "Connections per node, built / after lookups",
            f"{c0['mean']:.1f} / {c1['mean']:.1f} (max {c1['max']})",
            "",
            "",
        )
    )
    pw = results["publish_wait"]
    rows.append(
        (
            "Probe lookup node 0 -> farthest node",
            f"{'ok' if pw['probe_ok'] else 'FAILED'} after {pw['probe_lookups']} tries, "
            f"{pw['probe_s']:.1f} s",
            "",
            "",
        )
    )
    rows.append(
        (
            "Daemons' CPU, before / during measurement",
            f"{pw['cpu_pct_before']:.0f} / {results['daemon_cpu_pct_during_measurement']:.0f} % of a core",
            "",
            "",
        )
    )
    rows.append(
        (
            "Refresh ticks (nodes x ticks) during measurement",
            str(results["refresh_ticks_during_measurement"]),
            "",
            "",
        )
    )
    rows.append(
        (
            f"Total RSS of {p['nodes']} daemons, ready / end",
            f"{mem['rss_total_ready_mib']:.0f} / {mem['rss_total_end_mib']:.0f} MiB",
            "",
            "",
        )
    )
    rows.append(
        (
            "  per daemon at end (RSS) / total USS",
            f"{mem['rss_per_node_end_mib']:.1f} / {mem['uss_total_end_mib']:.0f} MiB",
            "",
            "",
        )
    )
    counts = results["logs"]["counts"]
    rows.append(
        ("Daemon log: warnings/errors/tracebacks/libp2p", json.dumps(counts) if counts else "none", "", "")
    )
    bad = results["exit_codes_nonzero"]
    rows.append(("Daemons exiting non-zero after SIGTERM", str(len(bad)), "0", mark(not bad)))

    lines = render_table(("Measure", "Value", "Target", "Result"), rows, as_markdown=as_markdown)
    lines.append("")
    lines.append("Slowest lookups:")
    for r in lk["slowest"]:
        lines.append(
            f"  {r['ms']:8.1f} ms  node{r['source']:02d} -> node{r['target']:02d} "
            f"({r['hops']} hops, status {r['status']}, ok={r['ok']})"
        )
    if results["logs"]["top"]:
        lines.append("")
        lines.append("Most frequent daemon log complaints (all daemons):")
        lines += [f"  {n:6d}  {msg}" for msg, n in results["logs"]["top"]]
    m = results["machine"]
    lines.append("")
    lines.append(
        f"source {results['source']['revision']}; {m['nproc']} CPUs, Python {m['python']}; "
        f"load avg {m['loadavg_1m_at_start']:.2f} -> {m['loadavg_1m_at_end']:.2f}; "
        f"seed {p['seed']}, cap_refresh_s {p['cap_refresh_s']:g}"
    )
    return "\n".join(lines)
