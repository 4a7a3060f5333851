"""The node benchmark's table: idle RSS against a bare libp2p host, ``GET /v1/status`` against
``GET /healthz``."""

from __future__ import annotations

from typing import Any

from scripts.bench.report import mark, render_table

RSS_RATIO_TARGET = 1.5
STATUS_P50_TARGET_MS = 2.0


def render(results: dict[str, Any], *, as_markdown: bool = False) -> str:
    rss, api = results["rss"], results["api"]
    s, h = api["status"], api["healthz"]
    rows: list[tuple[str, str, str, str]] = []
    kids = rss["daemon_child_processes"]
    label = f"Idle RSS, daemon (+{kids} child processes)" if kids else "Idle RSS, daemon"
    rows.append((label, f"{rss['daemon_rss_mib']:.1f} MiB", "", ""))
    rows.append(("Idle RSS, bare libp2p host (baseline)", f"{rss['bare_rss_mib']:.1f} MiB", "", ""))
    rows.append(
        (
            "Idle RSS ratio daemon/bare",
            f"{rss['rss_ratio']:.2f}x",
            f"<= {RSS_RATIO_TARGET}x",
            mark(rss["rss_ratio"] <= RSS_RATIO_TARGET),
        )
    )
    rows.append(
        (
            "  (USS daemon / bare, info)",
            f"{rss['daemon_uss_mib']:.1f} / {rss['bare_uss_mib']:.1f} MiB = {rss['uss_ratio']:.2f}x",
            "",
            "",
        )
    )
    rows.append(
        (
            "  (CPU while idle, daemon / bare, info)",
            f"{rss['daemon_idle_cpu_pct']:.1f} / {rss['bare_idle_cpu_pct']:.1f} %",
            "",
            "",
        )
    )
    rows.append(("  (daemon RSS after load, info)", f"{rss['daemon_rss_after_load_mib']:.1f} MiB", "", ""))
    c = api["concurrency"]
    rows.append(
        (
            f"GET /v1/status p50, {c} clients",
            f"{s['p50_ms']:.2f} ms",
            f"<= {STATUS_P50_TARGET_MS:g} ms",
            mark(s["p50_ms"] <= STATUS_P50_TARGET_MS),
        )
    )
    rows.append((f"GET /v1/status p99, {c} clients", f"{s['p99_ms']:.2f} ms", "", ""))
    rows.append((f"GET /v1/status throughput, {c} clients", f"{s['rps']:.0f} req/s", "", ""))
    rows.append((f"GET /healthz p50, {c} clients (baseline)", f"{h['p50_ms']:.2f} ms", "", ""))
    rows.append((f"GET /healthz p99, {c} clients (baseline)", f"{h['p99_ms']:.2f} ms", "", ""))
    rows.append((f"GET /healthz throughput, {c} clients (baseline)", f"{h['rps']:.0f} req/s", "", ""))
    rows.append(("Ratio status/healthz, p50 latency", f"{api['ratio_p50']:.2f}x", "", ""))
    rows.append(("Ratio status/healthz, throughput", f"{api['ratio_rps']:.2f}x", "", ""))
    rows.append(
        (
            "Daemon CPU per request, status / healthz",
            f"{s['server_cpu_us']:.0f} / {h['server_cpu_us']:.0f} us = {api['ratio_server_cpu']:.2f}x",
            "",
            "",
        )
    )
    rows.append(
        (
            "In-app time (middleware histogram), status / healthz",
            f"{s['server_mean_ms']:.3f} / {h['server_mean_ms']:.3f} ms",
            "",
            "",
        )
    )
    rows.append(
        (
            "Client CPU per request, status / healthz",
            f"{s['client_cpu_us']:.0f} / {h['client_cpu_us']:.0f} us",
            "",
            "",
        )
    )
    rows.append(
        (
            "  (other processes' CPU during load, status / healthz, info)",
            f"{s['other_cpu_pct']:.0f} / {h['other_cpu_pct']:.0f} % of all CPUs",
            "",
            "",
        )
    )
    if "single_client" in api:
        one = api["single_client"]
        rows.append(
            (
                "p50 with 1 client, status / healthz (info)",
                f"{one['status']['p50_ms']:.2f} / {one['healthz']['p50_ms']:.2f} ms",
                "",
                "",
            )
        )
        rows.append(
            (
                "p99 with 1 client, status / healthz (info)",
                f"{one['status']['p99_ms']:.2f} / {one['healthz']['p99_ms']:.2f} ms",
                "",
                "",
            )
        )
    errors = s["errors"] + h["errors"]
    rows.append(("Non-200 responses", str(errors), "0", mark(errors == 0)))
    rows.append(
        (
            "Daemon exit code after SIGTERM",
            str(results.get("daemon_exit_code")),
            "0",
            mark(results.get("daemon_exit_code") == 0),
        )
    )

    lines = [
        f"accel-node benchmark, {results['date']}, {results['machine']['nproc']} CPUs, "
        f"Python {results['machine']['python']}",
        f"Source: {results['source']['root']} at {results['source']['revision']}"
        + (f"; daemon env: {' '.join(results['daemon_env'])}" if results["daemon_env"] else ""),
        f"RSS: median of {rss['samples']} samples after {rss['idle_s']:g} s idle. "
        f"HTTP: median over {api['rounds']} rounds of {api['requests_per_round']} requests, "
        "clients on the same CPUs as the daemon.",
        f"Load average (1 min) at start / end: {results['machine']['loadavg_1m_at_start']:.2f} / "
        f"{results['machine']['loadavg_1m_at_end']:.2f} (other work on the machine skews every figure).",
        "",
    ]
    lines.extend(render_table(("Figure", "Value", "Target", ""), rows, as_markdown=as_markdown))
    return "\n".join(lines)
