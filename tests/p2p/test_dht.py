"""Signed records in the DHT across real py-libp2p hosts on loopback (one process)."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import cbor2
import trio
from libp2p.crypto.keys import KeyPair
from multiaddr import Multiaddr

from p2p.dht import RecordDHT, record_key
from p2p.host import HostSettings, build_host, dial, run_host
from p2p.identity import generate_identity, peer_id_of
from p2p.perf import PERF_PROTOCOL, handle_perf_stream, measure_peer
from p2p.pubsub import PubSub, messages
from p2p.records import sign_record

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]


class Node:
    def __init__(self, key_pair: KeyPair) -> None:
        self.key_pair = key_pair
        self.host = build_host(key_pair, HostSettings(listen_addrs=LOOPBACK))
        self.dht = RecordDHT(self.host, namespace="accel", kinds=["cap"])
        self.pubsub = PubSub(self.host)
        self.addrs: list[Multiaddr] = []

    def key(self) -> str:
        return record_key("accel", "cap", peer_id_of(self.key_pair))

    def record(self, seq: int, body: dict[str, object], ttl: int = 60) -> bytes:
        return sign_record(
            self.key_pair, kind="cap", seq=seq, expires_at=int(time.time()) + ttl, body=body
        ).raw


@asynccontextmanager
async def line(n: int) -> AsyncIterator[list[Node]]:
    """``n`` hosts connected in a line; each only knows its neighbours."""
    nodes = [Node(generate_identity()) for _ in range(n)]
    async with trio.open_nursery() as nursery:
        for node in nodes:
            node.addrs = await nursery.start(run_host, node.host, LOOPBACK)
            await nursery.start(node.dht.run)
            await nursery.start(node.pubsub.run)
        for left, right in itertools.pairwise(nodes):
            await dial(left.host, right.host.get_id(), right.addrs[0], timeout_s=5)

        def tables_filled() -> bool:
            return all(
                node.dht.routing_table_size() == (1 if i in (0, n - 1) else 2) for i, node in enumerate(nodes)
            )

        with trio.fail_after(10):  # routing tables fill once identify has run
            while not tables_filled():  # noqa: ASYNC110 - py-libp2p has no event for routing-table changes
                await trio.sleep(0.05)
        yield nodes
        nursery.cancel_scope.cancel()


async def test_record_is_found_across_a_line_of_five() -> None:
    async with line(5) as nodes:
        a, e = nodes[0], nodes[-1]
        assert e.host.get_id() not in a.host.get_connected_peers()
        assert await e.dht.put(e.key(), e.record(1, {"name": "E"})) >= 1
        found = await a.dht.get(e.key())
        assert found is not None and found.body == {"name": "E"} and found.peer_id == e.host.get_id()


async def test_newer_record_wins_and_is_not_served_stale() -> None:
    async with line(3) as nodes:
        a, c = nodes[0], nodes[-1]
        await c.dht.put(c.key(), c.record(1, {"v": 1}))
        assert (await a.dht.get(c.key())).seq == 1  # type: ignore[union-attr]
        await c.dht.put(c.key(), c.record(2, {"v": 2}))
        # a looked it up before; it must ask the network again rather than reuse a stale copy.
        found = await a.dht.get(c.key())
        assert found is not None and found.seq == 2 and found.body == {"v": 2}


async def test_missing_record_is_none() -> None:
    async with line(2) as nodes:
        assert await nodes[0].dht.get(record_key("accel", "cap", peer_id_of(generate_identity()))) is None


async def test_remote_peers_refuse_forged_puts() -> None:
    """A peer that bypasses its own validator cannot plant a forged record on others."""
    async with line(2) as nodes:
        a, b = nodes
        victim = Node(generate_identity())
        forged = a.record(1, {"name": "not the victim"})  # signed by a, stored under the victim's key
        key = victim.key().encode()
        stored = await a.dht.kad.value_store._store_at_peer(b.host.get_id(), key, forged)
        assert not stored
        assert b.dht.kad.value_store.get(key) is None
        tampered = cbor2.loads(a.record(1, {"x": 1}))
        tampered["body"] = {"x": 2}
        assert not await a.dht.kad.value_store._store_at_peer(
            b.host.get_id(), a.key().encode(), cbor2.dumps(tampered)
        )
        assert b.dht.kad.value_store.get(a.key().encode()) is None


async def test_gossip_crosses_the_line_with_authors() -> None:
    async with line(3) as nodes:
        subscriptions = [await n.pubsub.subscribe("/t") for n in nodes]
        with trio.fail_after(10):
            while True:  # the mesh forms within a few heartbeats
                await nodes[-1].pubsub.publish("/t", b"hello")
                with trio.move_on_after(0.5):
                    author, data = await messages(subscriptions[0]).__anext__()
                    break
        assert author == nodes[-1].host.get_id() and data == b"hello"


async def test_perf_protocol_measures_rtt_and_throughput() -> None:
    async with line(2) as nodes:
        a, b = nodes
        b.host.set_stream_handler(PERF_PROTOCOL, handle_perf_stream)
        result = await measure_peer(a.host, b.host.get_id(), payload_bytes=1 << 20)
        assert 0 < result.rtt_ms < 1000
        assert result.upload_mbps > 1 and result.download_mbps > 1
        assert result.payload_bytes == 1 << 20
