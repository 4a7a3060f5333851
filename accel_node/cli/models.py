"""CLI commands about models: publish, fetch (with a progress bar), list, show, remove, pin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from accel_node.cli import render
from accel_node.cli.common import client as _client
from accel_node.cli.common import dump as _dump
from accel_node.cli.common import json_option
from accel_node.cli.common import settings as _settings

FETCH_POLL_S = 0.2
FETCH_TIMEOUT_S = 7 * 86400.0


@click.group()
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
