"""Issue 11, findings 3, 6 and 8 at a stage server, each as an attacker would try it, on trio's mock clock
over in-memory channels (real framing, real ONNX Runtime stages, ORT inline):

- slot pinning: a peer's tiny RUNs with an hour of ttl and a reply-to that never acknowledges no longer
  starve a legitimate request (per-peer shares, answered ``busy`` at once; RUNs bounded by the plan);
- no dial oracle: addresses in a RUN are never learnt nor dialled, and FAIL reasons name no third party;
- memory: bytes in reassembly are bounded per peer (refused as ``busy``, not penalised), a message in
  parts is buffered once, and its tensors are views of that buffer.
"""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial

import numpy as np
import pytest
import trio
import trio.testing
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from accel_node.shard.admission import (
    AWAITING,
    CHANNELS,
    IN_FLIGHT,
    REASSEMBLY_BYTES,
    Admission,
    AdmissionLimits,
)
from accel_node.shard.errors import ReassemblyRefused, ShardBusyError
from accel_node.shard.links import Link, MessageChannel
from accel_node.shard.parts import Reassembler, split_frames
from accel_node.shard.server import BUSY_PAUSE_MAX_S, RESULT_PURPOSE, SHARD_PURPOSE, StageServer
from accel_node.shard.wire import BUSY, UNDELIVERABLE, Kind, Message, decode_message, encode_message
from p2p.bulk import ChannelClosed, ChannelOpener, FrameChannel, MemoryTransport
from p2p.events import LIMIT, SecurityEvent
from p2p.host import dial
from p2p.identity import generate_identity
from p2p.resources import ResourceManager
from tests.shard.test_pipeline import run_node
from tests.shard.test_seam import Model, Net, assert_close, cid, mlp, net, peer, serve, stalling  # noqa: F401
from tests.support.modelzoo import zoo  # noqa: F401

HOUR_MS = 3_600_000


async def black_hole(channel: FrameChannel, _peer: ID) -> None:
    """A reply-to that accepts the result channel and never acknowledges anything."""
    await trio.sleep_forever()


async def started(n: Net, transport: MemoryTransport) -> MemoryTransport:
    await n.nursery.start(transport.run)
    return transport


@asynccontextmanager
async def link_to(transport: ChannelOpener, target: ID) -> AsyncIterator[Link]:
    """A raw ``shard/1`` link from ``transport`` to ``target`` (an attacker's, or a test's)."""
    opening = transport.open(target, SHARD_PURPOSE, encrypted=True, timeout_s=5)
    async with opening as channel, trio.open_nursery() as nursery:
        link = Link(MessageChannel(channel), SHARD_PURPOSE)
        nursery.start_soon(link.read_answers, lambda _p, _r: None)
        yield link
        nursery.cancel_scope.cancel()


def run_for(model: Model, stage: int, reply_to: ID, **fields: object) -> Message:
    feeds = model.feeds(1, np.random.default_rng(0))
    frame = feeds if stage == 0 else {}
    return Message(Kind.RUN, os.urandom(16), stage=stage, model=cid(2), reply_to=reply_to, tensors=frame,
                   ttl_ms=HOUR_MS, **fields)  # type: ignore[arg-type]  # fmt: skip


