"""CLI commands about the owner's policy: ``accel-node policy show|allow|deny|forget``, capability
tokens (``policy token issue|revoke|add``) and the membership list (``policy members sign|set``).

``show``, ``allow``, ``deny``, ``forget``, ``token revoke`` and ``members set`` talk to the running
daemon (``GET``/``PUT /v1/policy``). ``token issue`` signs with the node home's identity key and
``members sign`` with a publisher key of the home (``HOME/keys/<name>.key``): both work offline and
print what they signed. ``token add`` appends a token this node was given to its tokens file (the
daemon presents the tokens of that file to every peer it connects to).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from accel_node.cli import render
from accel_node.cli.common import client as _client
from accel_node.cli.common import dump as _dump
from accel_node.cli.common import json_option
from accel_node.cli.common import settings as _settings
from accel_node.errors import UsageError

ACTIONS = ("compute", "assign", "content", "learn", "capabilities")
DURATION = re.compile(r"^(\d+)([smhd]?)$")
UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str) -> int:
    match = DURATION.fullmatch(text.strip())
    if not match:
        raise UsageError(f"a duration looks like 3600, 90m, 12h or 30d, not {text!r}")
    return int(match.group(1)) * UNIT_S[match.group(2)]


ACTION_HELP = "An action (repeatable): compute, assign, content, learn, capabilities."
action_option = click.option(
    "--action", "actions", multiple=True, required=True, type=click.Choice(ACTIONS), help=ACTION_HELP
)
any_action_option = click.option(
    "--action", "actions", multiple=True, required=False, type=click.Choice(ACTIONS), help=ACTION_HELP
)


def _render(data: dict[str, Any]) -> None:
    render.line(f"mode: {data['mode']}   this node: {data['peer_id']}")
    render.line(f"issuer key: {data['issuer_key']}")
    render.line(f"open to every peer: {', '.join(data['open_actions']) or '(nothing)'}")
    render.line(f"members may: {', '.join(data['member_actions']) or '(nothing)'}")
    members = data["membership"]
    if members is None:
        render.line("membership list: none" + ("" if data["owner_key"] else " (no owner key configured)"))
    else:
        render.line(
            f"membership list: version {members['version']}, {len(members['members'])} member(s), "
            f"expires at {members['expires_at']}"
        )
    for rule in data["rules"]:
        render.line(f"{rule['effect']:5} {rule['action']:12} {rule['subject']}")
    if not data["rules"]:
        render.line("no rules")
    render.line(
        f"revoked tokens: {len(data['revoked'])}   tokens presented by peers: {data['tokens_presented']}   "
        f"tokens held: {data['tokens_held']}"
    )


@click.group()
def policy() -> None:
    """Who may use this node for what: rules, capability tokens, membership."""


@policy.command("show")
@json_option
@click.pass_context
def policy_show(ctx: click.Context, as_json: bool) -> None:
    """Show the policy in effect."""
    with _client(ctx) as api:
        data = _dump(api.policy.get())
    render.show(data, as_json=as_json, human=_render)


def _set_rules(
    ctx: click.Context, subject: str, actions: tuple[str, ...], effect: str | None
) -> dict[str, Any]:
    from accel_node.core.schemas import PolicyPut, PolicyRule

    with _client(ctx) as api:
        current = api.policy.get()
        rules = [
            r for r in current.rules if not (r.subject == subject and (not actions or r.action in actions))
        ]
        if effect is not None:
            rules += [PolicyRule(subject=subject, action=a, effect=effect) for a in actions]  # type: ignore[arg-type]
        return _dump(api.policy.put(PolicyPut(rules=rules)))


@policy.command("allow")
@click.argument("subject")
@action_option
@json_option
@click.pass_context
def policy_allow(ctx: click.Context, subject: str, actions: tuple[str, ...], as_json: bool) -> None:
    """Allow SUBJECT (a peer id, or role:member / role:any) the given actions."""
    render.show(_set_rules(ctx, subject, actions, "allow"), as_json=as_json, human=_render)


@policy.command("deny")
@click.argument("subject")
@action_option
@json_option
@click.pass_context
def policy_deny(ctx: click.Context, subject: str, actions: tuple[str, ...], as_json: bool) -> None:
    """Deny SUBJECT (a peer id, or role:member / role:any) the given actions."""
    render.show(_set_rules(ctx, subject, actions, "deny"), as_json=as_json, human=_render)


@policy.command("forget")
@click.argument("subject")
@any_action_option
@json_option
@click.pass_context
def policy_forget(ctx: click.Context, subject: str, actions: tuple[str, ...], as_json: bool) -> None:
    """Remove the rules for SUBJECT (for the given actions; all of them without --action)."""
    render.show(_set_rules(ctx, subject, actions, None), as_json=as_json, human=_render)


@policy.group("token")
def token() -> None:
    """Capability tokens: leave for one peer to perform some actions until a time."""


@token.command("issue")
@click.argument("subject")
@action_option
@click.option("--ttl", default="1d", show_default=True, help="Lifetime: seconds, or 90m, 12h, 30d.")
@json_option
@click.pass_context
def token_issue(ctx: click.Context, subject: str, actions: tuple[str, ...], ttl: str, as_json: bool) -> None:
    """Issue a token for the peer SUBJECT, signed with this node's identity key, and print it."""
    import time

    from accel_node.policy.rules import is_peer_id
    from accel_node.policy.signed import identity_signer
    from accel_node.policy.tokens import issue

    if not is_peer_id(subject):
        raise UsageError(f"{subject[:80]!r} is not a peer id")

    issuer, signer = identity_signer(_settings(ctx).home.identity())
    issued = issue(signer, issuer, subject=subject, actions=actions, ttl_s=_seconds(ttl), now=time.time())
    data = {"token": issued.text(), "id": issued.id, "subject": subject, "actions": sorted(issued.actions),
            "expires_at": issued.expires_at}  # fmt: skip
    render.show(data, as_json=as_json, human=lambda d: render.line(d["token"]))


