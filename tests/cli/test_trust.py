"""Publisher keys and the trust store through the CLI of a running daemon."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from accel_node.models.keys import KeyFiles, format_public_key
from tests.support.daemons import Daemon

pytestmark = pytest.mark.multinode


def test_keys_and_trust(start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    node = start_daemon("node")
    created = node.cli("keys", "new", "alice")
    assert created.returncode == 0, created.stderr
    public_key = created.stdout.strip()
    assert public_key.startswith("ed25519:")
    assert (node.home / "keys" / "alice.key").stat().st_mode & 0o777 == 0o600
    assert "alice.key" not in node.log() and public_key.split(":")[1] not in node.log()

    other = format_public_key(KeyFiles(tmp_path / "elsewhere").create("bob").public_key)
    added = node.cli("trust", "add", other, "--name", "bob", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["own"] is False

    listed = json.loads(node.cli("trust", "ls", "--json").stdout)["keys"]
    assert [(k["name"], k["own"]) for k in listed] == [("alice", True), ("bob", False)]
    assert listed[0]["public_key"] == public_key
    own = json.loads(node.cli("keys", "ls", "--json").stdout)["keys"]
    assert [k["name"] for k in own] == ["alice"]

    # Refusals, each with a clear message and exit code 1.
    for args, message in (
        (("keys", "new", "alice"), "already"),
        (("trust", "add", other, "--name", "carol"), "already trusted as 'bob'"),
        (("trust", "add", "ed25519:AAAA", "--name", "dave"), "32 bytes"),
        (("trust", "add", "not-a-key", "--name", "dave"), "ed25519:"),
        (("trust", "rm", "alice"), "own key"),
        (("trust", "rm", "nobody"), "no trusted key"),
        (("keys", "new", "../x"), "invalid key name"),
    ):
        result = node.cli(*args)
        assert result.returncode == 1, (args, result.stdout)
        assert message in result.stderr, (args, result.stderr)

    removed = node.cli("trust", "rm", "bob")
    assert removed.returncode == 0, removed.stderr
    assert [k["name"] for k in json.loads(node.cli("trust", "ls", "--json").stdout)["keys"]] == ["alice"]
