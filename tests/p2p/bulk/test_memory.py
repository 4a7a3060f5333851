"""The in-memory side of the bulk transport seam: streams and channel pairs that use the real framing
(limits, AEAD), and the in-memory network of transports that refuse and serve channels like
BulkService; all on trio's mock clock, nothing sleeps."""

from __future__ import annotations

import contextlib
import os

import pytest
import trio
import trio.testing
from libp2p.peer.id import ID

from p2p.bulk import (
    BlockFetcher,
    BlockServer,
    BlocksNotFoundError,
    BulkError,
    BulkLimits,
    ChannelClosed,
    FrameChannel,
    FrameError,
    HandshakeError,
    MemoryNetwork,
    RefusedError,
    memory_channel_pair,
    memory_stream_pair,
    serve_blocks,
)
from p2p.bulk.blocks import BLOCKS_PURPOSE
from p2p.content.cid import CID

PEER_A = ID(b"\x00\x24\x08\x01\x12\x20" + bytes(range(32)))
PEER_B = ID(b"\x00\x24\x08\x01\x12\x20" + bytes(range(1, 33)))


async def test_memory_streams_carry_bytes_and_close_like_sockets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = memory_stream_pair(max_chunks=2)
    await a.send_all(b"hello ")
    await a.send_all(memoryview(b"world"))
    assert await b.receive_some(3) == b"hel"
    assert await b.receive_some() == b"lo "
    assert await b.receive_some() == b"world"
    await a.send_all(b"1")
    await a.send_all(b"2")
    with trio.move_on_after(1) as blocked:  # two unread chunks: the sender waits (back-pressure)
        await a.send_all(b"3")
    assert blocked.cancelled_caught
    await a.send_eof()
    assert await b.receive_some() == b"1" and await b.receive_some() == b"2"
    assert await b.receive_some() == b""  # end of file
    with pytest.raises(trio.ClosedResourceError):
        await a.send_all(b"after eof")
    await b.send_all(b"the other way still works")
    assert await a.receive_some() == b"the other way still works"
    await a.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await b.send_all(b"to a closed end")


