"""CLI commands about publisher keys (``keys``) and the trust store (``trust``)."""

from __future__ import annotations

import click

from accel_node.cli import render
from accel_node.cli.common import client as _client
from accel_node.cli.common import dump as _dump
from accel_node.cli.common import json_option


@click.group()
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


@click.group()
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
