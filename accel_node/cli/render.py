"""Output of CLI commands: rich tables for people, JSON with ``--json`` for scripts."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def show(data: Any, *, as_json: bool, human: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON (``--json``) or through ``human`` for people."""
    if as_json:
        emit_json(data)
    else:
        human(data)


def key_values(title: str, rows: Mapping[str, Any]) -> None:
    table = Table(title=escape(title), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows.items():
        table.add_row(
            escape(key),
            escape("\n".join(map(str, value)) if isinstance(value, list) else str(value)),
        )
    console.print(table)


def _num(value: Any, fmt: str = "{:.1f}", unit: str = "") -> str:
    return "-" if value is None else fmt.format(value) + unit


def _age(ts: Any) -> str:
    return "-" if ts is None else f"{max(0.0, time.time() - ts):.0f} s ago"


def peers_table(peers: Sequence[Mapping[str, Any]]) -> None:
    if not peers:
        line("no known peers")
        return
    table = Table(title=f"{len(peers)} peer(s)", title_justify="left")
    table.add_column("peer id", overflow="fold")
    table.add_column("conn")
    table.add_column("latency", justify="right")
    table.add_column("GFLOP/s", justify="right")
    table.add_column("mem free", justify="right")
    table.add_column("verified")
    table.add_column("addresses", overflow="fold")
    for peer in peers:
        hw = (peer.get("capability") or {}).get("hw") or {}
        table.add_row(
            peer["peer_id"],
            "yes" if peer.get("connected") else "no",
            _num(peer.get("latency_ms"), "{:.2f}", " ms"),
            _num(hw.get("peak_gflops")),
            _num(hw.get("mem_free_gb"), unit=" GB"),
            _age(peer.get("capability_verified_at")),
            escape("\n".join(peer.get("addrs", []))),
        )
    console.print(table)


def capability_table(peers: Sequence[Mapping[str, Any]]) -> None:
    if not peers:
        line("no matching peers")
        return
    table = Table(title=f"{len(peers)} matching peer(s)", title_justify="left")
    for column in ("peer id", "name", "cpu", "GFLOP/s", "mem BW", "mem free", "GPUs", "load"):
        table.add_column(column, overflow="fold")
    for peer in peers:
        cap = peer.get("capability") or {}
        hw = cap.get("hw") or {}
        load = cap.get("load") or {}
        table.add_row(
            peer["peer_id"],
            escape(str(cap.get("name", ""))),
            escape(str(hw.get("cpu", ""))),
            _num(hw.get("peak_gflops")),
            _num(hw.get("mem_bw_gbs"), unit=" GB/s"),
            _num(hw.get("mem_free_gb"), unit=" GB"),
            escape(", ".join(g.get("name", "?") for g in hw.get("gpus", [])) or "-"),
            _num(load.get("utilisation"), "{:.0%}"),
        )
    console.print(table)


def peer_detail(peer: Mapping[str, Any]) -> None:
    cap = peer.get("capability") or {}
    rows: dict[str, Any] = {
        "peer id": peer["peer_id"],
        "connected": peer.get("connected"),
        "latency": _num(peer.get("latency_ms"), "{:.2f}", " ms"),
        "addresses": peer.get("addrs", []),
        "verified": _age(peer.get("capability_verified_at")),
        "record seq": peer.get("capability_seq"),
    }
    for key, value in (cap.get("hw") or {}).items():
        rows[f"hw.{key}"] = value
    rows["load"] = cap.get("load") or peer.get("load")
    if peer.get("perf"):
        rows["perf"] = peer["perf"]
    key_values("peer", rows)


def keys_table(keys: Sequence[Mapping[str, Any]], *, title: str) -> None:
    if not keys:
        line(f"no {title}")
        return
    table = Table(title=title, title_justify="left")
    for column in ("name", "key id", "public key", "own"):
        table.add_column(column, overflow="fold")
    for key in keys:
        table.add_row(escape(key["name"]), key["key_id"], key["public_key"], "yes" if key["own"] else "")
    console.print(table)


def models_table(models: Sequence[Mapping[str, Any]]) -> None:
    if not models:
        line("no models")
        return
    table = Table(title=f"{len(models)} model(s)", title_justify="left")
    for column in ("cid", "name", "version", "size", "publisher", "pinned"):
        table.add_column(column, overflow="fold")
    for m in models:
        table.add_row(
            m["cid"], escape(m["name"]), str(m["version"]), f"{m['size']:,}", m["publisher"], str(m["pinned"])
        )
    console.print(table)


def model_detail(model: Mapping[str, Any]) -> None:
    manifest = model.get("manifest") or {}
    key_values(
        f"model {model['cid']}",
        {
            "name": model["name"],
            "version": model["version"],
            "publisher": model["publisher"],
            "size": f"{model['size']:,} bytes",
            "path": model["path"],
            "pinned": model["pinned"],
            "entry": manifest.get("entry"),
            "files": [f"{f['path']} {f['size']:,} B {f['cid']}" for f in manifest.get("files", [])],
            "inputs": [
                f"{t['name']}: {t['dtype']}{t['shape']}" for t in manifest.get("io", {}).get("inputs", [])
            ],
            "outputs": [
                f"{t['name']}: {t['dtype']}{t['shape']}" for t in manifest.get("io", {}).get("outputs", [])
            ],
            "expires": manifest.get("expires"),
        },
    )


def hardware(data: Mapping[str, Any]) -> None:
    profile = data.get("profile")
    summary = data.get("summary") or {}
    key_values(
        "hardware",
        {k: v for k, v in summary.items() if k != "gpus"} | {"fingerprint": data["fingerprint"][:16]},
    )
    if not profile:
        line("not profiled yet: run 'accel-node profile'")
        return
    table = Table(title=f"{profile['mode']} profile, {profile['duration_s']:.1f} s", title_justify="left")
    for column in ("measurement", "median", "unit", "CV", "threads", "repeats", "method"):
        table.add_column(column, overflow="fold")
    for m in profile["measurements"]:
        if m.get("median") is None:
            table.add_row(
                m["name"],
                "n/a",
                m["unit"],
                "",
                str(m.get("threads", "")),
                "",
                escape(m.get("unavailable_reason") or ""),
            )
            continue
        table.add_row(
            m["name"],
            f"{m['median']:.2f}",
            m["unit"],
            f"{m['cv']:.1%}",
            str(m.get("threads", "")),
            str(m.get("repeats", len(m.get("samples", [])))),
            escape(m.get("method", "")),
        )
    console.print(table)


def bench_table(points: Sequence[Mapping[str, Any]]) -> None:
    table = Table(title=f"{len(points)} benchmark point(s)", title_justify="left")
    for column in ("variant", "batch", "threads", "p50 ms", "p90 ms", "items/s", "peak RSS MiB"):
        table.add_column(column, justify="right")
    for p in points:
        table.add_row(
            p["variant"],
            str(p["batch"]),
            str(p["threads"]),
            _num(p["latency_ms_p50"], "{:.2f}"),
            _num(p["latency_ms_p90"], "{:.2f}"),
            _num(p["throughput_items_s"], "{:.0f}"),
            _num(p["peak_rss_bytes"] / 2**20 if p.get("peak_rss_bytes") else None, "{:.0f}"),
        )
    console.print(table)


def analysis(data: Mapping[str, Any]) -> None:
    params, flops, activations = data["parameters"], data["flops"], data["activations"]
    key_values(
        "model analysis",
        {
            "dims": json.dumps(data.get("dim_values")),
            "parameters": f"{params['count']:,} ({params['bytes']:,} bytes)",
            "FLOPs": f"{flops['total']:,.0f}",
            "FLOPs (polynomial in dims)": json.dumps(flops["polynomial"]["total"]),
            "activation peak": f"{activations['peak_bytes']:,} bytes",
            "opsets": json.dumps(data.get("opsets")),
        },
    )
    table = Table(title="FLOPs by operator type", title_justify="left")
    table.add_column("operator")
    table.add_column("FLOPs", justify="right")
    table.add_column("nodes", justify="right")
    histogram = data.get("op_histogram") or {}
    for op, count in sorted(flops["by_op"].items(), key=lambda kv: -kv[1]):
        table.add_row(escape(op), f"{count:,.0f}", str(histogram.get(op, "")))
    console.print(table)


def shard_plan(plan: Mapping[str, Any]) -> None:
    line(f"plan {plan['plan']} of model {plan['model']}")
    table = Table(title=f"{len(plan['stages'])} stage(s)", title_justify="left")
    for column in ("stage", "cid", "GFLOP", "params MiB", "peer"):
        table.add_column(column, overflow="fold")
    placement = plan.get("placement") or []
    for stage in plan["stages"]:
        peer = placement[stage["index"]] if stage["index"] < len(placement) else ""
        peers = ", ".join(stage.get("peers", [])) or peer
        table.add_row(
            str(stage["index"]),
            stage["cid"],
            f"{stage['flops'] / 1e9:.3f}",
            f"{stage['param_bytes'] / 2**20:.1f}",
            peers,
        )
    console.print(table)
    for outcome in plan.get("assignments") or []:
        state = outcome.get("stage_cid") or f"refused: {outcome.get('error')}"
        line(f"stage {outcome['stage']} on {outcome['peer']}: {state}")


def shards(data: Mapping[str, Any]) -> None:
    if not data["plans"]:
        line("no shard plans")
    for plan in data["plans"]:
        shard_plan(plan)
    for served in data["served"]:
        line(f"serving here: stage {served['stage']} of plan {served['plan']}")


@contextlib.contextmanager
def progress(*, enabled: bool) -> Iterator[Progress]:
    """A progress bar on stderr (disabled for --json output)."""
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )
    with bar:
        yield bar


def line(text: str) -> None:
    """Print plain text (no rich markup interpretation, no highlighting)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def error(message: str) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