@pytest.mark.parametrize("mode", ["plain", "encrypted"])
async def test_memory_channel_pair_uses_the_real_framing(
    mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    opener, acceptor = memory_channel_pair(
        PEER_A,
        PEER_B,
        "echo",
        mode=mode,
        opener_max_payload=1024,
        acceptor_max_payload=4096,  # type: ignore[arg-type]
    )
    assert (opener.peer_id, acceptor.peer_id) == (PEER_B, PEER_A)
    assert opener.encrypted == acceptor.encrypted == (mode == "encrypted")
    assert (opener.max_send_payload, acceptor.max_send_payload) == (4096, 1024)
    payloads = [b"", b"small", os.urandom(4096)]
    async with trio.open_nursery() as nursery:

        async def send_all() -> None:
            for i, payload in enumerate(payloads):
                await opener.send_parts([payload[:10], payload[10:]], frame_type=i)
            await opener.send_eof()

        nursery.start_soon(send_all)
        for i, payload in enumerate(payloads):
            frame = await acceptor.receive()
            assert (frame.type, frame.payload) == (i, payload)
        with pytest.raises(ChannelClosed):
            await acceptor.receive()
    with pytest.raises(FrameError, match="peer's limit"):  # the acceptor's own limit, as over TCP
        await acceptor.send(bytes(1025))
    await acceptor.send(b"view")
    assert (await opener.receive_view())[1].tobytes() == b"view"
    await acceptor.aclose()
    with pytest.raises(ChannelClosed):
        await opener.receive()


async def test_encrypted_memory_frames_are_sealed(autojump_clock: trio.testing.MockClock) -> None:
    """In encrypted mode the bytes on the stream are AEAD ciphertext: the payload never shows."""
    opener, acceptor = memory_channel_pair(PEER_A, PEER_B, "secret")
    secret = b"activations that must not leak" * 4
    await opener.send(secret)
    raw = await acceptor._stream.receive_some()
    assert secret not in raw and len(raw) == 5 + len(secret) + 16


async def test_memory_network_refuses_and_serves_like_bulk_service(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    server, client = network.transport(PEER_A), network.transport(PEER_B)
    seen: list[ID] = []

    async def echo(channel: FrameChannel, peer_id: ID) -> None:
        seen.append(peer_id)
        while True:
            try:
                frame = await channel.receive()
            except ChannelClosed:
                return
            await channel.send(frame.payload, frame_type=frame.type)

    with pytest.raises(HandshakeError, match="cannot reach"):  # not running: unreachable
        async with client.open(PEER_A, "echo"):
            pass
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await nursery.start(client.run)
        with pytest.raises(RefusedError, match="no handler for purpose 'echo'"):
            async with client.open(PEER_A, "echo"):
                pass
        server.set_handler("echo", echo, require_encryption=True)
        with pytest.raises(RefusedError, match="requires an encrypted channel"):
            async with client.open(PEER_A, "echo", encrypted=False):
                pass
        async with client.open(PEER_A, "echo") as channel:
            await channel.send(b"ping", frame_type=3)
            frame = await channel.receive()
            assert (frame.type, frame.payload) == (3, b"ping")
        assert seen == [PEER_B]
        client.set_handler("echo", echo)  # a node opens channels to itself the same way
        async with client.open(PEER_B, "echo", encrypted=False) as channel:
            await channel.send(b"me")
            assert (await channel.receive()).payload == b"me"
        assert seen == [PEER_B, PEER_B]
        nursery.cancel_scope.cancel()


async def test_a_crashed_memory_node_ends_its_channels(autojump_clock: trio.testing.MockClock) -> None:
    network = MemoryNetwork()
    server, client = network.transport(PEER_A), network.transport(PEER_B)

    async def hold(channel: FrameChannel, peer_id: ID) -> None:
        await channel.send(b"hello")
        await trio.sleep_forever()

    server.set_handler("hold", hold)
    crash = trio.CancelScope()

    async def run_server(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with crash:
            await server.run(task_status=task_status)

    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await nursery.start(run_server)
        async with client.open(PEER_A, "hold") as channel:
            assert (await channel.receive()).payload == b"hello"
            crash.cancel()
            with pytest.raises(ChannelClosed):
                await channel.receive()
        await trio.testing.wait_all_tasks_blocked()
        assert not server.running
        with pytest.raises(HandshakeError, match="cannot reach"):
            async with client.open(PEER_A, "hold"):
                pass
        nursery.cancel_scope.cancel()


# -- block fetches on the memory network: the fetch's block owns its workers ---------------------


def _blocks(count: int) -> dict[CID, bytes]:
    datas = [os.urandom(1000 + i) for i in range(count)]
    return {CID.compute(data): data for data in datas}


async def test_leaving_a_fetch_early_cancels_its_workers_and_closes_their_channels() -> None:
    network = MemoryNetwork()
    provider, client = network.transport(PEER_A), network.transport(PEER_B)
    blocks = _blocks(64)
    closed = trio.Event()
    server = BlockServer(lambda raw: blocks.get(CID.decode(raw)))

    async def serve_then_watch(channel: FrameChannel, peer_id: ID) -> None:
        try:
            await server.handle(channel, peer_id)
        finally:
            closed.set()

    provider.set_handler(BLOCKS_PURPOSE, serve_then_watch)
    fetcher = BlockFetcher(client, batch_blocks=1, window_blocks=1, output_depth=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run)
        await nursery.start(client.run)
        with trio.fail_after(10):
            async with fetcher.fetch(list(blocks), [PEER_A]) as arriving:
                async for cid, data in arriving:
                    assert blocks[cid] == data
                    break  # leave with most wants still open
            await closed.wait()  # the worker was cancelled: its channel is closed, the server ends
        assert fetcher.blocks_received[PEER_A] < len(blocks)
        with pytest.raises(BulkError, match="inside its async with block"):
            await arriving.__anext__()
        nursery.cancel_scope.cancel()


async def test_an_exception_in_a_fetch_block_comes_out_as_itself() -> None:
    network = MemoryNetwork()
    provider, client = network.transport(PEER_A), network.transport(PEER_B)
    blocks = _blocks(8)
    serve_blocks(provider, lambda raw: blocks.get(CID.decode(raw)))
    fetcher = BlockFetcher(client)
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run)
        await nursery.start(client.run)
        with trio.fail_after(10):
            with pytest.raises(KeyError, match="the caller's own"):  # not an ExceptionGroup
                async with fetcher.fetch(list(blocks), [PEER_A]) as arriving:
                    async for _ in arriving:
                        raise KeyError("the caller's own")
            got: dict[CID, bytes] = {}
            async with fetcher.fetch(list(blocks), [PEER_A]) as arriving:
                async for cid, data in arriving:
                    got[cid] = data
            assert got == blocks
            with pytest.raises(BlocksNotFoundError, match="no providers"):
                async with fetcher.fetch(list(blocks), []) as arriving:
                    async for _ in arriving:
                        pass
        nursery.cancel_scope.cancel()


async def test_memory_network_bounds_channels_per_peer_like_bulk_service(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    server = network.transport(PEER_A, limits=BulkLimits(channels_per_peer=2, channels=4))
    client = network.transport(PEER_B)

    async def hold(channel: FrameChannel, peer_id: ID) -> None:
        with contextlib.suppress(ChannelClosed):
            await channel.receive()

    server.set_handler("hold", hold)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await nursery.start(client.run)
        async with client.open(PEER_A, "hold"), client.open(PEER_A, "hold"):
            with pytest.raises(RefusedError, match="busy"):
                async with client.open(PEER_A, "hold"):
                    pass
        await trio.testing.wait_all_tasks_blocked()  # the handlers ended: their shares came back
        async with client.open(PEER_A, "hold"):
            pass
        assert server.resources is not None and server.resources.used("bulk.channels") <= 1
        nursery.cancel_scope.cancel()
