"""The ``accel-node`` command line.

Exit codes: 0 success, 1 runtime error (daemon not running, peer unreachable, ...),
2 usage or configuration error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from pydantic import ValidationError

from accel_node import __version__
from accel_node.cli import audit, keys, models, policy, render, serving
from accel_node.cli.common import Settings, json_option
from accel_node.cli.common import client as _client
from accel_node.cli.common import dump as _dump
from accel_node.cli.common import settings as _settings
from accel_node.errors import AccelNodeError, UsageError
from accel_node.home import HOME_ENV, NodeHome, default_home_path

if TYPE_CHECKING:
    pass

EXIT_RUNTIME = 1
EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=HOME_ENV,
    help=f"Node home directory [env {HOME_ENV}; default: the user's XDG data dir].",
)
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Override [log] format.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Override [log] level.",
)
@click.version_option(__version__, prog_name="accel-node")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, log_format: str | None, log_level: str | None) -> None:
    """accel-node: cooperative machine-learning inference over a peer-to-peer network."""
    ctx.obj = Settings(NodeHome(home or default_home_path()), log_format, log_level)


@cli.command()
@json_option
@click.pass_context
def init(ctx: click.Context, as_json: bool) -> None:
    """Create the node home: config.toml, identity key and API token (keeps existing files)."""
    result = _settings(ctx).home.init()
    data = {"home": str(result.home), "peer_id": result.peer_id, "created": result.created}
    if as_json:
        render.emit_json(data)
    elif result.created:
        render.line(f"initialised {result.home} (created {', '.join(result.created)})")
        render.line(f"peer id: {result.peer_id}")
    else:
        render.line(f"{result.home} is already initialised; peer id: {result.peer_id}")


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon in the foreground (initialises the home first if needed)."""
    import trio

    from accel_node.config import load_config
    from accel_node.logs import configure_logging
    from accel_node.node import Node

    settings = _settings(ctx)
    home = settings.home
    if not home.is_initialised():
        result = home.init()
        click.echo(f"initialised {result.home} (peer id {result.peer_id})", err=True)
    config = load_config(home.config_path)
    configure_logging(
        level=settings.log_level or config.log.level,
        fmt=settings.log_format or config.log.format,
        libp2p_level=config.log.libp2p_level,
    )
    trio.run(Node(home, config).run)


@cli.command("id")
@json_option
@click.pass_context
def id_(ctx: click.Context, as_json: bool) -> None:
    """Print this node's peer id and addresses."""
    with _client(ctx) as api:
        status = api.node.status()
    if as_json:
        render.emit_json({"peer_id": status.peer_id, "addrs": status.addrs})
    else:
        render.line(status.peer_id)
        for addr in status.addrs:
            render.line(f"  {addr}")


@cli.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the running daemon's status."""
    with _client(ctx) as api:
        data = _dump(api.node.status())
        data["api"] = api.url
    render.show(data, as_json=as_json, human=render.status)


@cli.group(invoke_without_command=True)
@json_option
@click.pass_context
def peers(ctx: click.Context, as_json: bool) -> None:
    """List connected peers with their addresses and latency."""
    if ctx.invoked_subcommand is not None:
        return
    with _client(ctx) as api:
        data = _dump(api.peers.list())
    render.show(data, as_json=as_json, human=lambda data: render.peers_table(data["peers"]))


@peers.command("find")
@click.option("--min-mem-gb", type=click.FloatRange(min=0), help="Minimum free memory (GB).")
@click.option("--min-gflops", type=click.FloatRange(min=0), help="Minimum measured peak GFLOP/s.")
@click.option("--gpu/--no-gpu", default=None, help="Only peers with (or without) a GPU.")
@json_option
@click.pass_context
def peers_find(
    ctx: click.Context, min_mem_gb: float | None, min_gflops: float | None, gpu: bool | None, as_json: bool
) -> None:
    """Search the network for peers whose verified capability records match."""
    with _client(ctx) as api:
        data = _dump(api.peers.find(min_mem_gb=min_mem_gb, min_gflops=min_gflops, gpu=gpu))
    render.show(data, as_json=as_json, human=lambda data: render.capability_table(data["peers"]))


