"""The ``accel-node`` command line.

Exit codes: 0 success, 1 runtime error (daemon not running, peer unreachable, ...),
2 usage or configuration error.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import BaseModel, ValidationError

from accel_node import __version__
from accel_node.cli import render, serving
from accel_node.errors import AccelNodeError, UsageError
from accel_node.home import HOME_ENV, NodeHome, default_home_path

if TYPE_CHECKING:
    from accel_node.client import Client

EXIT_RUNTIME = 1
EXIT_USAGE = 2
FETCH_POLL_S = 0.2
FETCH_TIMEOUT_S = 7 * 86400.0

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@dataclass(frozen=True)
class Settings:
    home: NodeHome
    log_format: str | None
    log_level: str | None


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


def _client(ctx: click.Context) -> Client:
    from accel_node.client import Client

    return Client.for_home(_settings(ctx).home)


def _dump(model: BaseModel) -> dict[str, Any]:
    """A response model as the JSON the daemon sent (for --json and the renderers)."""
    return model.model_dump(mode="json")


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
def keys() -> None:
    """Publisher keys held by this node (for signing models)."""


@keys.command("new")
@click.argument("name")
@json_option
@click.pass_context
def keys_new(ctx: click.Context, name: str, as_json: bool) -> None:
    """Create a publisher key NAME and print its public key (share it with nodes that should trust you)."""
    with _client(ctx) as api:
        key = _dump(api.keys.new_key(name))
    render.show(key, as_json=as_json, human=lambda key: render.line(key["public_key"]))


@keys.command("ls")
@json_option
@click.pass_context
def keys_ls(ctx: click.Context, as_json: bool) -> None:
    """List this node's publisher keys."""
    with _client(ctx) as api:
        data = _dump(api.keys.own_keys())
    render.show(
        data, as_json=as_json, human=lambda data: render.keys_table(data["keys"], title="own publisher keys")
    )


@cli.group()
def trust() -> None:
    """Publisher keys whose signed models this node accepts."""


@trust.command("add")
@click.argument("public_key")
@click.option("--name", required=True, help="A name for this publisher.")
@json_option
@click.pass_context
def trust_add(ctx: click.Context, public_key: str, name: str, as_json: bool) -> None:
    """Trust PUBLIC_KEY (ed25519:...) under NAME."""
    with _client(ctx) as api:
        key = _dump(api.keys.trust(public_key, name))
    render.show(
        key, as_json=as_json, human=lambda key: render.line(f"trusting {key['name']} ({key['key_id']})")
    )


@trust.command("ls")
@json_option
@click.pass_context
def trust_ls(ctx: click.Context, as_json: bool) -> None:
    """List trusted publisher keys."""
    with _client(ctx) as api:
        data = _dump(api.keys.trusted())
    render.show(
        data, as_json=as_json, human=lambda data: render.keys_table(data["keys"], title="trusted publishers")
    )


@trust.command("rm")
@click.argument("name")
@json_option
@click.pass_context
def trust_rm(ctx: click.Context, name: str, as_json: bool) -> None:
    """Stop trusting the publisher NAME (or key id)."""
    with _client(ctx) as api:
        key = _dump(api.keys.untrust(name))
    render.show(
        key,
        as_json=as_json,
        human=lambda key: render.line(f"no longer trusting {key['name']} ({key['key_id']})"),
    )


@cli.group()
def models() -> None:
    """Signed, content-addressed models."""


@models.command("publish")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--key", "key_name", required=True, help="Publisher key to sign with ('accel-node keys new').")
@click.option("--name", help="Model name (default: the directory's name).")
@click.option("--version", "model_version", type=click.IntRange(min=0), help="Version (default: next).")
@json_option
@click.pass_context
def models_publish(
    ctx: click.Context,
    *,
    directory: Path,
    key_name: str,
    name: str | None,
    model_version: int | None,
    as_json: bool,
) -> None:
    """Add DIRECTORY (one .onnx model plus any files it needs), sign it and print the model's CID."""
    from accel_node.core.schemas import PublishRequest

    request = PublishRequest(dir=str(directory.resolve()), key=key_name, name=name, version=model_version)
    with _client(ctx) as api:
        model = _dump(api.models.publish(request))
    render.show(model, as_json=as_json, human=lambda m: render.line(m["cid"]))


