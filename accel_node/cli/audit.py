"""CLI commands about the audit log (``audit tail``, ``audit verify``) and the control API's tokens
(``api-token rotate``)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import click

from accel_node.cli import render
from accel_node.cli.common import client as _client
from accel_node.cli.common import dump as _dump
from accel_node.cli.common import json_option
from accel_node.cli.common import settings as _settings
from accel_node.errors import AccelNodeError, DaemonNotRunningError, HomeError
from accel_node.home import NodeHome


class AuditBrokenError(AccelNodeError):
    """``audit verify`` found a record that does not fit the chain (exit code 1)."""

    code = "audit_chain_broken"


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _records(data: Mapping[str, Any]) -> None:
    records = data["records"]
    if not records:
        render.line("no audit records")
    for r in records:
        details = " ".join(f"{k}={v}" for k, v in r["details"].items())
        peer = f" peer={r['peer']}" if r["peer"] else ""
        head = f"{r['seq']:>8}  {_when(r['at'])}  {r['kind']:<16} {r['protocol']}{peer}"
        render.line(f"{head}  {r['reason']}  {details}")
    if data["dropped"]:
        render.line(f"({data['dropped']} events dropped since the daemon started: queue full)")


@click.group()
def audit() -> None:
    """The node's hash-chained audit log of security-relevant events."""


@audit.command("tail")
@click.option(
    "-n", "limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="Records to show."
)
@click.option("--after", type=click.IntRange(min=0), help="Only records after this seq (oldest first).")
@click.option("--kind", help="Only records of this kind (refused, policy-denied, penalised, ...).")
@json_option
@click.pass_context
def audit_tail(ctx: click.Context, limit: int, after: int | None, kind: str | None, as_json: bool) -> None:
    """Show the newest audit records, oldest first."""
    with _client(ctx) as api:
        data = _dump(api.audit.tail(limit=limit, after=after, kind=kind))
    render.show(data, as_json=as_json, human=_records)


def _verify_offline(home: NodeHome) -> dict[str, Any]:
    """Verify the store file of ``home`` directly (no daemon runs on it)."""
    import trio

    from accel_node.audit import AuditLog
    from accel_node.config import load_config
    from accel_node.local.audit import LocalAudit
    from accel_node.store import AsyncStore

    config = load_config(home.config_path)
    path = home.resolve(config.store.path)
    if not path.exists():
        raise HomeError(f"no store at {path}: nothing to verify")

    async def verify() -> dict[str, Any]:
        store = await AsyncStore.open(path)
        try:
            return _dump(await LocalAudit(AuditLog(store, key_pair=home.identity())).verify())
        finally:
            await store.close()

    return trio.run(verify)


@audit.command("verify")
@json_option
@click.pass_context
def audit_verify(ctx: click.Context, as_json: bool) -> None:
    """Check the hash chain and the signed checkpoints; exit 1 naming the first bad record.

    With no daemon running on the home, the store file is checked directly."""
    try:
        with _client(ctx, timeout_s=600.0) as api:
            data = _dump(api.audit.verify())
    except DaemonNotRunningError:
        click.echo("no daemon is running: verifying the store file directly", err=True)
        data = _verify_offline(_settings(ctx).home)
    if as_json:
        render.emit_json(data)
    if not data["ok"]:
        raise AuditBrokenError(f"audit log broken at record {data['bad_seq']}: {data['problem']}")
    if not as_json:
        pruned = f", records up to {data['anchor_seq']} pruned" if data["anchor_seq"] else ""
        render.line(
            f"audit log ok: {data['records']} records up to {data['head_seq']}, "
            f"{data['checkpoints']} signed checkpoints{pruned}"
        )


@click.group("api-token")
def api_token() -> None:
    """The control API's bearer tokens (api.token: admin, api.read.token: read-only)."""


@api_token.command("rotate")
@click.option(
    "--read", "read_only", is_flag=True, help="Rotate the read-only token instead of the admin one."
)
@json_option
@click.pass_context
def api_token_rotate(ctx: click.Context, read_only: bool, as_json: bool) -> None:
    """Replace an API token: the daemon writes a new token file and refuses the old token at once."""
    with _client(ctx) as api:
        data = _dump(api.node.rotate_token("read" if read_only else "admin"))
    render.show(
        data, as_json=as_json, human=lambda d: render.line(f"{d['scope']} API token rotated ({d['path']})")
    )
