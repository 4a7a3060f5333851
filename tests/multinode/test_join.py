"""Three daemons as separate processes: joined via the CLI, the API and bootstrap config."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.support.daemons import Daemon, wait_until

pytestmark = pytest.mark.multinode


def test_three_daemons_join_and_keep_identities(start_daemon: Callable[..., Daemon]) -> None:
    a = start_daemon("a", wait=False)
    b = start_daemon("b", wait=False)
    a.wait_ready()
    b.wait_ready()
    # c joins a through [p2p] bootstrap (here set through the environment override).
    c = start_daemon("c", ACCEL_NODE_P2P_BOOTSTRAP=json.dumps([a.addr]))
    assert len({a.peer_id, b.peer_id, c.peer_id}) == 3

    # a -> b through the CLI.
    result = a.cli("connect", b.addr, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["peer_id"] == b.peer_id
    # b -> c through the API.
    connected = b.api.peers.connect(c.addr)
    assert connected.peer_id == c.peer_id
    assert connected.latency_ms is not None and connected.latency_ms > 0

    nodes = [a, b, c]
    for node in nodes:
        others = {n.peer_id for n in nodes if n is not node}
        wait_until(
            lambda node=node, others=others: node.peer_ids() == others,
            what=f"{node.home.name} sees 2 peers",
        )

    # The CLI lists the same peers, with a latency measured for each within the ping tick.
    def all_measured() -> bool:
        out = a.cli("peers", "--json")
        peers = json.loads(out.stdout)["peers"]
        return {p["peer_id"] for p in peers} == {b.peer_id, c.peer_id} and all(p["latency_ms"] for p in peers)

    wait_until(all_measured, what="latency measured for a's peers")

    before = {n.home.name: n.peer_id for n in nodes}
    for node in nodes:
        assert node.stop() == 0, node.log()
    for node in nodes:
        node.start()
    for node in nodes:
        node.wait_ready()
    assert {n.home.name: n.peer_id for n in nodes} == before

    # `id` and `status` agree with api.json.
    result = b.cli("id", "--json")
    assert json.loads(result.stdout)["peer_id"] == before["b"]
    status = json.loads(b.cli("status", "--json").stdout)
    assert status["peer_id"] == before["b"] and status["uptime_s"] >= 0 and status["version"]
