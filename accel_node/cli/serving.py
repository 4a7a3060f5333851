"""CLI commands about serving: ``infer``, ``bench``, ``models analysis``, ``models variants``.

They talk to the daemon like every other command; ``infer`` sends tensors as ``.npy``/``.npz``
bodies (or JSON) and writes the outputs the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from accel_node.cli import render
from accel_node.cli.common import client, json_option
from accel_node.cli.units import fmt_bytes
from accel_node.errors import UsageError

if TYPE_CHECKING:
    from accel_node.client import Client

LONG_TIMEOUT_S = 3600.0
MEDIA = {".npy": "application/x-npy", ".npz": "application/x-npz", ".json": "application/json"}


def _client(ctx: click.Context, timeout_s: float = LONG_TIMEOUT_S) -> Client:
    return client(ctx, timeout_s=timeout_s)


def _int_list(value: str, option: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise UsageError(f"{option} takes comma-separated integers, got {value!r}") from exc
    if not items:
        raise UsageError(f"{option} needs at least one value")
    return items


def _media(path: Path, option: str) -> str:
    media = MEDIA.get(path.suffix.lower())
    if media is None:
        raise UsageError(f"{option} must end in .npy, .npz or .json, got {path.name!r}")
    return media


@click.command()
@click.argument("cid")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Input tensors: .npy (single-input models), .npz (name -> array) or .json.",
)
@click.option("--output", "output_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write outputs here (.npy, .npz or .json); default: print them as JSON.")  # fmt: skip
@click.option("--variant", default="fp32", show_default=True, help="fp32, int8 or fp16 (built variants).")
@click.option("--threads", type=click.IntRange(0, 256), help="Intra-op threads for this request.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), help="Seconds.")
@click.option(
    "--mode",
    type=click.Choice(["auto", "local", "sharded"]),
    default="auto",
    show_default=True,
    help="auto: locally when the model fits the node's memory budget, else through a shard plan's peers.",
)
@click.option("--plan", help="Shard plan CID (implies --mode sharded; default: the newest plan).")
@click.pass_context
def infer(
    ctx: click.Context,
    cid: str,
    *,
    input_path: Path,
    output_path: Path | None,
    variant: str,
    threads: int | None,
    timeout_s: float | None,
    mode: str,
    plan: str | None,
) -> None:
    """Run model CID on the tensors in --input through the daemon."""
    accept = _media(output_path, "--output") if output_path else "application/json"
    from accel_node.core.schemas import InferOptions

    options = InferOptions.model_validate(
        {"variant": variant, "threads": threads, "timeout_s": timeout_s, "mode": mode, "plan": plan}
    )
    content_type = _media(input_path, "--input")
    with _client(ctx) as api:
        response = api.inference.infer_raw(cid, input_path.read_bytes(), content_type, options, accept=accept)
    if output_path is None:
        sys.stdout.write(response.content.decode("utf-8", errors="replace") + "\n")
        return
    output_path.write_bytes(response.content)
    render.line(f"wrote {output_path} ({fmt_bytes(len(response.content))}, {response.media_type})")


@click.command()
@click.argument("cid")
@click.option("--batches", default="1,2,4,8", show_default=True, help="Comma-separated batch sizes.")
@click.option(
    "--threads", default="0", show_default=True, help="Comma-separated intra-op threads (0: all cores)."
)
@click.option("--variants", default="fp32", show_default=True, help="Comma-separated: fp32, int8, fp16.")
@click.option("--repeats", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--seq-len", default=128, show_default=True, type=click.IntRange(1, 65536),
              help="Value of dynamic non-batch dims (sequence length).")  # fmt: skip
@json_option
@click.pass_context
def bench(
    ctx: click.Context,
    cid: str,
    *,
    batches: str,
    threads: str,
    variants: str,
    repeats: int,
    seq_len: int,
    as_json: bool,
) -> None:
    """Benchmark model CID over batches x threads x variants; every point is stored."""
    from accel_node.core.schemas import BenchRequest

    request = BenchRequest(
        batches=_int_list(batches, "--batches"),
        threads=_int_list(threads, "--threads"),
        variants=[v.strip() for v in variants.split(",") if v.strip()],
        repeats=repeats,
        seq_len=seq_len,
    )
    with render.progress(enabled=not as_json) as bar, _client(ctx) as api:
        bar.add_task("benchmarking", total=None)
        data = api.models.bench(cid, request)
    render.show(data, as_json=as_json, human=lambda d: render.bench_table(d["points"]))


@click.command("analysis")
@click.argument("cid")
@click.option("--dim", "dims", multiple=True, metavar="NAME=N", help="Symbolic dim value, e.g. seq=256.")
@json_option
@click.pass_context
def models_analysis(ctx: click.Context, cid: str, dims: tuple[str, ...], as_json: bool) -> None:
    """Parameters, FLOPs per operator type, activation memory and I/O of model CID."""
    params: dict[str, int] = {}
    for item in dims:
        name, _, value = item.partition("=")
        if not name or not value.isdigit():
            raise UsageError(f"--dim takes NAME=N, got {item!r}")
        params[name] = int(value)
    with _client(ctx, timeout_s=300) as api:
        data = api.models.analysis(cid, params)
    render.show(data, as_json=as_json, human=render.analysis)


@click.command("variants")
@click.argument("cid")
@click.option("--build", type=click.Choice(["int8", "fp16"]), help="Build this variant first.")
@json_option
@click.pass_context
def models_variants(ctx: click.Context, cid: str, build: str | None, as_json: bool) -> None:
    """List (or --build) precision variants of model CID with their accuracy deltas."""
    with _client(ctx) as api:
        if build:
            api.models.build_variant(cid, build)
        data = api.models.variants(cid)
    render.show(data, as_json=as_json, human=render.variants)


@click.group()
def shard() -> None:
    """Sharded inference: plans, stages served here, who serves what."""


@shard.command("plan")
@click.argument("cid")
@click.option("--stages", required=True, type=click.IntRange(1, 64), help="Number of pipeline stages.")
@click.option("--peers", help="Comma-separated peer ids in stage order ('self' = this node).")
@click.option("--assign", is_flag=True, help="Ask each peer to serve its stage now (they must accept).")
@json_option
@click.pass_context
def shard_plan(
    ctx: click.Context, cid: str, *, stages: int, peers: str | None, assign: bool, as_json: bool
) -> None:
    """Partition model CID into stages balanced to the peers' measured throughput; prints the plan."""
    from accel_node.core.schemas import PlanRequest

    chosen = [p.strip() for p in peers.split(",") if p.strip()] if peers else None
    request = PlanRequest(cid=cid, stages=stages, peers=chosen, assign=assign)
    with _client(ctx) as api:
        plan = api.shards.plan(request)
    render.show(plan, as_json=as_json, human=render.shard_plan)


@shard.command("serve")
@click.argument("cid")
@click.option("--stage", required=True, type=click.IntRange(0, 1024), help="Stage index to serve.")
@click.option("--plan", help="Plan CID (fetched from peers if not held here); default: the newest plan.")
@json_option
@click.pass_context
def shard_serve(ctx: click.Context, cid: str, stage: int, plan: str | None, as_json: bool) -> None:
    """Serve one stage of model CID (held here) and announce it."""
    from accel_node.core.schemas import ServeRequest

    with _client(ctx) as api:
        result = api.shards.serve(ServeRequest(cid=cid, stage=stage, plan=plan))
    render.show(
        result,
        as_json=as_json,
        human=lambda r: render.line(f"serving stage {r['stage']} of plan {r['plan']} ({r['stage_cid']})"),
    )


@shard.command("ls")
@click.option("--cid", help="Only plans of this model.")
@json_option
@click.pass_context
def shard_ls(ctx: click.Context, cid: str | None, as_json: bool) -> None:
    """Shard plans known here, their stages and the peers serving each."""
    with _client(ctx) as api:
        data = api.shards.list(cid=cid)
    render.show(data, as_json=as_json, human=render.shards)
