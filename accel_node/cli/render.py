"""Output of CLI commands: rich tables for people, JSON with ``--json`` for scripts.

Tables are laid out for an 80-column terminal: figures carry their unit and four significant
digits (:mod:`accel_node.cli.units`), long identifiers (peer ids, CIDs, key ids) fold inside their
column instead of pushing the table wider, and long free text (methods, reasons) goes on lines of
its own. A machine without a GPU says so in one line instead of a row per missing GPU figure.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from accel_node.cli.units import (
    fmt_age,
    fmt_bytes,
    fmt_count,
    fmt_duration,
    fmt_gb,
    fmt_ms,
    fmt_number,
    fmt_percent,
    fmt_rate,
)


def make_console(**options: Any) -> Console:
    """A console for CLI output: no emoji codes (``:1234:`` in an IPv6 address is not an emoji)."""
    return Console(emoji=False, **options)


console = make_console()


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def show(data: Any, *, as_json: bool, human: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON (``--json``) or through ``human`` for people."""
    if as_json:
        emit_json(data)
    else:
        human(data)


def _table(title: str, *columns: str, figures: Sequence[str] = (), whole: Sequence[str] = ()) -> Table:
    """A compact table: ``figures`` right-aligned, they and ``whole`` columns unwrapped, the rest fold."""
    table = Table(title=escape(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        if column in figures:
            table.add_column(column, justify="right", no_wrap=True)
        elif column in whole:
            table.add_column(column, no_wrap=True)
        else:
            table.add_column(column, overflow="fold")
    return table


def key_values(title: str, rows: Mapping[str, Any]) -> None:
    table = Table(
        title=escape(title), show_header=False, title_justify="left", box=box.SIMPLE, pad_edge=False
    )
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows.items():
        table.add_row(
            escape(key),
            escape("\n".join(map(str, value)) if isinstance(value, list) else str(value)),
        )
    console.print(table)


def status(data: Mapping[str, Any]) -> None:
    rows = {k: v for k, v in data.items() if k != "uptime_s"}
    if "uptime_s" in data:
        rows["uptime"] = fmt_duration(data["uptime_s"])
    key_values("accel-node", rows)


def perf(data: Mapping[str, Any]) -> None:
    line(
        f"{data['peer_id']}: rtt {fmt_ms(data['rtt_ms'])}, upload {fmt_rate(data['upload_mbps'], 'MB/s')}, "
        f"download {fmt_rate(data['download_mbps'], 'MB/s')} ({fmt_bytes(data['payload_bytes'])} payload)"
    )


def _gpus(gpus: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per GPU, or the one line saying there is none."""
    if not gpus:
        return ["GPU: none"]
    out = []
    for gpu in gpus:
        figures = [fmt_gb(gpu.get("memory_gb"))]
        for key, label in (("fp32_tflops", "fp32"), ("fp16_tflops", "fp16"), ("bf16_tflops", "bf16")):
            if gpu.get(key) is not None:
                figures.append(f"{fmt_rate(gpu[key], 'TFLOP/s')} {label}")
        if gpu.get("mem_bw_gbs") is not None:
            figures.append(fmt_rate(gpu["mem_bw_gbs"], "GB/s"))
        out.append(f"GPU: {gpu.get('name', '?')}: {', '.join(figures)}")
    return out


def _hardware_rows(hw: Mapping[str, Any]) -> dict[str, Any]:
    """A hardware summary (as records carry it) in words and units."""
    rows: dict[str, Any] = {
        "cpu": f"{hw.get('cpu') or '?'} ({hw.get('cores', '?')} cores)",
        "compute": fmt_rate(hw.get("peak_gflops"), "GFLOP/s"),
        "compute, one thread": fmt_rate(hw.get("gflops_1t"), "GFLOP/s"),
        "int8 compute": fmt_rate(hw.get("int8_gops"), "GOP/s"),
        "memory": f"{fmt_gb(hw.get('mem_free_gb'))} free of {fmt_gb(hw.get('mem_total_gb'))}",
        "memory bandwidth": fmt_rate(hw.get("mem_bw_gbs"), "GB/s"),
    }
    known = {"cpu", "cores", "peak_gflops", "gflops_1t", "int8_gops", "mem_free_gb", "mem_total_gb"}
    known |= {"mem_bw_gbs", "gpus"}
    rows.update({k: v for k, v in hw.items() if k not in known})
    return rows


def _load(load: Mapping[str, Any] | None) -> str:
    if not load:
        return "-"
    return f"{fmt_percent(load.get('utilisation'))} busy, {load.get('queue_depth', 0)} queued"


def peers_table(peers: Sequence[Mapping[str, Any]]) -> None:
    if not peers:
        line("no known peers")
        return
    table = _table(
        f"{len(peers)} peer(s)",
        "peer id / addresses",
        "conn",
        "latency",
        "GFLOP/s",
        "mem free",
        "verified",
        figures=("conn", "latency", "GFLOP/s", "mem free", "verified"),
    )
    for peer in peers:
        hw = (peer.get("capability") or {}).get("hw") or {}
        table.add_row(
            "\n".join([peer["peer_id"], *(escape(a) for a in peer.get("addrs", []))]),
            "yes" if peer.get("connected") else "no",
            fmt_ms(peer.get("latency_ms")),
            fmt_number(hw.get("peak_gflops")),
            fmt_gb(hw.get("mem_free_gb")),
            fmt_age(peer.get("capability_verified_at")),
        )
    console.print(table)


def capability_table(peers: Sequence[Mapping[str, Any]]) -> None:
    if not peers:
        line("no matching peers")
        return
    figures = ("GFLOP/s", "mem GB/s", "mem free", "load")
    table = _table(f"{len(peers)} matching peer(s)", "peer id / name", *figures, "GPUs", figures=figures)
    for peer in peers:
        cap = peer.get("capability") or {}
        hw = cap.get("hw") or {}
        table.add_row(
            "\n".join([peer["peer_id"], escape(str(cap.get("name", "")))]),
            fmt_number(hw.get("peak_gflops")),
            fmt_number(hw.get("mem_bw_gbs")),
            fmt_gb(hw.get("mem_free_gb")),
            fmt_percent((cap.get("load") or {}).get("utilisation")),
            escape(", ".join(g.get("name", "?") for g in hw.get("gpus", [])) or "none"),
        )
    console.print(table)


def peer_detail(peer: Mapping[str, Any]) -> None:
    cap = peer.get("capability") or {}
    rows: dict[str, Any] = {
        "peer id": peer["peer_id"],
        "connected": peer.get("connected"),
        "latency": fmt_ms(peer.get("latency_ms")),
        "addresses": peer.get("addrs", []),
        "verified": fmt_age(peer.get("capability_verified_at")),
        "record seq": peer.get("capability_seq"),
    }
    rows.update(_hardware_rows(cap.get("hw") or {}))
    rows["load"] = _load(cap.get("load") or peer.get("load"))
    if peer.get("perf"):
        p = peer["perf"]
        rows["perf"] = (
            f"rtt {fmt_ms(p.get('rtt_ms'))}, up {fmt_rate(p.get('upload_mbps'), 'MB/s')}, "
            f"down {fmt_rate(p.get('download_mbps'), 'MB/s')}"
        )
    key_values("peer", rows)
    if cap.get("hw"):
        for text in _gpus(cap["hw"].get("gpus") or []):
            line(text)


def keys_table(keys: Sequence[Mapping[str, Any]], *, title: str) -> None:
    if not keys:
        line(f"no {title}")
        return
    table = _table(title, "name", "key id", "public key", "own", whole=("key id", "own"))
    for key in keys:
        table.add_row(escape(key["name"]), key["key_id"], key["public_key"], "yes" if key["own"] else "")
    console.print(table)


def models_table(models: Sequence[Mapping[str, Any]]) -> None:
    if not models:
        line("no models")
        return
    table = _table(
        f"{len(models)} model(s)", "name", "version", "size", "cid", "pinned", figures=("version", "size")
    )
    for m in models:
        table.add_row(
            escape(m["name"]),
            str(m["version"]),
            fmt_bytes(m["size"]),
            m["cid"],
            "yes" if m["pinned"] else "no",
        )
    console.print(table)


def _spec(t: Mapping[str, Any]) -> str:
    return f"{t['name']}: {t['dtype']}{t['shape']}"


def model_detail(model: Mapping[str, Any]) -> None:
    manifest = model.get("manifest") or {}
    io = manifest.get("io", {})
    key_values(
        f"model {model['cid']}",
        {
            "name": model["name"],
            "version": model["version"],
            "publisher": model["publisher"],
            "size": f"{fmt_bytes(model['size'])} ({model['size']:,} bytes)",
            "path": model["path"],
            "pinned": model["pinned"],
            "entry": manifest.get("entry"),
            "files": [f"{f['path']} ({fmt_bytes(f['size'])}) {f['cid']}" for f in manifest.get("files", [])],
            "inputs": [_spec(t) for t in io.get("inputs", [])],
            "outputs": [_spec(t) for t in io.get("outputs", [])],
            "expires": manifest.get("expires"),
        },
    )


def _is_gpu_figure(name: str) -> bool:
    return name.startswith("gpu")


def hardware(data: Mapping[str, Any]) -> None:
    profile = data.get("profile")
    summary = data.get("summary") or {}
    rows = _hardware_rows(summary) | {"fingerprint": data["fingerprint"][:16]}
    key_values("hardware", rows)
    for text in _gpus(summary.get("gpus") or []):
        line(text)
    if not profile:
        line("not profiled yet: run 'accel-node profile'")
        return
    measurements = profile["measurements"]
    if not summary.get("gpus"):  # no GPU: the "GPU: none" line above, not a row per GPU figure
        measurements = [m for m in measurements if not _is_gpu_figure(m["name"])]
    table = _table(
        f"{profile['mode']} profile, {fmt_duration(profile['duration_s'])}",
        "measurement",
        "median",
        "CV",
        "threads",
        "repeats",
        figures=("median", "CV", "threads", "repeats"),
    )
    unavailable = []
    for m in measurements:
        if m.get("median") is None:
            unavailable.append(f"{m['name']}: {m.get('unavailable_reason') or 'unavailable'}")
            table.add_row(m["name"], "n/a", "", str(m.get("threads", "")), "")
            continue
        table.add_row(
            m["name"],
            fmt_rate(m["median"], m["unit"]),
            fmt_percent(m.get("cv")),
            str(m.get("threads", "")),
            str(m.get("repeats", len(m.get("samples", [])))),
        )
    console.print(table)
    for text in unavailable:
        line(f"n/a {text}")


def bench_table(points: Sequence[Mapping[str, Any]]) -> None:
    columns = ("variant", "batch", "threads", "p50", "p90", "items/s", "peak RSS")
    table = _table(f"{len(points)} benchmark point(s)", *columns, figures=columns[1:])
    for p in points:
        table.add_row(
            p["variant"],
            str(p["batch"]),
            str(p["threads"]),
            fmt_ms(p["latency_ms_p50"]),
            fmt_ms(p["latency_ms_p90"]),
            fmt_number(p["throughput_items_s"]),
            fmt_bytes(p.get("peak_rss_bytes") or None),
        )
    console.print(table)


def analysis(data: Mapping[str, Any]) -> None:
    params, flops, activations = data["parameters"], data["flops"], data["activations"]
    key_values(
        "model analysis",
        {
            "dims": json.dumps(data.get("dim_values")),
            "parameters": f"{fmt_count(params['count'])} ({fmt_bytes(params['bytes'])})",
            "FLOPs": fmt_count(flops["total"], "FLOP"),
            "FLOPs (polynomial in dims)": json.dumps(flops["polynomial"]["total"]),
            "activation peak": fmt_bytes(activations["peak_bytes"]),
            "opsets": json.dumps(data.get("opsets")),
        },
    )
    table = _table("FLOPs by operator type", "operator", "FLOPs", "nodes", figures=("FLOPs", "nodes"))
    histogram = data.get("op_histogram") or {}
    for op, count in sorted(flops["by_op"].items(), key=lambda kv: -kv[1]):
        table.add_row(escape(op), fmt_count(count, "FLOP"), str(histogram.get(op, "")))
    console.print(table)


def shard_plan(plan: Mapping[str, Any]) -> None:
    line(f"plan  {plan['plan']}")  # one identifier a line: each fits 80 columns and copies whole
    line(f"model {plan['model']}")
    table = _table(
        f"{len(plan['stages'])} stage(s)",
        "stage",
        "FLOP",
        "params",
        "cid / peer",
        figures=("stage", "FLOP", "params"),
    )
    placement = plan.get("placement") or []
    for stage in plan["stages"]:
        peer = placement[stage["index"]] if stage["index"] < len(placement) else ""
        peers = ", ".join(stage.get("peers", [])) or peer
        table.add_row(
            str(stage["index"]),
            fmt_count(stage["flops"], "FLOP"),
            fmt_bytes(stage["param_bytes"]),
            "\n".join(part for part in (stage["cid"], peers) if part),
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


def variants(data: Mapping[str, Any]) -> None:
    for v in data["variants"]:
        line(f"{v['variant']:5} {v['cid']}  {fmt_bytes(v['size'])}  accuracy {json.dumps(v['accuracy'])}")


@contextlib.contextmanager
def progress(*, enabled: bool) -> Iterator[Progress]:
    """A progress bar on stderr (disabled for --json output)."""
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=make_console(stderr=True),
        disable=not enabled,
        transient=True,
    )
    with bar:
        yield bar


def line(text: str) -> None:
    """Print plain text (no rich markup interpretation, no highlighting)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def error(message: str) -> None:
    make_console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
