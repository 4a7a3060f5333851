"""Building and running a py-libp2p host with the transport choices accel-node relies on.

Choices and why (measured with py-libp2p 0.8.1 on loopback, see DESIGN.md):
- Security: Noise only. ``new_host``'s default also offers TLS, SECIO and *plaintext*; passing
  ``sec_opt`` explicitly is the only way to refuse unauthenticated peers.
- Muxer: yamux (mplex is ~8x slower).
- ``max_connections_per_peer=1``: the default (3) makes every dial wait a 250 ms "happy eyeballs"
  delay for parallel connections we do not want.
- Identify, identify-push and ping handlers are registered by py-libp2p's defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from multiaddr import Multiaddr
from trio_typing import TaskStatus

from p2p.addrs import expand_wildcard
from p2p.errors import DialError
from p2p.liblogs import route_libp2p_logs

log = logging.getLogger(__name__)
route_libp2p_logs()  # py-libp2p's records go through the application's logging (see p2p.liblogs)


@dataclass(frozen=True)
class HostSettings:
    """What a host listens on and how it discovers peers."""

    listen_addrs: Sequence[Multiaddr]
    negotiate_timeout_s: int = 10
    # Connection manager (go-libp2p's connmgr watermarks): py-libp2p dials known peers while the
    # connection count is below the midpoint of the watermarks and prunes above the high one.
    auto_connect: bool = False
    low_water: int = 32
    high_water: int = 96


def build_host(key_pair: KeyPair, settings: HostSettings) -> IHost:
    """Create (but do not start) a Noise-only, yamux host for ``key_pair``."""
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_preference="YAMUX",
        listen_addrs=list(settings.listen_addrs),
        enable_mDNS=False,  # see p2p.mdns: py-libp2p's own start-up blocks the event loop
        negotiate_timeout=settings.negotiate_timeout_s,
        connection_config=ConnectionConfig(
            max_connections_per_peer=1,
            min_connections=0,
            low_watermark=settings.low_water,
            high_watermark=settings.high_water,
            max_connections=max(settings.high_water * 2, 64),
        ),
    )


async def run_host(
    host: IHost,
    listen_addrs: Sequence[Multiaddr],
    *,
    auto_connect: bool = False,
    task_status: TaskStatus[list[Multiaddr]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``listen_addrs`` until cancelled; reports the dialable addresses when ready."""
    async with host.run(list(listen_addrs)):
        if not auto_connect:
            # py-libp2p starts its auto-connector with the swarm; stopping it keeps the node to
            # the peers it dials itself (bootstrap, mDNS, API) and the ones that dial it.
            await host.get_network().auto_connector.stop()  # type: ignore[attr-defined]
        addrs = listening_addrs(host)
        log.info(
            "libp2p host listening",
            extra={"peer_id": str(host.get_id()), "addrs": [str(a) for a in addrs]},
        )
        task_status.started(addrs)
        await trio.sleep_forever()


def listening_addrs(host: IHost) -> list[Multiaddr]:
    """The host's transport addresses with wildcards expanded, without ``/p2p``."""
    return expand_wildcard(list(host.get_transport_addrs()))


async def dial(host: IHost, peer_id: ID, addr: Multiaddr, *, timeout_s: float) -> None:
    """Connect to ``peer_id`` at ``addr``; raises :class:`DialError` on failure or timeout."""
    if peer_id == host.get_id():
        raise DialError("refusing to dial our own peer id")
    with trio.move_on_after(timeout_s) as scope:
        try:
            await host.connect(PeerInfo(peer_id, [addr]))
        except Exception as exc:  # py-libp2p raises a wide, unstable set of error types
            raise DialError(f"could not connect to {peer_id} at {addr}: {_describe(exc)}") from exc
    if scope.cancelled_caught:
        raise DialError(f"timed out after {timeout_s:g} s connecting to {peer_id} at {addr}")


def _describe(exc: BaseException) -> str:
    """A one-line cause for ``exc``, looking through py-libp2p's nested exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    while exc.__cause__ is not None and not str(exc):
        exc = exc.__cause__
    return str(exc) or type(exc).__name__