@models.command("fetch")
@click.argument("cid")
@json_option
@click.pass_context
def models_fetch(ctx: click.Context, cid: str, as_json: bool) -> None:
    """Fetch a model by CID from peers, verify it and install it (resumable).

    The fetch itself is one API call, made on a worker thread while this thread polls
    GET /v1/models/fetches/CID every 0.2 s and draws a progress bar (bytes, total, speed).
    """
    import threading
    import time

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from accel_node.client import Client
    from accel_node.errors import ApiError

    home = _settings(ctx).home
    outcome: dict[str, Any] = {}

    def fetch() -> None:
        try:  # a long read timeout: the answer comes when the whole model is installed
            with Client.for_home(home, timeout_s=FETCH_TIMEOUT_S) as api:
                outcome["model"] = _dump(api.models.fetch(cid, timeout_s=FETCH_TIMEOUT_S))
        except Exception as exc:  # handed to the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=fetch, name="models-fetch", daemon=True)
    bar = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        DownloadColumn(),  # decimal units, like TransferSpeedColumn
        TransferSpeedColumn(),
        console=Console(stderr=True),
        disable=as_json,
        transient=True,
    )
    with _client(ctx) as api, bar:
        task = bar.add_task("providers", total=None)
        begun = time.time() - 1.0  # older than this: a previous fetch of the same model
        worker.start()
        while worker.is_alive():
            worker.join(FETCH_POLL_S)
            if as_json or not worker.is_alive():
                continue
            try:
                progress = api.models.fetch_progress(cid)
            except ApiError:
                continue  # not begun yet (404), or a bad CID that the fetch itself reports
            if progress.started_at < begun:
                continue
            bar.update(
                task,
                description=progress.phase,
                completed=progress.bytes_done,
                total=progress.bytes_total,
            )
    if "error" in outcome:
        raise outcome["error"]
    render.show(outcome["model"], as_json=as_json, human=render.model_detail)


@models.command("ls")
@json_option
@click.pass_context
def models_ls(ctx: click.Context, as_json: bool) -> None:
    """List the models this node holds."""
    with _client(ctx) as api:
        data = _dump(api.models.list())
    render.show(data, as_json=as_json, human=lambda d: render.models_table(d["models"]))


@models.command("show")
@click.argument("cid")
@json_option
@click.pass_context
def models_show(ctx: click.Context, cid: str, as_json: bool) -> None:
    """Show one model and its manifest."""
    with _client(ctx) as api:
        model = _dump(api.models.show(cid))
    render.show(model, as_json=as_json, human=render.model_detail)


@models.command("rm")
@click.argument("cid")
@json_option
@click.pass_context
def models_rm(ctx: click.Context, cid: str, as_json: bool) -> None:
    """Remove a model (files, pins, unreferenced blocks)."""
    with _client(ctx) as api:
        model = _dump(api.models.remove(cid))
    render.show(model, as_json=as_json, human=lambda m: render.line(f"removed {m['name']} v{m['version']}"))


@models.command("pin")
@click.argument("cid")
@json_option
@click.pass_context
def models_pin(ctx: click.Context, cid: str, as_json: bool) -> None:
    """Pin a model so that garbage collection keeps it."""
    with _client(ctx) as api:
        model = _dump(api.models.pin(cid))
    render.show(model, as_json=as_json, human=lambda m: render.line(f"pinned {m['cid']}"))


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


cli.add_command(serving.infer)
cli.add_command(serving.bench)
cli.add_command(serving.shard)
models.add_command(serving.models_analysis)
models.add_command(serving.models_variants)


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
