"""``accel-node audit tail|verify`` and ``accel-node api-token rotate`` against a running daemon, with
the node's database tampered with directly (as an intruder with file access would)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

import pytest

from tests.support.daemons import Daemon

pytestmark = pytest.mark.multinode


def test_audit_tail_verify_and_token_rotation(start_daemon: Callable[..., Daemon]) -> None:
    node = start_daemon("node")
    old_token = node.token()
    for name in ("a", "b", "c"):
        assert node.cli("trust", "add", "ed25519:" + name.upper() * 43, "--name", name).returncode == 0
    rotated = node.cli("api-token", "rotate")
    assert rotated.returncode == 0 and "admin API token rotated" in rotated.stdout, rotated.stderr
    assert (node.home / "api.token").read_text().strip() != old_token
    assert node.cli("status").returncode == 0  # the CLI reads the new token from the file
    assert node.cli("api-token", "rotate", "--read").returncode == 0

    tail = node.cli("audit", "tail", "-n", "10", "--json")
    assert tail.returncode == 0, tail.stderr
    records = json.loads(tail.stdout)["records"]
    assert [r["kind"] for r in records] == ["trust-change"] * 3 + ["api-token-rotated"] * 2
    human = node.cli("audit", "tail", "-n", "2")
    assert human.returncode == 0 and "api-token-rotated" in human.stdout
    verified = node.cli("audit", "verify")
    assert verified.returncode == 0 and "audit log ok: 5 records" in verified.stdout, verified.stdout

    conn = sqlite3.connect(node.home / "node.db")
    with conn:
        conn.execute("UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 2")
    conn.close()
    broken = node.cli("audit", "verify")
    assert broken.returncode == 1
    assert "audit log broken at record 2" in broken.stderr and "altered" in broken.stderr, broken.stderr

    node.stop()  # with no daemon, the CLI verifies the database file itself
    offline = node.cli("audit", "verify")
    assert offline.returncode == 1 and "audit log broken at record 2" in offline.stderr, offline.stderr
    assert "verifying the store file directly" in offline.stderr