async def test_a_peer_pinning_slots_cannot_starve_a_legitimate_request(
    mlp: Model,  # noqa: F811
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Finding 3: 64 tiny RUNs (ttl one hour, reply-to a black hole) used to hold all 64 slots of the
    stage for an hour; the legitimate request then timed out. Through an honest stage 0, too: the
    attacker's RUNs must not take stage 0's share at stage 1 (the wait is the black hole's)."""
    events: list[SecurityEvent] = []
    async with net() as n:
        client = await n.node(server_cls=None, router={"hop_timeout_s": 5.0})
        first, last = await n.node(events=events.append), await n.node(events=events.append)
        route = await serve(mlp, 2, [[first], [last]])
        hole = await started(n, n.network.transport(peer(90)))
        hole.set_handler(RESULT_PURPOSE, black_hole, require_encryption=True)
        attacker = await started(n, n.network.transport(peer(91)))
        servers = [first.server, last.server]
        assert first.server is not None and last.server is not None and client.router is not None
        pinned = run_for(mlp, 0, hole.local_id, route=((last.id,),))
        answers: list[Message] = []
        async with link_to(attacker, first.id) as link, trio.open_nursery() as nursery:

            async def pin() -> None:
                answers.append(await link.request(pinned, timeout_s=HOUR_MS / 1000))

            for _ in range(64):
                nursery.start_soon(pin)
            await trio.sleep(1)  # answered so far: busy (the channel is read slower after each one)
            assert len(answers) >= 5 and {a.code for a in answers} == {BUSY}
            for server in servers:
                assert server is not None and server.resources.used(IN_FLIGHT) == 0  # all computed
                assert 0 < server.resources.used(AWAITING, str(hole.local_id)) <= 32  # the hole's share
            start = trio.current_time()
            feeds = mlp.feeds(2, np.random.default_rng(1))
            got = await client.router.infer(route, cid(2), feeds, timeout_s=30)
            assert_close(got, mlp.expected(feeds))
            assert trio.current_time() - start < 1  # not waiting behind the pinned RUNs
        # the pinned RUNs were answered within the plan's bound, not the hour their sender asked for
        assert len(answers) == 64 and {a.code for a in answers} == {BUSY, UNDELIVERABLE}
        assert trio.current_time() - start < 64 * BUSY_PAUSE_MAX_S + 2 * 5.0
        for server in servers:
            assert server is not None and all(
                u.used == 0 for u in server.resources.usage() if u.resource != CHANNELS
            )
        assert not first.penalties.excluded(attacker.local_id)  # no proof against the upstream
        assert not first.server.health.backing_off(last.id)  # nor against the next hop
        limits = [e for e in events if e.kind == LIMIT and e.details["resource"] == AWAITING]
        assert limits and all(e.peer == str(hole.local_id) for e in limits)  # reported, and throttled
        assert len(limits) <= 2


async def test_a_busy_stage_answers_busy_and_the_router_raises_429(
    mlp: Model,  # noqa: F811
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with net() as n:
        client = await n.node(server_cls=None, router={"hop_timeout_s": 5.0})
        first = await n.node(max_in_flight=1, offload=stalling(3.0))
        last = await n.node()
        route = await serve(mlp, 2, [[first], [last]])
        router = client.router
        assert router is not None
        feeds = mlp.feeds(1, np.random.default_rng(2))
        outcomes: list[object] = []

        async def ask() -> None:
            try:
                outcomes.append(await router.infer(route, cid(2), feeds, timeout_s=30))
            except ShardBusyError as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.sleep(1)
            nursery.start_soon(ask)
        busy = [o for o in outcomes if isinstance(o, ShardBusyError)]
        assert len(busy) == 1 and busy[0].status == 429 and busy[0].headers() == {"Retry-After": "1"}
        assert not router.health.backing_off(first.id)  # load is not a fault
        await trio.testing.wait_all_tasks_blocked()  # the first RUN's ACK: its share is given back
        assert_close(await router.infer(route, cid(2), feeds, timeout_s=30), mlp.expected(feeds))


async def test_addresses_in_a_run_are_never_learnt_and_fail_reasons_name_no_third_party(
    mlp: Model,  # noqa: F811
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Finding 6: a RUN's reply_to/addrs went into the peerstore and were dialled, and the dial error
    came back in the FAIL reason: a port scanner."""
    async with net() as n:
        first, last = await n.node(), await n.node()
        await serve(mlp, 2, [[first], [last]])
        attacker = await started(n, n.network.transport(peer(92)))
        victim, ghost = peer(93), peer(94)  # neither is on the network
        probe = {victim: (Multiaddr("/ip4/10.1.2.3/tcp/22"),), ghost: (Multiaddr("/ip4/10.1.2.4/tcp/6379"),)}
        async with link_to(attacker, first.id) as link:
            forwarded = await link.request(
                run_for(mlp, 0, victim, route=((ghost,),), addrs=probe), timeout_s=60
            )
            delivered = await link.request(
                run_for(mlp, 0, victim, route=((last.id,),), addrs=probe), timeout_s=60
            )
        for transport in (first.transport, last.transport):
            assert transport.addrs == {}  # nothing learnt from the RUNs
        assert forwarded.kind == Kind.FAIL and delivered.kind == Kind.FAIL
        assert delivered.code == UNDELIVERABLE
        for answer in (forwarded, delivered):
            for secret in ("10.1.2.", "/tcp/", str(ghost), str(victim), "memory network", "reach"):
                assert secret not in answer.reason, (secret, answer.reason)


async def test_a_stage_server_on_a_real_host_never_dials_the_addresses_of_a_run(
    mlp: Model,  # noqa: F811
) -> None:
    """Finding 6 between py-libp2p hosts: the address a RUN gives for its reply-to is a port of ours
    that counts connections; the server used to dial it and send back the dial error."""
    connects: list[int] = []

    async def count(stream: trio.SocketStream) -> None:
        connects.append(1)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, count, listeners)
        node = await nursery.start(partial(run_node, server_cls=StageServer))
        client = await nursery.start(run_node)
        await dial(client.host, node.id, node.addr, timeout_s=5)
        stage = mlp.parts[2].stages[0]
        await node.server.serve(cid(2), 0, stage.model_bytes, stage)
        victim = ID.from_pubkey(generate_identity().public_key)
        probe = {victim: (Multiaddr(f"/ip4/127.0.0.1/tcp/{port}"),)}
        with trio.fail_after(20):
            async with link_to(client.bulk, node.id) as link:
                answer = await link.request(run_for(mlp, 0, victim, addrs=probe), timeout_s=15)
        assert answer.code == UNDELIVERABLE and connects == []  # never dialled
        assert (
            not node.host.get_peerstore().addrs(victim)
            if victim in node.host.get_peerstore().peer_ids()
            else True
        )
        for secret in ("127.0.0.1", str(port), str(victim)):
            assert secret not in answer.reason
        nursery.cancel_scope.cancel()


async def test_a_peer_holds_at_most_its_share_of_channels(
    mlp: Model,  # noqa: F811
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with net() as n:
        node = await n.node(admission=AdmissionLimits(peer_channels=2))
        await serve(mlp, 2, [[node], [node]])
        attacker = await started(n, n.network.transport(peer(95)))
        assert node.server is not None
        async with link_to(attacker, node.id), link_to(attacker, node.id):
            await trio.testing.wait_all_tasks_blocked()
            assert node.server.resources.used(CHANNELS, str(attacker.local_id)) == 2
            async with attacker.open(node.id, SHARD_PURPOSE, encrypted=True, timeout_s=5) as third:
                with trio.fail_after(1), pytest.raises(ChannelClosed):
                    await third.receive()  # closed by the server at once
            assert node.server.resources.used(CHANNELS, str(attacker.local_id)) == 2
        await trio.testing.wait_all_tasks_blocked()
        assert node.server.resources.used(CHANNELS) == 0


def lazily(message: Message, max_payload: int) -> Iterator[tuple[int, bytes]]:
    """The frames of ``message``, each a fresh ``bytes`` (as a channel hands them over), made on demand."""
    for frame_type, parts in split_frames(encode_message(message), max_payload):
        yield frame_type, b"".join(parts)


def big_run(mib: int) -> Message:
    x = np.ones((mib, 1 << 18), np.float32)  # mib MiB of float32
    return Message(Kind.RUN, os.urandom(16), tag=7, model="m", reply_to=peer(1), tensors={"x": x})


async def test_reassembly_is_bounded_per_peer_and_refused_as_busy() -> None:
    """Finding 8: any number of messages of up to 256 MiB could be in reassembly at once."""
    limits = AdmissionLimits(peer_reassembly_bytes=3 << 20, total_reassembly_bytes=4 << 20)
    admission = Admission(ResourceManager(), limits)
    mallory, alice = peer(5), peer(6)
    channels = [
        Reassembler(budget=lambda size, p=p: admission.reassembly(p, size)) for p in (mallory, mallory, alice)
    ]
    message = big_run(2)
    frames = list(lazily(message, 64 << 10))
    assert channels[0].feed(*frames[0]) is None  # 2 MiB held for mallory's first channel
    with pytest.raises(ReassemblyRefused) as refused:
        channels[1].feed(*frames[0])  # a second one would exceed its 3 MiB
    assert (refused.value.request_id, refused.value.tag) == (message.request_id, 7)  # answerable
    for frame in frames[1:]:
        assert channels[1].feed(*frame) is None  # the rest of the refused message is skipped
    with pytest.raises(ReassemblyRefused):
        channels[2].feed(*frames[0])  # alice: 2 + 2 MiB would exceed 4 MiB in total
    assert admission.resources.used(REASSEMBLY_BYTES) == message_size(message)
    *_, done = (channels[0].feed(*frame) for frame in frames[1:])
    assert done is not None and admission.resources.used(REASSEMBLY_BYTES) == 0  # given back
    assert channels[2].feed(*frames[0]) is None  # now there is room
    channels[2].close()  # the channel ended half way: its bytes come back too
    assert admission.resources.used(REASSEMBLY_BYTES) == 0


def message_size(message: Message) -> int:
    return encode_message(message).size


def test_a_message_in_parts_is_buffered_once_and_decoded_without_copies() -> None:
    """Finding 8: parts were kept in a list and joined (twice the message), then decoded."""
    message = big_run(8)
    size = message_size(message)
    reassembler = Reassembler()
    tracemalloc.start()
    try:
        for frame_type, payload in lazily(message, 256 << 10):
            data = reassembler.feed(frame_type, payload)
            del payload
        assert data is not None
        decoded = decode_message(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    x = decoded.tensors["x"]
    assert np.shares_memory(x, np.frombuffer(data, np.uint8)) and not x.flags.writeable  # a view
    np.testing.assert_array_equal(x, message.tensors["x"])
    assert peak < 1.2 * size, (peak, size)  # the buffer, a frame and the encoder's header: not 2x
