"""Multiaddr parsing and validation.

Every address that comes from a user (config, API, CLI) goes through these functions, so that a
malformed address produces one clear :class:`~p2p.errors.InvalidAddressError` instead of whatever
the multiaddr library raises.
"""

from __future__ import annotations

import ipaddress
import socket

import psutil
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from p2p.errors import InvalidAddressError

MAX_ADDR_CHARS = 1024


def parse_multiaddr(text: str) -> Multiaddr:
    """Parse ``text`` as a multiaddr."""
    if not isinstance(text, str) or not text:
        raise InvalidAddressError("multiaddr must be a non-empty string")
    if len(text) > MAX_ADDR_CHARS:
        raise InvalidAddressError(f"multiaddr longer than {MAX_ADDR_CHARS} characters")
    if not text.startswith("/"):
        raise InvalidAddressError(f"invalid multiaddr {text!r}: must start with '/'")
    try:
        return Multiaddr(text)
    except Exception as exc:  # the multiaddr package raises several unrelated types
        raise InvalidAddressError(f"invalid multiaddr {text!r}: {exc}") from exc


def _protocol_names(addr: Multiaddr) -> list[str]:
    return [p.name for p in addr.protocols()]


def parse_listen_addr(text: str) -> Multiaddr:
    """Parse a TCP listen address such as ``/ip4/0.0.0.0/tcp/4011`` (no ``/p2p`` part)."""
    addr = parse_multiaddr(text)
    names = _protocol_names(addr)
    if len(names) != 2 or names[0] not in ("ip4", "ip6") or names[1] != "tcp":
        raise InvalidAddressError(
            f"invalid listen address {text!r}: expected /ip4/<addr>/tcp/<port> or /ip6/<addr>/tcp/<port>"
        )
    return addr


def parse_peer_addr(text: str) -> tuple[ID, Multiaddr]:
    """Parse a dialable peer address ending in ``/p2p/<peer-id>``.

    Returns the peer id and the transport part of the address (without ``/p2p``).
    """
    addr = parse_multiaddr(text)
    names = _protocol_names(addr)
    if not names or names[-1] != "p2p":
        raise InvalidAddressError(f"peer address {text!r} must end with /p2p/<peer-id>")
    if len(names) < 3 or names[0] not in ("ip4", "ip6", "dns", "dns4", "dns6") or names[1] != "tcp":
        raise InvalidAddressError(
            f"peer address {text!r} must look like /ip4/<addr>/tcp/<port>/p2p/<peer-id>"
        )
    peer_text = addr.value_for_protocol("p2p")
    try:
        peer_id = ID.from_base58(str(peer_text))
    except Exception as exc:
        raise InvalidAddressError(f"peer address {text!r} has an invalid peer id") from exc
    transport = addr.decapsulate(Multiaddr(f"/p2p/{peer_text}"))
    return peer_id, transport


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an IP address or ``localhost``) only accepts local connections."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def expand_wildcard(addrs: list[Multiaddr]) -> list[Multiaddr]:
    """Replace ``0.0.0.0`` / ``::`` listen addresses by one address per local interface.

    py-libp2p reports the wildcard as it was bound; peers cannot dial ``0.0.0.0``.
    """
    out: list[Multiaddr] = []
    interfaces = None
    for addr in addrs:
        names = _protocol_names(addr)
        family = names[0] if names else ""
        ip = addr.value_for_protocol(family) if family in ("ip4", "ip6") else None
        if ip not in ("0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
            out.append(addr)
            continue
        if interfaces is None:
            interfaces = psutil.net_if_addrs()
        rest = str(addr)[len(f"/{family}/{ip}") :]
        want = socket.AF_INET if family == "ip4" else socket.AF_INET6
        for entries in interfaces.values():
            for entry in entries:
                if entry.family == want and "%" not in entry.address:
                    out.append(Multiaddr(f"/{family}/{entry.address}{rest}"))
    # Stable order: loopback last, so the first address is the one most useful to peers.
    return sorted(dict.fromkeys(out), key=lambda a: "/127." in str(a) or "/::1/" in str(a))