@peers.command("show")
@click.argument("peer_id")
@json_option
@click.pass_context
def peers_show(ctx: click.Context, peer_id: str, as_json: bool) -> None:
    """Fetch one peer's capability record from the network, verify it and show it."""
    with _client(ctx) as api:
        data = _dump(api.peers.get(peer_id))
    render.show(data, as_json=as_json, human=render.peer_detail)


@peers.command("perf")
@click.argument("peer_id")
@click.option(
    "--bytes", "payload_bytes", type=click.IntRange(64 * 1024, 256 * 1024 * 1024), help="Payload each way."
)
@json_option
@click.pass_context
def peers_perf(ctx: click.Context, peer_id: str, payload_bytes: int | None, as_json: bool) -> None:
    """Measure round-trip time and throughput to a connected peer."""
    with _client(ctx) as api:
        data = _dump(api.peers.perf(peer_id, payload_bytes=payload_bytes))
    render.show(data, as_json=as_json, human=render.perf)


@cli.command()
@click.option("--full", is_flag=True, help="Larger sizes and more repeats (a few minutes).")
@json_option
@click.pass_context
def profile(ctx: click.Context, full: bool, as_json: bool) -> None:
    """Measure this node's hardware now and show the figures (replaces the cached profile)."""
    import time

    with _client(ctx) as api:
        job = api.hardware.start_profile("full" if full else "quick").job
        if job is None:
            raise AccelNodeError("the daemon started no profiling run")
        started_at = job["started_at"]
        with render.progress(enabled=not as_json) as bar:
            task = bar.add_task("profiling", total=None)
            while job is not None and job["running"]:
                bar.update(
                    task,
                    total=job["count"] or None,
                    completed=job["index"],
                    description=job["step"] or "starting",
                )
                time.sleep(0.25)
                job = api.hardware.profile_job().job
            if job is not None:
                bar.update(task, completed=job["count"], description="done")
        if job is None or job["started_at"] != started_at:
            raise AccelNodeError("the profiling run was replaced by another one; see 'accel-node profile'")
        if job["error"]:
            raise AccelNodeError(f"profiling failed: {job['error']}")
        hardware = _dump(api.hardware.get())
    render.show(hardware, as_json=as_json, human=render.hardware)


@cli.command()
@click.argument("addr")
@json_option
@click.pass_context
def connect(ctx: click.Context, addr: str, as_json: bool) -> None:
    """Connect to a peer: ADDR is /ip4/<addr>/tcp/<port>/p2p/<peer-id>."""
    with _client(ctx) as api:
        peer = _dump(api.peers.connect(addr))
    if as_json:
        render.emit_json(peer)
    else:
        latency = peer.get("latency_ms")
        suffix = "" if latency is None else f" ({latency:.2f} ms)"
        render.line(f"connected to {peer['peer_id']}{suffix}")


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@json_option
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Show the running daemon's effective configuration."""
    with _client(ctx) as api:
        data = api.node.config().config
    if as_json:
        render.emit_json(data)
    else:
        for section, values in data.items():
            render.key_values(f"[{section}]", values)


@config.command("check")
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Validate the home's config.toml (with environment overrides) without a daemon."""
    from accel_node.config import load_config

    path = _settings(ctx).home.config_path
    load_config(path)
    render.line(f"{path}: ok")


@config.command("example")
def config_example() -> None:
    """Print the documented example configuration (every key with its default)."""
    from accel_node.config import render_example

    sys.stdout.write(render_example())


cli.add_command(keys.keys)
cli.add_command(keys.trust)
cli.add_command(audit.audit)
cli.add_command(audit.api_token)
cli.add_command(models.models)
cli.add_command(policy.policy)
cli.add_command(serving.infer)
cli.add_command(serving.bench)
cli.add_command(serving.shard)
models.models.add_command(serving.models_analysis)
models.models.add_command(serving.models_variants)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``accel-node`` console script."""
    try:
        code = cli.main(args=argv, prog_name="accel-node", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except UsageError as exc:
        render.error(str(exc))
        sys.exit(EXIT_USAGE)
    except ValidationError as exc:  # a request model refused an argument before anything was sent
        render.error("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        sys.exit(EXIT_USAGE)
    except AccelNodeError as exc:
        render.error(str(exc))
        sys.exit(EXIT_RUNTIME)
    sys.exit(code if isinstance(code, int) else 0)
