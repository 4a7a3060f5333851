"""Byte-level helpers of the bulk service: exact reads for the TCP handshake, length-prefixed control
messages on libp2p streams, and which IPs to listen on.

Kept apart from :mod:`p2p.bulk.service` (which runs the protocol) because they are plain functions of a
stream or of addresses, each bounded: a control message over ``MAX_CONTROL_MESSAGE`` is refused from its
length prefix, before it is read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio
from libp2p.abc import INetStream
from multiaddr import Multiaddr

from p2p.bulk.errors import HandshakeError
from p2p.bulk.handshake import CONTROL_LENGTH, MAX_CONTROL_MESSAGE

log = logging.getLogger(__name__)


async def read_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise HandshakeError(f"connection closed after {len(data)} of {size} handshake bytes")
        data += chunk
    return bytes(data)


async def read_control(stream: INetStream) -> bytes:
    """A u16-length-prefixed control message from a libp2p stream, at most MAX_CONTROL_MESSAGE bytes."""
    data = b""
    need = CONTROL_LENGTH.size
    header_done = False
    while True:
        while len(data) < need:
            chunk = await stream.read(need - len(data))
            if not chunk:
                raise HandshakeError("stream closed before the end of a control message")
            data += chunk
        if header_done:
            return data[CONTROL_LENGTH.size :]
        (length,) = CONTROL_LENGTH.unpack(data)
        if length > MAX_CONTROL_MESSAGE:
            raise HandshakeError(f"control message of {length} bytes exceeds {MAX_CONTROL_MESSAGE}")
        need += length
        header_done = True


def ips_of(addrs: Sequence[Multiaddr]) -> list[str]:
    ips: list[str] = []
    for addr in addrs:
        names = [p.name for p in addr.protocols()]
        if names and names[0] in ("ip4", "ip6"):
            ip = str(addr.value_for_protocol(names[0]))
            if ip not in ips:
                ips.append(ip)
    return ips


_WILDCARDS = {"ip4": "0.0.0.0", "ip6": "::"}  # noqa: S104 - compared with, not bound here


def bindable(ips: Sequence[str]) -> list[str]:
    """``ips`` without the addresses a wildcard of the same family already covers."""
    unique = list(dict.fromkeys(ips))
    covered = {family for family, wildcard in _WILDCARDS.items() if wildcard in unique}
    return [
        ip for ip in unique if ip in _WILDCARDS.values() or ("ip6" if ":" in ip else "ip4") not in covered
    ]


async def quiet_reset(stream: INetStream) -> None:
    try:
        await stream.reset()
    except Exception as exc:  # already broken; nothing to add
        log.debug("bulk stream reset failed", extra={"error": str(exc)})
