"""Bitswap between real py-libp2p hosts on loopback: serving, fetching, verification."""

from __future__ import annotations

import os

import pytest
import trio
from multiaddr import Multiaddr

from p2p.bitswap.errors import FetchError
from p2p.bitswap.protocol import (
    FrameReader,
    ProtocolError,
    encode_uvarint,
    parse_cid,
    parse_message,
    want_message,
)
from p2p.bitswap.service import BitswapService
from p2p.content.cid import CID, RAW
from p2p.host import HostSettings, build_host, dial, run_host
from p2p.identity import generate_identity

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]


def blocks(n: int, size: int = 256 * 1024) -> dict[bytes, bytes]:
    out = {}
    for _ in range(n):
        data = os.urandom(size)
        out[CID.compute(data, RAW, 1).encode()] = data
    return out


async def test_fetch_verified_blocks_from_two_providers() -> None:
    a_blocks, b_blocks = blocks(6), blocks(6)
    everything = {**a_blocks, **b_blocks}
    hosts = [build_host(generate_identity(), HostSettings(listen_addrs=LOOPBACK)) for _ in range(3)]
    async with trio.open_nursery() as nursery:
        addrs = [await nursery.start(run_host, h, LOOPBACK) for h in hosts]
        services = [
            BitswapService(hosts[0], everything.get),  # provider 1: has everything
            BitswapService(hosts[1], b_blocks.get),  # provider 2: has half
            BitswapService(hosts[2], lambda cid: None),  # the fetcher
        ]
        for service in services:
            await nursery.start(service.run)
        for i in (0, 1):
            await dial(hosts[2], hosts[i].get_id(), addrs[i][0], timeout_s=5)
        wanted = [CID.decode(raw) for raw in everything]
        got = {}
        with trio.fail_after(30):
            async for cid, data in services[2].fetch(
                wanted, [hosts[1].get_id(), hosts[0].get_id()], timeout_s=5
            ):
                got[cid.encode()] = data
        assert got == everything  # a's blocks asked of b first came back via DONT_HAVE -> a
        assert services[0].blocks_sent + services[1].blocks_sent == len(everything)
        nursery.cancel_scope.cancel()


async def test_tampered_blocks_are_discarded_and_the_fetch_fails_clearly() -> None:
    good = blocks(2, 1024)
    tampered = {cid: data[:-1] + bytes([data[-1] ^ 1]) for cid, data in good.items()}
    hosts = [build_host(generate_identity(), HostSettings(listen_addrs=LOOPBACK)) for _ in range(2)]
    async with trio.open_nursery() as nursery:
        addrs = [await nursery.start(run_host, h, LOOPBACK) for h in hosts]
        liar = BitswapService(hosts[0], tampered.get)
        fetcher = BitswapService(hosts[1], lambda cid: None)
        await nursery.start(liar.run)
        await nursery.start(fetcher.run)
        await dial(hosts[1], hosts[0].get_id(), addrs[0][0], timeout_s=5)
        with pytest.raises(FetchError, match="not available"), trio.fail_after(20):
            async for _ in fetcher.fetch([CID.decode(c) for c in good], [hosts[0].get_id()], timeout_s=1):
                raise AssertionError("a tampered block was accepted")
        assert fetcher.penalties.count(hosts[0].get_id()) >= 1
        # After repeated bad blocks the peer is no longer asked at all.
        for _ in range(3):
            with pytest.raises(FetchError), trio.fail_after(20):
                async for _ in fetcher.fetch([CID.decode(c) for c in good], [hosts[0].get_id()], timeout_s=1):
                    raise AssertionError("a tampered block was accepted")
        with pytest.raises(FetchError, match="penalised"):
            async for _ in fetcher.fetch([CID.decode(c) for c in good], [hosts[0].get_id()]):
                pass
        nursery.cancel_scope.cancel()


def test_frame_reader_bounds_and_reassembles() -> None:
    cid = CID.compute(b"hello", RAW, 1)
    message = want_message([cid])
    reader = FrameReader()
    assert reader.feed(message[:3]) == []
    (frame,) = reader.feed(message[3:])
    incoming = parse_message(frame)
    assert [(w, have) for w, have, _ in incoming.wants] == [(cid, False)]
    with pytest.raises(ProtocolError, match="exceeds"):
        FrameReader().feed(encode_uvarint(64 * 1024 * 1024))
    with pytest.raises(ProtocolError):
        parse_message(b"\x0a\xff\xff\xff")
    with pytest.raises(ProtocolError):
        parse_cid(b"\x01\x55\x13\x20" + bytes(32))  # not sha2-256
