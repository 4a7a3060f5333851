"""Zero trust on the bulk port (issue 11, findings 5 and 7): blame only on authenticated evidence,
pre-authentication limits per remote IP, channel and ticket limits per peer, idle channels closed.

Real py-libp2p hosts and TCP sockets on 127.0.0.1; the flooding "other machine" binds its sockets
to 127.0.0.2 (all of 127/8 is loopback on Linux), so the per-IP limit is exercised for real. What
can run in memory runs on trio's mock clock (not the fetches: block reads and hashing run in worker
threads, during which an autojumping clock would fire every timeout).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from libp2p.abc import IHost
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from p2p.bulk import (
    BlockFetcher,
    BlocksNotFoundError,
    BulkService,
    Channel,
    ChannelClosed,
    FrameChannel,
    FrameDecoder,
    FrameEncoder,
    MemoryNetwork,
    RefusedError,
)
from p2p.bulk.blocks import BlockServer
from p2p.bulk.handshake import ChannelRequest
from p2p.bulk.limits import CHANNELS, PENDING_HANDSHAKES, BulkLimits, ip_scope
from p2p.bulk.memory import MemoryStream, memory_stream_pair
from p2p.content.cid import CID
from p2p.events import BAD_CONTENT, BAD_SIGNATURE, LIMIT, SecurityEvent
from p2p.host import HostSettings, build_host, dial, run_host
from p2p.identity import generate_identity

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
PROVIDER = ID(b"\x00\x24\x08\x01\x12\x20" + bytes(range(32)))
CLIENT = ID(b"\x00\x24\x08\x01\x12\x20" + bytes(range(1, 33)))


# -- penalties only on authenticated evidence (finding 7) -----------------------------------------


class InjectingStream(trio.abc.HalfCloseableStream):
    """A memory stream end whose received bytes are altered at offset ``at`` (an attacker on the
    path rewriting a block in flight)."""

    def __init__(self, inner: MemoryStream, at: int | None) -> None:
        self.inner = inner
        self.at = at
        self.seen = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = bytearray(await self.inner.receive_some(max_bytes))
        if self.at is not None and self.seen <= self.at < self.seen + len(data):
            data[self.at - self.seen] ^= 0x01
        self.seen += len(data)
        return bytes(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


class PathOpener:
    """Opens ``plain`` blocks channels to a :class:`BlockServer`, through an attacker on the path
    that alters the byte at ``inject_at`` of what the server sends (None: an honest path)."""

    def __init__(
        self, server: BlockServer, events: list[SecurityEvent], inject_at: int | None, nursery: trio.Nursery
    ) -> None:
        self.server, self.events, self.inject_at, self.nursery = server, events, inject_at, nursery

    @property
    def local_id(self) -> ID:
        return CLIENT

    @asynccontextmanager
    async def open(
        self, peer_id: ID, purpose: str, *, encrypted: bool = True, timeout_s: float = 10.0
    ) -> AsyncIterator[FrameChannel]:
        ours, theirs = memory_stream_pair()
        c2s, s2c = os.urandom(32), os.urandom(32)

        def channel(stream: trio.abc.HalfCloseableStream, peer: ID, send: bytes, recv: bytes) -> Channel:
            return Channel(
                stream,
                peer_id=peer,
                purpose=purpose,
                mode="plain",
                cipher="aes-256-gcm",
                encoder=FrameEncoder(cipher="aes-256-gcm", key=send, encrypt=False),
                decoder=FrameDecoder(cipher="aes-256-gcm", key=recv, encrypt=False),
                events=self.events.append,
            )

        server_end = channel(theirs, CLIENT, s2c, c2s)
        self.nursery.start_soon(self.server.handle, server_end, CLIENT)
        client_end = channel(InjectingStream(ours, self.inject_at), peer_id, c2s, s2c)
        try:
            yield client_end
        finally:
            await client_end.aclose()


def some_blocks(count: int) -> dict[CID, bytes]:
    blocks = {}
    for _ in range(count):
        data = os.urandom(256 * 1024)
        blocks[CID.compute(data)] = data
    return blocks


def getter(blocks: dict[CID, bytes]) -> Callable[[bytes], bytes | None]:
    return lambda raw: blocks.get(CID.decode(raw))


async def fetch_through(opener: PathOpener, cids: list[CID], bad: list[ID]) -> BaseException | None:
    fetcher = BlockFetcher(opener, on_bad_block=bad.append, events=opener.events.append)
    try:
        async with fetcher.fetch(cids, [PROVIDER], timeout_s=5) as got:
            async for _ in got:
                pass
    except BlocksNotFoundError as exc:
        return exc
    return None


async def test_a_frame_injected_on_the_path_blames_nobody() -> None:
    """On 335e76e a ``plain`` frame was bare: the rewritten block failed its CID and the honest
    provider was penalised. Now the frame fails authentication: channel closed, nobody blamed."""
    blocks = some_blocks(4)
    events: list[SecurityEvent] = []
    bad: list[ID] = []
    async with trio.open_nursery() as nursery:
        opener = PathOpener(BlockServer(getter(blocks)), events, inject_at=300 * 1024, nursery=nursery)
        missing = await fetch_through(opener, list(blocks), bad)
        nursery.cancel_scope.cancel()
    assert isinstance(missing, BlocksNotFoundError)  # the only provider's channel was cut
    assert bad == []  # the honest provider is not penalised
    assert [e.kind for e in events] == [BAD_SIGNATURE]
    assert events[0].peer == str(PROVIDER) and "not blamed" in events[0].reason


async def test_a_wrong_block_in_an_authenticated_frame_is_held_against_its_sender() -> None:
    blocks = some_blocks(3)
    victim = list(blocks)[1]
    lies = dict(blocks)
    lies[victim] = os.urandom(256 * 1024)
    events: list[SecurityEvent] = []
    bad: list[ID] = []
    async with trio.open_nursery() as nursery:
        opener = PathOpener(BlockServer(getter(lies)), events, inject_at=None, nursery=nursery)
        missing = await fetch_through(opener, list(blocks), bad)
        nursery.cancel_scope.cancel()
    assert isinstance(missing, BlocksNotFoundError) and victim in missing.missing
    assert bad == [PROVIDER]
    assert [(e.kind, e.peer) for e in events] == [(BAD_CONTENT, str(PROVIDER))]


# -- the bulk service between real hosts ------------------------------------------------------


@asynccontextmanager
async def hosts(
    count: int, **bulk_options: Any
) -> AsyncIterator[list[tuple[IHost, BulkService, list[SecurityEvent]]]]:
    """``count`` hosts on 127.0.0.1 with bulk services; every other host dials the first."""
    async with trio.open_nursery() as nursery:
        made = []
        for _ in range(count):
            host = build_host(generate_identity(), HostSettings(listen_addrs=LOOPBACK))
            addrs = await nursery.start(run_host, host, LOOPBACK)
            events: list[SecurityEvent] = []
            bulk = BulkService(host, events=events.append, **bulk_options)
            await nursery.start(bulk.run)
            made.append((host, bulk, events, addrs[0]))
        for host, _, _, _ in made[1:]:
            await dial(host, made[0][0].get_id(), made[0][3], timeout_s=5)
        yield [(host, bulk, events) for host, bulk, events, _ in made]
        nursery.cancel_scope.cancel()


async def hold_open(channel: FrameChannel, peer_id: ID) -> None:
    """Echo until the client goes away."""
    while True:
        try:
            frame = await channel.receive()
        except ChannelClosed:
            return
        await channel.send(frame.payload)


async def channels_released(server: BulkService) -> None:
    """Wait (at most 5 s) until the server's channels have given their shares back: the server
    notices a closed channel a moment after the client closed it."""
    with trio.fail_after(5):
        while server.resources.used(CHANNELS):  # noqa: ASYNC110 - polling another host's state
            await trio.sleep(0.01)


async def test_one_ip_cannot_fill_the_pending_handshake_slots() -> None:
    """Finding 5: 64 idle sockets filled the 64 pending-handshake slots of the bulk port and no
    channel could be opened. Now one remote IP holds at most its share, each for the handshake
    timeout only, and a peer at another IP still gets its channel."""
    options = {"max_pending_handshakes": 16, "max_pending_handshakes_per_ip": 4, "handshake_timeout_s": 4.0}
    async with hosts(2, **options) as [(_, server, events), (_, client, _)]:
        server.set_handler("echo", hold_open)
        with trio.fail_after(30):
            flood = [
                await trio.open_tcp_stream("127.0.0.1", server.port, local_address="127.0.0.2")
                for _ in range(20)
            ]
            start = trio.current_time()
            closed = 0
            for stream in flood[4:]:  # over the IP's share: dropped at once, not after the timeout
                assert await stream.receive_some(1) == b""
                closed += 1
            assert closed == 16 and trio.current_time() - start < 2.5
            assert server.resources.used(PENDING_HANDSHAKES, "ip:127.0.0.2") == 4
            async with client.open(server.local_id, "echo", encrypted=False) as channel:  # from 127.0.0.1
                await channel.send(b"through the flood")
                assert (await channel.receive()).payload == b"through the flood"
            for stream in flood[:4]:  # the ones in the slots are dropped after the handshake timeout
                assert await stream.receive_some(1) == b""
            assert trio.current_time() - start >= 3.5
        assert server.resources.used(PENDING_HANDSHAKES) == 0
        limit_events = [e for e in events if e.kind == LIMIT and e.details.get("ip") == "127.0.0.2"]
        assert len(limit_events) == 1  # one report per IP per interval, not one per socket
        for stream in flood:
            await stream.aclose()


async def test_a_peer_at_its_channel_limit_is_refused_while_others_get_channels() -> None:
    async with hosts(3, max_channels_per_peer=2, max_channels=8) as [
        (_, server, events),
        (_, a, _),
        (_, b, _),
    ]:
        server.set_handler("echo", hold_open)
        with trio.fail_after(30):
            async with a.open(server.local_id, "echo") as one, a.open(server.local_id, "echo") as two:
                for channel in (one, two):
                    await channel.send(b"x")
                    await channel.receive()
                assert server.resources.used(CHANNELS, str(a.local_id)) == 2
                with pytest.raises(RefusedError, match="busy"):
                    async with a.open(server.local_id, "echo"):
                        pass
                async with b.open(server.local_id, "echo") as other:  # another peer is not stalled
                    await other.send(b"y")
                    assert (await other.receive()).payload == b"y"
            await channels_released(server)
            async with a.open(server.local_id, "echo") as again:
                await again.send(b"z")
                assert (await again.receive()).payload == b"z"
        assert any(e.kind == LIMIT and e.peer == str(a.local_id) for e in events)


async def test_tickets_are_limited_per_peer_and_expire_fast() -> None:
    options = {"max_tickets_per_peer": 2, "max_tickets": 16, "ticket_ttl_s": 1.0}
    async with hosts(3, **options) as [(_, server, _), (_, a, _), (_, b, _)]:
        server.set_handler("echo", hold_open)
        request = ChannelRequest("echo", "plain", ("aes-256-gcm",), 1 << 20)
        with trio.fail_after(30):
            for _ in range(2):  # granted and never redeemed
                await a._request_ticket(server.local_id, request)
            with pytest.raises(RefusedError, match="busy"):
                await a._request_ticket(server.local_id, request)
            grant, _ = await b._request_ticket(server.local_id, request)  # others are unaffected
            assert grant.ttl_s == 1.0
            await trio.sleep(1.1)
            async with a.open(server.local_id, "echo") as channel:  # expired tickets freed the share
                await channel.send(b"ok")
                assert (await channel.receive()).payload == b"ok"


async def test_an_idle_channel_is_closed_by_the_server() -> None:
    async with hosts(2, idle_timeout_s=0.5) as [(_, server, _), (_, client, _)]:
        server.set_handler("echo", hold_open)
        with trio.fail_after(20):
            async with client.open(server.local_id, "echo") as channel:
                await channel.send(b"hello")
                await channel.receive()
                with pytest.raises(ChannelClosed):
                    await channel.receive()  # nothing either way for 0.5 s: the server closes
        assert server.idle_closed == 1
        await channels_released(server)


async def test_idle_close_on_the_mock_clock_spares_busy_channels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    server = network.transport(PROVIDER, idle_timeout_s=60)
    client = network.transport(CLIENT)
    server.set_handler("echo", hold_open)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await nursery.start(client.run)
        async with client.open(PROVIDER, "echo") as busy, client.open(PROVIDER, "echo") as idle:
            for _ in range(5):  # a frame every 40 s: never idle for 60
                await busy.send(b"tick")
                await busy.receive()
                await trio.sleep(40)
            with pytest.raises(ChannelClosed):
                await idle.receive()
            assert server.handlers.active_channels == 1  # the idle one was closed at 60 s
            await busy.send(b"still open")
            assert (await busy.receive()).payload == b"still open"
        nursery.cancel_scope.cancel()


def test_ip_scopes_group_what_one_host_controls() -> None:
    assert ip_scope("192.0.2.7") == "ip:192.0.2.7"
    assert ip_scope("::ffff:192.0.2.7") == "ip:192.0.2.7"  # a dual-stack listener's IPv4 peer
    assert ip_scope("2001:db8:1:2::1") == ip_scope("2001:db8:1:2:ffff::9") == "ip:2001:db8:1:2::/64"
    assert ip_scope("2001:db8:1:3::1") != ip_scope("2001:db8:1:2::1")


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="must not exceed"):
        BulkLimits(channels_per_peer=300, channels=256)
    with pytest.raises(ValueError, match="positive"):
        BulkLimits(handshake_timeout_s=0)
