"""The p2p substrate on real py-libp2p hosts over loopback."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from libp2p import new_host
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from multiaddr import Multiaddr

from p2p.addrs import expand_wildcard, parse_listen_addr, parse_peer_addr
from p2p.errors import DialError, IdentityError, InvalidAddressError
from p2p.host import HostSettings, build_host, dial, run_host
from p2p.identity import (
    generate_identity,
    load_identity,
    load_or_create_identity,
    peer_id_of,
    write_private_file,
)
from p2p.ping import Pinger
from tests.support.daemons import Daemon

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]


def test_identity_round_trip_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "id.key"
    created = load_or_create_identity(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert peer_id_of(load_identity(path)) == peer_id_of(created)
    path.write_bytes(b"\x00" * 10_000)
    with pytest.raises(IdentityError, match="expected a small key file"):
        load_identity(path)


def test_private_file_writer_never_follows_a_planted_link(tmp_path: Path) -> None:
    # issue 11, finding 10: the writer opened ".<name>.tmp" with O_CREAT|O_TRUNC, following a link
    # planted there (the secret went to, or truncated, the link's target).
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "api.token"
    (tmp_path / ".api.token.tmp").symlink_to(victim)
    write_private_file(target, b"secret")
    assert victim.read_bytes() == b"precious"
    assert target.read_bytes() == b"secret" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not target.is_symlink()
    # A link at the target itself is refused, and nothing is left behind.
    link = tmp_path / "key"
    link.symlink_to(victim)
    with pytest.raises(IdentityError, match="symbolic link"):
        write_private_file(link, b"secret")
    assert victim.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".api.token.tmp", "api.token", "key", "victim"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ip4/1.2.3.4/tcp/1",
        "/ip4/999.1.1.1/tcp/1/p2p/x",
        "/ip4/1.2.3.4/tcp/1",
        "/ip4/1.2.3.4/udp/1/p2p/12D3KooWEodDWxbEep8zErZ2WVVsoTjryDVEBsXkuwaw5CNWC1Wd",
        "/ip4/1.2.3.4/tcp/1/p2p/Qmnotbase58!",
        "/" + "a" * 2000,
    ],
)
def test_bad_peer_addrs_are_rejected(text: str) -> None:
    with pytest.raises(InvalidAddressError):
        parse_peer_addr(text)


def test_peer_addr_splits_transport_and_peer_id() -> None:
    peer_id = peer_id_of(generate_identity())
    got_id, transport = parse_peer_addr(f"/ip4/10.0.0.1/tcp/4011/p2p/{peer_id}")
    assert got_id == peer_id and str(transport) == "/ip4/10.0.0.1/tcp/4011"


def test_listen_addrs_must_be_plain_tcp() -> None:
    assert str(parse_listen_addr("/ip6/::1/tcp/0")) == "/ip6/::1/tcp/0"
    for bad in (
        "/ip4/127.0.0.1/udp/1",
        "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWEodDWxbEep8zErZ2WVVsoTjryDVEBsXkuwaw5CNWC1Wd",
    ):
        with pytest.raises(InvalidAddressError):
            parse_listen_addr(bad)


def test_wildcard_expands_to_interface_addresses() -> None:
    expanded = expand_wildcard([Multiaddr("/ip4/0.0.0.0/tcp/4011")])
    assert Multiaddr("/ip4/127.0.0.1/tcp/4011") in expanded
    assert all("0.0.0.0" not in str(a) for a in expanded)
    assert str(expanded[-1]) == "/ip4/127.0.0.1/tcp/4011"  # loopback last: the first is for peers


async def test_noise_hosts_connect_and_measure_rtt() -> None:
    a = build_host(generate_identity(), HostSettings(listen_addrs=LOOPBACK))
    b = build_host(generate_identity(), HostSettings(listen_addrs=LOOPBACK))
    async with trio.open_nursery() as nursery:
        await nursery.start(run_host, a, LOOPBACK)
        b_addrs = await nursery.start(run_host, b, LOOPBACK)
        await dial(a, b.get_id(), b_addrs[0], timeout_s=5)
        assert b.get_id() in a.get_connected_peers()
        pinger = Pinger(a)
        rtts = [await pinger.rtt_ms(b.get_id()) for _ in range(5)]
        assert all(0 < r < 1000 for r in rtts)
        with pytest.raises(DialError, match="own peer id"):
            await dial(a, a.get_id(), b_addrs[0], timeout_s=5)
        nursery.cancel_scope.cancel()


async def test_dial_to_wrong_peer_id_fails() -> None:
    """Noise authenticates the remote key: dialing B's address expecting another id fails."""
    a = build_host(generate_identity(), HostSettings(listen_addrs=LOOPBACK))
    b = build_host(generate_identity(), HostSettings(listen_addrs=LOOPBACK))
    impostor: ID = peer_id_of(generate_identity())
    async with trio.open_nursery() as nursery:
        await nursery.start(run_host, a, LOOPBACK)
        b_addrs = await nursery.start(run_host, b, LOOPBACK)
        with pytest.raises(DialError):
            await dial(a, impostor, b_addrs[0], timeout_s=5)
        assert impostor not in a.get_connected_peers()
        nursery.cancel_scope.cancel()


@pytest.mark.multinode
async def test_plaintext_only_dialer_is_refused_by_daemon(
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = await trio.to_thread.run_sync(start_daemon)
    key_pair = generate_identity()
    plaintext_host = new_host(
        key_pair=key_pair,
        sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)},
        muxer_preference="YAMUX",
        connection_config=ConnectionConfig(max_connections_per_peer=1),
        listen_addrs=LOOPBACK,
    )
    peer_id, addr = parse_peer_addr(daemon.addr)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_host, plaintext_host, LOOPBACK)
        with pytest.raises(DialError):
            await dial(plaintext_host, peer_id, addr, timeout_s=10)
        nursery.cancel_scope.cancel()
    assert await trio.to_thread.run_sync(daemon.peer_ids) == set()
    # The daemon is unharmed and still serves.
    assert (await trio.to_thread.run_sync(daemon.api.node.status)).peer_id == daemon.peer_id
