"""API token scopes and rotation, over HTTP to a node running in this test's trio loop: the read-only
token may read but changes nothing (403 ``forbidden``), a rotated token is refused at once, and
refusals, rotations and key/trust changes are in the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from accel_node.client import AsyncClient
from accel_node.core import endpoints as E
from accel_node.core.endpoints import Endpoint
from accel_node.home import READ, NodeHome
from accel_node.node import Node
from tests.support.inprocess import in_process_node

UNKNOWN_PEER = "12D3KooWGRUVh9QXFz4nqkMJbyHqnYFHkmSz1Bs5rUoWHk9fGMLh"


@asynccontextmanager
async def running_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[NodeHome, str, Node]]:
    """A node in this trio loop; its home, API url and the node."""
    async with in_process_node(tmp_path / "node", monkeypatch) as (home, node):
        info = home.read_api_info()
        assert info is not None
        yield home, str(info["url"]), node


def test_every_endpoint_declares_a_scope_and_only_safe_ones_are_read() -> None:
    assert {e.scope for e in E.ALL} <= {"open", "read", "admin"}
    assert all(e.method in ("GET", "HEAD") for e in E.ALL if e.scope in ("open", "read"))
    assert E.HEALTH.scope == "open" and E.AUDIT.scope == "read" and E.API_TOKEN_ROTATE.scope == "admin"


async def test_read_token_reads_but_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_node(tmp_path, monkeypatch) as (home, url, _):
        assert oct(home.read_token_path.stat().st_mode & 0o777) == "0o600"
        assert home.token(READ) != home.token()
        async with AsyncClient(url, home.token(READ)) as reader:
            assert (await reader.node.status()).peer_id
            assert (await reader.keys.trusted()).keys == []
            assert (await reader.audit.verify()).ok
            send = reader.transport.send
            refused = [
                await send(E.KEYS_NEW, body={"name": "k"}, checked=False),
                await send(E.TRUST_REMOVE, path={"name": "x"}, checked=False),
                await send(E.API_TOKEN_ROTATE, body={"scope": "read"}, checked=False),
                await send(Endpoint("PUT", E.STATUS.path), body={}, checked=False),
                await send(E.MODEL_REMOVE, path={"cid": "x"}, checked=False),
            ]
            for response in refused:
                assert response.status_code == 403, response.text
                body = response.json()
                assert body["error"]["code"] == "forbidden" and body["detail"] == body["error"]["message"]
        async with AsyncClient(url, home.token()) as admin:
            assert (await admin.keys.own_keys()).keys == []  # nothing was created by the reader
            records = (await admin.audit.tail(kind="refused")).records
        assert len(records) == 5 and {r.details["status"] for r in records} == {403}
        assert {r.details["method"] for r in records} == {"POST", "DELETE", "PUT"}


async def test_rotated_tokens_are_refused_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_node(tmp_path, monkeypatch) as (home, url, _):
        old_admin, old_read = home.token(), home.token(READ)
        async with AsyncClient(url, old_admin) as admin:
            rotated = await admin.node.rotate_token()
            assert rotated.scope == "admin" and rotated.path == str(home.token_path)
            assert old_admin not in rotated.model_dump_json()
            assert (await admin.transport.send(E.STATUS, checked=False)).status_code == 401
        assert home.token() != old_admin
        async with AsyncClient(url, home.token()) as admin:  # what the CLI does: read the file again
            assert (await admin.node.rotate_token("read")).scope == "read"
            await admin.keys.new_key("mine")
            await admin.keys.trust("ed25519:" + "A" * 43, "friend")
            await admin.keys.untrust("friend")
            async with AsyncClient(url, old_read) as reader:
                assert (await reader.transport.send(E.STATUS, checked=False)).status_code == 401
            async with AsyncClient(url, home.token(READ)) as reader:
                assert (await reader.node.status()).peer_id
            tail = (await admin.audit.tail()).records
            verified = await admin.audit.verify()
        kinds = [r.kind for r in tail]
        rotations = [r.details["scope"] for r in tail if r.kind == "api-token-rotated"]
        assert rotations == ["admin", "read"]
        assert kinds == [
            "api-token-rotated",
            "refused",  # the old admin token
            "api-token-rotated",
            "key-change",
            "trust-change",
            "trust-change",
            "refused",  # the old read token
        ]
        assert [r.reason for r in tail if r.kind == "refused"] == ["unauthorized", "unauthorized"]
        assert verified.ok and verified.records == len(tail)


async def test_penalties_and_protocol_events_reach_the_nodes_audit_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from libp2p.peer.id import ID

    from p2p.events import BAD_CONTENT, SecurityEvent

    async with running_node(tmp_path, monkeypatch) as (home, url, node):
        assert node.core is not None
        services = node.core.services
        peer = ID.from_base58(UNKNOWN_PEER)
        services.network.penalties.penalise(peer, "bad-block")
        services.audit.sink(SecurityEvent(BAD_CONTENT, "/ipfs/bitswap/1.2.0", UNKNOWN_PEER, "cid mismatch"))
        async with AsyncClient(url, home.token(READ)) as reader:
            records = (await reader.audit.tail()).records
    penalised = next(r for r in records if r.kind == "penalised")
    assert penalised.peer == UNKNOWN_PEER and penalised.reason == "bad-block"
    assert penalised.details == {"count": 1, "excluded": False}
    assert records[-1].kind == BAD_CONTENT and records[-1].protocol == "/ipfs/bitswap/1.2.0"
