"""The owner's policy through the CLI of a running daemon: show, allow, deny, forget, tokens, members."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from accel_node.policy.signed import format_key
from accel_node.policy.tokens import parse
from p2p.identity import generate_identity, peer_id_of
from tests.support.daemons import Daemon

pytestmark = pytest.mark.multinode
SAFE = {"ACCEL_NODE_POLICY_OPEN_ACTIONS": '["content", "capabilities"]'}  # the documented default


def test_policy_round_trip(start_daemon: Callable[..., Daemon]) -> None:
    node = start_daemon("node", **SAFE)
    alice = str(peer_id_of(generate_identity()))
    shown = json.loads(node.cli("policy", "show", "--json").stdout)
    assert shown["mode"] == "open" and shown["open_actions"] == ["content", "capabilities"]
    assert shown["peer_id"] == node.peer_id and shown["rules"] == []

    allowed = node.cli("policy", "allow", alice, "--action", "compute", "--action", "assign", "--json")
    assert allowed.returncode == 0, allowed.stderr
    denied = node.cli("policy", "deny", "role:any", "--action", "content", "--json")
    rules = {(r["subject"], r["action"], r["effect"]) for r in json.loads(denied.stdout)["rules"]}
    assert rules == {(alice, "compute", "allow"), (alice, "assign", "allow"), ("role:any", "content", "deny")}
    forgot = json.loads(node.cli("policy", "forget", alice, "--action", "assign", "--json").stdout)
    assert len(forgot["rules"]) == 2

    issued = node.cli("policy", "token", "issue", alice, "--action", "compute", "--ttl", "2h")
    assert issued.returncode == 0, issued.stderr
    token = parse(issued.stdout.strip())
    assert token.subject == alice and token.actions == {"compute"}
    assert token.expires_at - token.issued_at == 7200
    assert format_key(token.issuer) == shown["issuer_key"]  # signed by the node's identity key
    revoked = node.cli("policy", "token", "revoke", issued.stdout.strip())
    assert revoked.returncode == 0 and token.id in revoked.stdout
    assert json.loads(node.cli("policy", "show", "--json").stdout)["revoked"] == [token.id]

    # Refusals: a bad subject, a bad duration, a membership list with no owner key configured.
    for args, message in (
        (("policy", "allow", "bad id!", "--action", "compute"), "subject"),
        (("policy", "token", "issue", "nope", "--action", "compute"), "not a peer id"),
        (("policy", "token", "issue", alice, "--action", "compute", "--ttl", "soon"), "duration"),
        (("policy", "members", "set", "accelmembers1:AAAA"), "owner_key"),
    ):
        result = node.cli(*args)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)

    kept = node.cli("policy", "token", "add", issued.stdout.strip())
    assert kept.returncode == 0 and (node.home / "grants.txt").stat().st_mode & 0o777 == 0o600
