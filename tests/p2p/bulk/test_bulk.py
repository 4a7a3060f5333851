"""Bulk channels: sans-IO framing and handshake, the service between real py-libp2p hosts on
127.0.0.1, and content blocks fetched over it (verification, bad blocks, parallel providers)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import cbor2
import pytest
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from p2p.bulk import (
    BlockFetcher,
    BlocksNotFoundError,
    BulkService,
    Channel,
    ChannelClosed,
    FrameAuthenticationError,
    FrameDecoder,
    FrameEncoder,
    FrameError,
    HandshakeError,
    RefusedError,
    serve_blocks,
)
from p2p.bulk.blocks import BLOCKS, END, ERROR, WANT, decode_blocks, decode_wants, encode_blocks, encode_wants
from p2p.bulk.framing import HEADER, SCRATCH_SIZE, TAG_SIZE
from p2p.bulk.handshake import (
    HELLO_SIZE,
    MAGIC,
    REPLY_SIZE,
    ChannelRequest,
    Refusal,
    TicketBook,
    TicketGrant,
    Transcript,
    check_client_mac,
    check_server_reply,
    client_hello,
    decode_response,
    derive_keys,
    encode_control,
    encode_response,
    new_nonce,
    parse_client_hello,
    server_reply,
)
from p2p.content import CID, import_bytes, read_bytes
from p2p.host import HostSettings, build_host, dial, run_host
from p2p.identity import generate_identity

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))


# -- framing (sans-IO) ----------------------------------------------------------------------------


def pair(
    encrypted: bool, max_payload: int = 1 << 20, cipher: str = "aes-256-gcm"
) -> tuple[FrameEncoder, FrameDecoder]:
    """Sealed frames, or (``encrypted=False``, the ``plain`` mode) authenticated ones."""
    return (
        FrameEncoder(max_payload=max_payload, cipher=cipher, key=KEY_A, encrypt=encrypted),
        FrameDecoder(max_payload=max_payload, cipher=cipher, key=KEY_A, encrypt=encrypted),
    )


def drain(decoder: FrameDecoder) -> list[tuple[int, bytes]]:
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append((frame.type, frame.payload))
    return out


@pytest.mark.parametrize("encrypted", [False, True])
def test_frames_round_trip_through_any_split(encrypted: bool) -> None:
    rng = random.Random(7)
    frames = [
        (rng.randrange(256), rng.randbytes(size)) for size in (0, 1, 5, 4096, SCRATCH_SIZE * 3 + 1, 1 << 20)
    ]
    encoder, decoder = pair(encrypted)
    wire = b"".join(encoder.encode_bytes(t, p) for t, p in frames)
    pos = 0
    while pos < len(wire):  # random pieces, from 1 byte up to 200 KiB
        step = rng.choice((1, 3, 5, 1000, 200_000))
        decoder.feed(wire[pos : pos + step])
        pos += step
    assert drain(decoder) == frames
    decoder.eof()  # at a frame boundary: a clean end

    # The same bytes through the buffered-protocol path the channel uses (direct body reads).
    _, decoder = pair(encrypted)
    pos = 0
    while pos < len(wire):
        buffer = decoder.get_buffer()
        n = min(len(buffer), len(wire) - pos, rng.choice((7, 65536, 1 << 20)))
        buffer[:n] = wire[pos : pos + n]
        decoder.buffer_updated(n)
        pos += n
    assert drain(decoder) == frames


@pytest.mark.parametrize("encrypted", [False, True])
def test_views_of_large_frames_reuse_one_buffer_and_stay_valid_until_the_next_call(encrypted: bool) -> None:
    encoder, decoder = pair(encrypted)
    payloads = [bytes([i]) * (SCRATCH_SIZE * 4 + i) for i in range(4)]
    wire = b"".join(encoder.encode_bytes(7, p) for p in payloads)
    decoder.feed(wire[:100])
    decoder.feed(wire[100:])  # several large frames complete at once: only one can use the buffer
    seen: list[object] = []
    while (item := decoder.next_view()) is not None:
        assert item[1] == payloads[len(seen)]  # intact until the next call
        seen.append(item[1].obj)
    assert len(seen) == len(payloads)
    # Read one at a time (as a channel does), the big frames all land in the same reused buffer.
    encoder, decoder = pair(encrypted)
    buffers = set()
    for payload in payloads:
        assert decoder.next_view() is None  # done with the previous view (a channel asks first)
        decoder.feed(encoder.encode_bytes(7, payload))
        frame_type, view = decoder.next_view()  # type: ignore[misc]
        assert (frame_type, view) == (7, payload)
        buffers.add(id(view.obj))
    assert len(buffers) == 1


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305"])
def test_plain_frames_are_not_copied_on_encode_and_parts_concatenate(cipher: str) -> None:
    encoder, decoder = pair(False, cipher=cipher)
    payload = bytearray(b"x" * 100)
    buffers = encoder.encode_parts(9, [b"ab", payload])
    assert buffers[-2] is payload  # handed to sendmsg as is, followed by its tag
    assert len(buffers[-1]) == TAG_SIZE
    decoder.feed(b"".join(bytes(b) for b in buffers))
    assert drain(decoder) == [(9, b"ab" + bytes(payload))]
    encrypted, opener = pair(True)
    opener.feed(b"".join(bytes(b) for b in encrypted.encode_parts(9, [b"ab", payload])))
    assert drain(opener) == [(9, b"ab" + bytes(payload))]


@pytest.mark.parametrize("encrypted", [False, True])
def test_oversize_frames_are_refused_from_the_header(encrypted: bool) -> None:
    _, decoder = pair(encrypted, max_payload=1000)
    overhead = TAG_SIZE  # every frame carries a tag
    with pytest.raises(FrameError, match="exceeds the limit"):
        decoder.feed(HEADER.pack(1, 1001 + overhead))  # refused before any body arrives
    with pytest.raises(FrameError, match="exceeds the limit"):  # and it stays failed
        decoder.feed(b"more")
    huge = FrameDecoder(max_payload=1000, cipher="aes-256-gcm", key=KEY_A)
    with pytest.raises(FrameError):
        huge.feed(b"\x01\xff\xff\xff\xff")  # a 4 GiB claim
    encoder, _ = pair(encrypted, max_payload=1000)
    with pytest.raises(FrameError, match="exceeds the peer's limit"):
        encoder.encode(1, bytes(1001))
    with pytest.raises(FrameError, match="type"):
        encoder.encode(256, b"")


@pytest.mark.parametrize("encrypted", [False, True])
def test_truncated_frames_are_errors_at_eof(encrypted: bool) -> None:
    encoder, _ = pair(encrypted)
    wire = encoder.encode_bytes(1, b"payload")
    for cut in (2, len(wire) - 1):
        _, decoder = pair(encrypted)
        decoder.feed(wire[:cut])
        assert decoder.next_frame() is None
        with pytest.raises(FrameError, match="closed"):
            decoder.eof()
    _, decoder = pair(encrypted)
    with pytest.raises(FrameError, match="shorter than"):
        decoder.feed(HEADER.pack(1, TAG_SIZE - 1))


@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305"])
def test_tampered_replayed_reordered_and_misdirected_frames_fail_authentication(
    encrypted: bool, cipher: str
) -> None:
    encoder, _ = pair(encrypted, cipher=cipher)
    first, second = encoder.encode_bytes(1, b"first frame"), encoder.encode_bytes(1, b"second frame")

    for position in (0, 3, HEADER.size + 2, len(first) - 1):  # type, length, payload, tag
        tampered = bytearray(first)
        tampered[position] ^= 0x01
        _, decoder = pair(encrypted, cipher=cipher)
        with pytest.raises(FrameError):  # a changed length is refused as truncated/oversize or forged
            decoder.feed(bytes(tampered))
            decoder.eof()
    for injected in (HEADER.pack(1, 5) + b"bogus", HEADER.pack(1, 21) + bytes(21)):  # no key, no frame
        _, decoder = pair(encrypted, cipher=cipher)
        with pytest.raises(FrameError):
            decoder.feed(injected)

    _, decoder = pair(encrypted, cipher=cipher)
    decoder.feed(first)
    with pytest.raises(FrameAuthenticationError, match="replayed"):
        decoder.feed(first)  # replay: frame 0's nonce is used up
    _, decoder = pair(encrypted, cipher=cipher)
    with pytest.raises(FrameAuthenticationError):
        decoder.feed(second)  # reordered: the decoder expects frame 0 first
    other = FrameDecoder(cipher=cipher, key=KEY_B, encrypt=encrypted)  # the other direction's key
    with pytest.raises(FrameAuthenticationError):
        other.feed(first)
    with pytest.raises(FrameAuthenticationError):
        other.next_frame()  # errors are sticky: nothing after a failure is delivered


def test_chacha_round_trip() -> None:
    encoder = FrameEncoder(cipher="chacha20-poly1305", key=KEY_A)
    decoder = FrameDecoder(cipher="chacha20-poly1305", key=KEY_A)
    decoder.feed(encoder.encode_bytes(2, b"hello"))
    assert drain(decoder) == [(2, b"hello")]


# -- handshake (sans-IO) --------------------------------------------------------------------------


def test_control_messages_are_bounded_and_validated() -> None:
    request = ChannelRequest("blocks/1", "plain", ("aes-256-gcm",), 1 << 20)
    assert ChannelRequest.decode(request.encode()[2:]) == request
    for bad in (
        b"\xff\xff",  # not CBOR
        cbor2.dumps([1, 2]),  # not a map
        cbor2.dumps({"v": 2, "purpose": "x", "mode": "plain", "ciphers": [], "max": 1}),
        cbor2.dumps({"v": 1, "purpose": "x", "mode": "sideways", "ciphers": [], "max": 1}),
        cbor2.dumps({"v": 1, "purpose": "", "mode": "plain", "ciphers": [], "max": 1}),
        cbor2.dumps({"v": 1, "purpose": "x", "mode": "plain", "ciphers": [], "max": 1 << 40}),
        cbor2.dumps({"v": 1, "purpose": "x", "mode": "plain", "ciphers": ["a"] * 100, "max": 1}),
        bytes(2000),  # oversize
    ):
        with pytest.raises(HandshakeError):
            ChannelRequest.decode(bad)
    grant = TicketGrant(4001, bytes(16), bytes(32), "aes-256-gcm", 1 << 20, 10.0)
    assert decode_response(encode_response(grant)[2:]) == grant
    assert decode_response(encode_response(Refusal("no"))[2:]) == Refusal("no")
    with pytest.raises(HandshakeError, match="wrong size"):
        decode_response(
            encode_control(
                {
                    "ok": True,
                    "port": 1,
                    "ticket": b"x",
                    "secret": bytes(32),
                    "cipher": "",
                    "max": 1,
                    "ttl_ms": 1,
                }
            )[2:]
        )


def test_tickets_are_single_use_expire_and_are_bounded_per_peer() -> None:
    book = TicketBook(ttl_s=10, max_per_peer=2)
    request = ChannelRequest("p", "plain", (), 1024)
    aes = "aes-256-gcm"
    ticket = book.issue(b"peer-a", request, aes, now=0)
    assert book.redeem(ticket.ticket_id, now=1) == ticket
    with pytest.raises(HandshakeError, match="already used"):
        book.redeem(ticket.ticket_id, now=1)
    late = book.issue(b"peer-a", request, aes, now=0)
    with pytest.raises(HandshakeError, match="expired"):
        book.redeem(late.ticket_id, now=10)
    book.issue(b"peer-a", request, aes, now=20)
    book.issue(b"peer-a", request, aes, now=20)
    with pytest.raises(RefusedError, match=r"busy: .*this peer"):
        book.issue(b"peer-a", request, aes, now=20)
    book.issue(b"peer-b", request, aes, now=20)  # other peers are not affected
    book.issue(b"peer-a", request, aes, now=31)  # expired ones no longer count
    assert book.resources.used("bulk.tickets") == 1  # and gave their share back


def test_tickets_are_bounded_in_total_and_peer_ids_cannot_take_them_all() -> None:
    book = TicketBook(ttl_s=5, max_per_peer=2, max_total=4)
    request = ChannelRequest("p", "plain", (), 1024)
    for sybil in (b"s1", b"s2"):
        for _ in range(2):
            book.issue(sybil, request, "aes-256-gcm", now=0)
    with pytest.raises(RefusedError, match=r"busy: .*in total"):
        book.issue(b"honest", request, "aes-256-gcm", now=1)
    book.issue(b"honest", request, "aes-256-gcm", now=5)  # tickets expire fast: the total frees up


def test_mutual_proofs_bind_the_transcript() -> None:
    secret = os.urandom(32)
    transcript = Transcript(
        os.urandom(16), b"server", b"client", "blocks/1", "encrypted", "aes-256-gcm", new_nonce()
    )
    hello = client_hello(secret, transcript)
    assert len(hello) == HELLO_SIZE
    ticket_id, nonce, mac = parse_client_hello(hello)
    assert (ticket_id, nonce) == (transcript.ticket_id, transcript.client_nonce)
    check_client_mac(secret, transcript, mac)
    for forged in (
        Transcript(ticket_id, b"server", b"mallory", "blocks/1", "encrypted", "aes-256-gcm", nonce),
        Transcript(ticket_id, b"server", b"client", "blocks/1", "plain", None, nonce),  # downgrade
    ):
        with pytest.raises(HandshakeError, match="client's proof"):
            check_client_mac(secret, forged, mac)
    with pytest.raises(HandshakeError, match="client's proof"):
        check_client_mac(os.urandom(32), transcript, mac)
    server_nonce = new_nonce()
    reply = server_reply(secret, transcript, server_nonce)
    assert len(reply) == REPLY_SIZE
    assert check_server_reply(secret, transcript, reply) == server_nonce
    with pytest.raises(HandshakeError, match="server's proof"):
        check_server_reply(os.urandom(32), transcript, reply)
    with pytest.raises(HandshakeError):
        parse_client_hello(b"GET / HTTP/1.1\r\n".ljust(HELLO_SIZE, b"x"))
    c2s, s2c = derive_keys(secret, transcript, server_nonce)
    assert c2s != s2c and len(c2s) == len(s2c) == 32


# -- the service between real hosts --------------------------------------------------------------


@dataclass
class Node:
    host: IHost
    bulk: BulkService
    fetcher: BlockFetcher
    bad_reports: list[ID]

    @property
    def id(self) -> ID:
        return self.host.get_id()


@asynccontextmanager
async def nodes(count: int, **bulk_options: float) -> AsyncIterator[list[Node]]:
    """``count`` hosts on 127.0.0.1, each with a bulk service and a fetcher; the last dials the rest."""
    async with trio.open_nursery() as nursery:
        made = []
        for _ in range(count):
            host = build_host(generate_identity(), HostSettings(listen_addrs=LOOPBACK))
            addrs = await nursery.start(run_host, host, LOOPBACK)
            bulk = BulkService(host, **bulk_options)  # type: ignore[arg-type]
            await nursery.start(bulk.run)
            reports: list[ID] = []
            fetcher = BlockFetcher(bulk, on_bad_block=reports.append)
            made.append((Node(host, bulk, fetcher, reports), addrs[0]))
        for node, addr in made[:-1]:
            await dial(made[-1][0].host, node.id, addr, timeout_s=5)
        yield [node for node, _ in made]
        nursery.cancel_scope.cancel()


async def echo_sizes(channel: Channel, peer_id: ID) -> None:
    """Echo every frame back with its type, then close."""
    async for frame in channel:
        await channel.send(frame.payload, frame_type=frame.type)


@pytest.mark.parametrize("encrypted", [False, True])
async def test_channel_carries_frames_both_ways(encrypted: bool) -> None:
    async with nodes(2) as (server, client):
        seen: list[ID] = []

        async def handler(channel: Channel, peer_id: ID) -> None:
            seen.append(peer_id)
            assert channel.encrypted == encrypted
            await echo_sizes(channel, peer_id)

        server.bulk.set_handler("echo", handler)
        payloads = [b"", b"small", os.urandom(4 * 1024 * 1024)]
        with trio.fail_after(20):
            async with client.bulk.open(server.id, "echo", encrypted=encrypted) as channel:
                assert channel.cipher == "aes-256-gcm"  # plain channels are authenticated too
                assert channel.authenticated
                for i, payload in enumerate(payloads):
                    await channel.send(payload, frame_type=i)
                for i, payload in enumerate(payloads):
                    frame = await channel.receive()
                    assert (frame.type, frame.payload) == (i, payload)
                await channel.send_eof()
                with pytest.raises(ChannelClosed):
                    await channel.receive()
                with pytest.raises(FrameError, match="peer's limit"):
                    await channel.send(bytes(4 * 1024 * 1024 + 1))
        assert seen == [client.id]  # the handler learns the libp2p-authenticated peer id


async def test_refusals_are_clear() -> None:
    async with nodes(2) as (server, client):
        with trio.fail_after(10), pytest.raises(RefusedError, match="no handler for purpose 'nothing'"):
            async with client.bulk.open(server.id, "nothing", encrypted=False):
                pass
        server.bulk.set_handler("private", echo_sizes, require_encryption=True)
        with trio.fail_after(10), pytest.raises(RefusedError, match="requires an encrypted channel"):
            async with client.bulk.open(server.id, "private", encrypted=False):
                pass
        with trio.fail_after(10):
            async with client.bulk.open(server.id, "private", encrypted=True) as channel:
                await channel.send(b"ok")
                assert (await channel.receive()).payload == b"ok"


async def raw_connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def read_all(stream: trio.SocketStream) -> bytes:
    """What the server says before it closes (a reset counts as closing: unread input was left)."""
    data = b""
    try:
        while chunk := await stream.receive_some(4096):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


async def test_bad_tickets_and_strangers_are_dropped_and_the_server_keeps_serving() -> None:
    async with nodes(2, handshake_timeout_s=0.5, ticket_ttl_s=1.0) as (server, client):
        server.bulk.set_handler("echo", echo_sizes)
        port = server.bulk.port
        request = ChannelRequest("echo", "plain", ("aes-256-gcm",), 1 << 20)
        with trio.fail_after(20):
            # A stranger with no ticket, one speaking garbage, one that never speaks (slowloris).
            for opening in (b"", b"GET / HTTP/1.1\r\n\r\n" * 10, None):
                stream = await raw_connect(port)
                if opening is None:
                    assert await read_all(stream) == b""  # closed after the handshake timeout
                else:
                    await stream.send_all(opening.ljust(HELLO_SIZE, b"\0") if opening else bytes(HELLO_SIZE))
                    assert await read_all(stream) == b""
                await stream.aclose()

            def hello(grant: TicketGrant, secret: bytes) -> bytes:
                transcript = Transcript(
                    grant.ticket_id,
                    server.id.to_bytes(),
                    client.id.to_bytes(),
                    "echo",
                    "plain",
                    grant.cipher,
                    new_nonce(),
                )
                return client_hello(secret, transcript)

            # Wrong MAC (a secret we were not given): refused, and the ticket is burnt.
            grant, _ = await client.bulk._request_ticket(server.id, request)
            stream = await raw_connect(port)
            await stream.send_all(hello(grant, os.urandom(32)))
            assert await read_all(stream) == b""
            stream = await raw_connect(port)
            await stream.send_all(hello(grant, grant.secret))
            assert await read_all(stream) == b""

            # A good ticket works once; reusing it is refused.
            grant, _ = await client.bulk._request_ticket(server.id, request)
            stream = await raw_connect(port)
            await stream.send_all(hello(grant, grant.secret))
            reply = await stream.receive_some(REPLY_SIZE)
            assert reply.startswith(MAGIC)
            await stream.aclose()
            stream = await raw_connect(port)
            await stream.send_all(hello(grant, grant.secret))
            assert await read_all(stream) == b""

            # An expired ticket is refused.
            grant, _ = await client.bulk._request_ticket(server.id, request)
            await trio.sleep(1.1)
            stream = await raw_connect(port)
            await stream.send_all(hello(grant, grant.secret))
            assert await read_all(stream) == b""

            # Through all that, the service still serves.
            async with client.bulk.open(server.id, "echo", encrypted=True) as channel:
                await channel.send(b"still here")
                assert (await channel.receive()).payload == b"still here"
        assert server.bulk.refused_connections >= 7


# -- blocks over bulk channels --------------------------------------------------------------------


def test_blocks_frames_round_trip_and_refuse_bad_tables() -> None:
    entries = [b"one", None, b"", b"three" * 1000]
    wire = b"".join(encode_blocks(entries))
    assert decode_blocks(wire) == entries
    truncated_table = b"\x00\x02\x00\x00\x00\x01"
    for bad in (b"", b"\x00\x00", truncated_table, wire[:-1], wire + b"x", b"\xff\xff" + wire[2:]):
        with pytest.raises(FrameError):
            decode_blocks(bad)
    with pytest.raises(ValueError):
        encode_blocks([])


def file_blocks(size: int, seed: int = 1) -> tuple[CID, bytes, dict[CID, bytes]]:
    data = random.Random(seed).randbytes(size)
    result, blocks = import_bytes(data)
    return result.root, data, blocks


def getter(blocks: dict[CID, bytes]):  # type: ignore[no-untyped-def]
    return lambda raw: blocks.get(CID.decode(raw))


async def collect(node: Node, cids: list[CID], providers: list[ID]) -> dict[CID, bytes]:
    got: dict[CID, bytes] = {}
    async with node.fetcher.fetch(cids, providers, timeout_s=10) as blocks:
        async for cid, data in blocks:
            assert cid not in got
            got[cid] = data
    return got


async def test_fetch_a_multi_megabyte_file_dag_byte_identical() -> None:
    root, data, blocks = file_blocks(6 * 1024 * 1024 + 12345)
    async with nodes(2) as (provider, client):
        server = serve_blocks(provider.bulk, getter(blocks))
        with trio.fail_after(30):
            got = await collect(client, list(blocks), [provider.id])
        assert got == blocks
        assert read_bytes(root, got.__getitem__) == data
        assert server.blocks_sent == len(blocks)
        assert client.bad_reports == []


async def test_tampered_block_is_rejected_reported_and_fetched_elsewhere() -> None:
    _, _, blocks = file_blocks(2 * 1024 * 1024, seed=2)
    victim = list(blocks)[3]
    tampered = dict(blocks)
    tampered[victim] = blocks[victim][:-1] + bytes([blocks[victim][-1] ^ 1])
    async with nodes(3) as (liar, honest, client):
        serve_blocks(liar.bulk, getter(tampered))
        with trio.fail_after(30), pytest.raises(BlocksNotFoundError) as caught:
            await collect(client, list(blocks), [liar.id])
        assert victim in caught.value.missing
        assert client.bad_reports == [liar.id]

        serve_blocks(honest.bulk, getter(blocks))
        with trio.fail_after(30):
            got = await collect(client, list(blocks), [liar.id, honest.id])
        assert got == blocks  # the honest provider supplied what the liar spoiled (or stole it first)
        assert set(client.bad_reports) == {liar.id}


async def test_two_providers_in_parallel_and_missing_blocks_are_listed() -> None:
    _, _, blocks = file_blocks(12 * 1024 * 1024, seed=3)
    cids = list(blocks)
    absent = [CID.compute(os.urandom(100)) for _ in range(3)]

    def slow(raw: bytes) -> bytes | None:
        time.sleep(0.01)  # a disk-bound provider (runs in a worker thread): neither can outrun the
        return blocks.get(CID.decode(raw))  # other before both are connected, so both must serve

    async with nodes(3) as (a, b, client):
        serve_blocks(a.bulk, slow)
        serve_blocks(b.bulk, slow)
        with trio.fail_after(30):
            got = await collect(client, cids, [a.id, b.id])
        assert got == blocks
        assert client.fetcher.blocks_received[a.id] > 0 and client.fetcher.blocks_received[b.id] > 0

        # Each provider holds only half: DONT_HAVEs move wants to the other; the rest is listed.
        halves = [dict(list(blocks.items())[0::2]), dict(list(blocks.items())[1::2])]
        serve_blocks(a.bulk, getter(halves[0]))
        serve_blocks(b.bulk, getter(halves[1]))
        found: dict[CID, bytes] = {}
        with trio.fail_after(30), pytest.raises(BlocksNotFoundError, match="3 of") as caught:
            async with client.fetcher.fetch(
                [*cids[:5], absent[0], *cids[5:], *absent[1:]], [a.id, b.id], timeout_s=10
            ) as found_blocks:
                async for cid, data in found_blocks:
                    found[cid] = data
        assert found == blocks
        assert caught.value.missing == absent


async def test_block_server_answers_bad_wants_with_an_error_and_keeps_serving() -> None:
    _, _, blocks = file_blocks(300 * 1024, seed=4)
    async with nodes(2) as (provider, client):
        serve_blocks(provider.bulk, getter(blocks))
        with trio.fail_after(20):
            async with client.bulk.open(provider.id, "blocks/1", encrypted=False) as channel:
                await channel.send(cbor2.dumps(["not", "cids"]), frame_type=WANT)
                frame = await channel.receive()
                assert frame.type == ERROR and b"binary CIDs" in frame.payload
            async with client.bulk.open(provider.id, "blocks/1", encrypted=True) as channel:
                await channel.send(encode_wants(list(blocks)), frame_type=WANT)
                await channel.send(b"", frame_type=END)
                received: list[bytes | None] = []
                async for frame in channel:  # in want order, several blocks per frame
                    assert frame.type == BLOCKS
                    received += decode_blocks(frame.payload)
                assert received == list(blocks.values())
        with pytest.raises(FrameError):
            decode_wants(cbor2.dumps([b"\x01\x55\x12\x20" + bytes(31)]))


async def test_fetch_from_unreachable_or_refusing_provider_lists_everything() -> None:
    _, _, blocks = file_blocks(600 * 1024, seed=5)
    async with nodes(2) as (no_server, client):  # no serve_blocks: the purpose has no handler
        with trio.fail_after(20), pytest.raises(BlocksNotFoundError) as caught:
            await collect(client, list(blocks), [no_server.id])
        assert caught.value.missing == list(blocks)


async def test_want_queue_splits_steals_retries_and_gives_up() -> None:
    from p2p.bulk.fetch import _Want, _WantQueue

    a, b = ID(b"provider-a"), ID(b"provider-b")
    wants = [_Want(CID.compute(bytes([i])), i) for i in range(10)]
    queue = _WantQueue(wants, [a, b])
    assert [w.index for w in await queue.take(a, 3)] == [0, 1, 2]  # contiguous shares
    assert [w.index for w in await queue.take(b, 3)] == [5, 6, 7]
    assert [w.index for w in await queue.take(a, 10, steal=lambda: False)] == [3, 4]
    assert [w.index for w in await queue.take(a, 10)] == [9]  # steals half of b's rest, from the end
    queue.fail(wants[0], a)  # a lacks block 0: b may still have it
    assert [w.index for w in await queue.take(b, 10)] == [0, 8]
    queue.fail(wants[0], b)  # nobody has it
    assert queue.missing == [wants[0]]
    for want in wants[1:]:
        queue.resolve(want)
    assert queue.open == 0 and await queue.take(a, 10) == []


async def test_a_provider_that_quits_or_stalls_mid_fetch_is_replaced() -> None:
    _, _, blocks = file_blocks(3 * 1024 * 1024, seed=6)
    values = list(blocks.values())

    async def quitter(channel: Channel, peer_id: ID) -> None:
        await channel.receive()  # the first WANT
        await channel.send_parts(encode_blocks(values[:2]), frame_type=BLOCKS)
        # ... and hang up with wants open

    async def staller(channel: Channel, peer_id: ID) -> None:
        await channel.receive()
        await trio.sleep_forever()

    async with nodes(3) as (flaky, honest, client):
        serve_blocks(honest.bulk, getter(blocks))
        for handler in (quitter, staller):
            flaky.bulk.set_handler("blocks/1", handler)
            with trio.fail_after(20):
                got = {}
                async with client.fetcher.fetch(
                    list(blocks), [flaky.id, honest.id], timeout_s=0.5
                ) as arriving:
                    async for cid, data in arriving:
                        got[cid] = data
            assert got == blocks


async def test_cids_with_unsupported_hashes_are_reported_missing_without_a_network_round() -> None:
    sha512 = CID(1, 0x55, bytes([0x13, 0x40]) + bytes(64))
    async with nodes(2) as (provider, client):
        serve_blocks(provider.bulk, lambda raw: None)
        with trio.fail_after(10), pytest.raises(BlocksNotFoundError, match="other than sha2-256") as caught:
            await collect(client, [sha512], [provider.id])
        assert caught.value.missing == [sha512]
        assert await collect(client, [], [provider.id]) == {}


async def test_a_channel_to_ourselves_is_served_in_memory_by_our_own_handlers() -> None:
    async with nodes(1) as (node,):
        node.bulk.set_handler("echo", echo_sizes, require_encryption=True)
        with trio.fail_after(10):
            with pytest.raises(RefusedError, match="requires an encrypted channel"):
                async with node.bulk.open(node.id, "echo", encrypted=False):
                    pass
            async with node.bulk.open(node.id, "echo") as channel:
                assert channel.encrypted and channel.peer_id == node.id
                await channel.send(b"to myself", frame_type=4)
                frame = await channel.receive()
                assert (frame.type, frame.payload) == (4, b"to myself")
        assert node.bulk.loopback_channels == 1 and node.bulk.refused_connections == 0
