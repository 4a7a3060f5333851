"""Capability records and presence across daemons (separate processes) connected in a line."""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import Callable

import pytest

from accel_node.errors import ApiError
from tests.support.daemons import Daemon, wait_until

pytestmark = pytest.mark.multinode

FAST = {
    # Records valid for 10 s: shorter lifetimes made a loaded 2-core machine (five daemons) publish
    # records that had expired by the time a lookup through the line reached them.
    "ACCEL_NODE_P2P_CAP_REFRESH_S": "5",
    "ACCEL_NODE_P2P_PRESENCE_INTERVAL_S": "1",  # heartbeats valid for 3 s
}


def test_line_of_five_finds_records_through_the_dht_and_forgets_dead_nodes(
    start_daemon: Callable[..., Daemon],
) -> None:
    names = "abcde"
    nodes = [start_daemon(n, wait=False, ACCEL_NODE_NODE_NAME=f"node-{n}", **FAST) for n in names]
    for node in nodes:
        node.wait_ready()
    for left, right in itertools.pairwise(nodes):  # a-b-c-d-e
        left.api.peers.connect(right.addr)
    a, e = nodes[0], nodes[-1]

    # a was only told about b, yet finds e's signed capability record through the DHT. (Kademlia
    # walks, a's own publications included, connect to the peers they visit, so a may be connected
    # to c, d or e by then; that the lookup crosses hops is shown in tests/p2p/test_dht.py.)

    fetched: list[dict[str, object]] = []

    def e_record() -> bool:
        try:
            peer = a.api.peers.get(e.peer_id)
        except ApiError:  # not found yet
            return False
        if peer.capability:
            fetched.append(peer.model_dump())
        return bool(fetched)

    wait_until(e_record, timeout=60, what="a fetches e's capability record")
    peer = fetched[-1]
    capability = peer["capability"]
    assert isinstance(capability, dict) and capability["name"] == "node-e"
    assert capability["hw"]["mem_total_gb"] > 0 and capability["hw"]["cores"] >= 1
    assert e.addr in capability["addrs"]
    assert time.time() - float(peer["capability_verified_at"]) < 10  # type: ignore[arg-type]

    # Heartbeats gossip along the line: a's peer table knows every other node, and a network
    # search (CLI) returns all four with verified records.
    others = {n.peer_id for n in nodes[1:]}
    wait_until(lambda: others <= a.peer_ids(), timeout=30, what="a's peer table lists b..e")

    def found(*args: str) -> set[str]:
        result = a.cli("peers", "find", "--json", *args)
        assert result.returncode == 0, result.stderr
        return {p["peer_id"] for p in json.loads(result.stdout)["peers"]}

    wait_until(lambda: found("--min-mem-gb", "0.01") == others, timeout=30, what="find lists b..e")
    # Nobody has profiled, so no peer can promise a measured GFLOP/s figure; nor has one a GPU here.
    assert found("--min-gflops", "1") == set()
    assert found("--gpu") == set()
    assert found("--min-mem-gb", "100000") == set()

    # A killed node's records expire and it disappears from the others' tables.
    e.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: e.peer_id not in a.peer_ids(), timeout=45, what="e disappears from a's table")
    assert time.monotonic() - killed_at >= 1.0  # gone because its records expired, not at once
    assert e.peer_id not in found("--min-mem-gb", "0.01")
    assert nodes[3].peer_id in a.peer_ids()  # the living stay


def test_mdns_finds_and_connects_lan_peers(start_daemon: Callable[..., Daemon]) -> None:
    a = start_daemon("a", wait=False, ACCEL_NODE_P2P_MDNS="true")
    b = start_daemon("b", wait=False, ACCEL_NODE_P2P_MDNS="true")
    a.wait_ready()
    b.wait_ready()
    wait_until(
        lambda: b.peer_id in a.peer_ids() and a.peer_id in b.peer_ids(), timeout=30, what="mDNS discovery"
    )
    peers = a.api.peers.list().peers
    assert next(p for p in peers if p.peer_id == b.peer_id).connected is True
    assert "source=mdns" in a.log() + b.log()