def _token_id(text: str) -> str:
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{32}", text):
        return text.lower()
    from accel_node.policy.tokens import parse

    return parse(text).id


@token.command("revoke")
@click.argument("token_or_id")
@json_option
@click.pass_context
def token_revoke(ctx: click.Context, token_or_id: str, as_json: bool) -> None:
    """Revoke a token (its text, or its id: the 32 hex digits of its nonce)."""
    from accel_node.core.schemas import PolicyPut

    token_id = _token_id(token_or_id)
    with _client(ctx) as api:
        data = _dump(api.policy.put(PolicyPut(revoke=[token_id])))
    render.show(data, as_json=as_json, human=lambda _: render.line(f"revoked {token_id}"))


@token.command("add")
@click.argument("text")
@click.pass_context
def token_add(ctx: click.Context, text: str) -> None:
    """Keep a token this node was given (appended to the tokens file; presented to peers on connect)."""
    from accel_node.config import load_config
    from accel_node.policy.tokens import parse

    home = _settings(ctx).home
    held = parse(text)
    path = home.resolve(load_config(home.config_path).policy.grants_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(held.text() + "\n")
    path.chmod(0o600)
    render.line(f"kept token {held.id} for {', '.join(sorted(held.actions))} in {path}")


@policy.group("members")
def members() -> None:
    """The membership list of a private network (signed by the network owner's key)."""


@members.command("sign")
@click.argument("peers", nargs=-1, required=True)
@click.option("--key", "key_name", required=True, help="The publisher key (HOME/keys) of the owner.")
@click.option("--version", "version", type=int, required=True, help="Higher than the last list's.")
@click.option("--ttl", default="30d", show_default=True, help="Lifetime: seconds, or 90m, 12h, 30d.")
@click.option("--network", default="", help="A name for the network (informative).")
@click.pass_context
def members_sign(  # noqa: PLR0917 (click passes options positionally)
    ctx: click.Context, peers: tuple[str, ...], key_name: str, version: int, ttl: str, network: str
) -> None:
    """Sign a membership list naming PEERS with the owner key and print it."""
    import time

    from accel_node.models.keys import KeyFiles
    from accel_node.policy.membership import sign_membership

    key = KeyFiles(_settings(ctx).home.root / "keys").load(key_name)
    signed = sign_membership(key.sign, key.public_key, peers, version=version, ttl_s=_seconds(ttl),
                             now=time.time(), network=network)  # fmt: skip
    render.line(signed.text())


@members.command("set")
@click.argument("source")
@json_option
@click.pass_context
def members_set(ctx: click.Context, source: str, as_json: bool) -> None:
    """Install a signed membership list (its text, or a file holding it; '' removes the list)."""
    from accel_node.core.schemas import PolicyPut

    text = source
    if source and not source.startswith("accelmembers1:"):
        text = Path(source).read_text(encoding="utf-8").strip()
    with _client(ctx) as api:
        data = _dump(api.policy.put(PolicyPut(membership=text)))
    render.show(data, as_json=as_json, human=_render)
