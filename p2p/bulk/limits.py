"""What a remote peer (or, before authentication, a remote IP) can make the bulk service hold.

The bulk port is reachable from the whole network (it must be, for sharding across machines), so
everything a stranger can occupy is bounded with :class:`p2p.resources.ResourceManager`, per scope
and in total:

- ``bulk.pending_handshakes``, scope ``ip:<addr>`` (:func:`ip_scope`): TCP connections that have
  not yet proved a ticket. Before the proof the only identity is the remote IP, so one IP holds at most
  ``pending_handshakes_per_ip`` of the ``pending_handshakes`` slots, and each has
  ``handshake_timeout_s`` to prove its ticket. A flood of idle sockets from one IP then costs that
  IP its own slots only; handshakes from other IPs go on.
- ``bulk.tickets``, scope peer id: granted, unredeemed tickets; they expire after ``ticket_ttl_s``
  (a client redeems its ticket at once, so a few seconds is plenty).
- ``bulk.channels``, scope peer id: channels being served. Over the limit the peer's next request is
  refused ("busy") at the libp2p step, before any socket is opened.

An accepted channel that carries no frame in either direction for ``idle_timeout_s`` is closed,
so channels cannot be parked forever. Over any limit the peer gets a refusal (or, before
authentication, a closed socket) at once, never a wait that stalls other peers; each is reported
as a :class:`~p2p.events.SecurityEvent`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields

import trio

from p2p.events import EventSink, EventThrottle, SecurityEvent
from p2p.resources import Limit, ResourceManager

PENDING_HANDSHAKES = "bulk.pending_handshakes"
TICKETS = "bulk.tickets"
CHANNELS = "bulk.channels"


def ip_scope(ip: str) -> str:
    """The scope key of a remote IP before authentication: ``ip:<addr>`` for IPv4 (IPv4-mapped
    IPv6 included), ``ip:<prefix>/64`` for IPv6, since one host there commonly holds a whole /64."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return f"ip:{ip}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        return f"ip:{ipaddress.ip_network(f'{address}/64', strict=False)}"
    return f"ip:{address}"


@dataclass(frozen=True)
class BulkLimits:
    """The bounds of one bulk service (see the module docstring); defaults fit a node on an open network."""

    handshake_timeout_s: float = 3.0
    pending_handshakes_per_ip: int = 8
    pending_handshakes: int = 64
    tickets_per_peer: int = 8
    tickets: int = 256
    ticket_ttl_s: float = 5.0
    channels_per_peer: int = 32
    channels: int = 256
    idle_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        for field in fields(self):
            if getattr(self, field.name) <= 0:
                raise ValueError(f"bulk limit {field.name} must be positive")
        for per, total in (
            ("pending_handshakes_per_ip", "pending_handshakes"),
            ("tickets_per_peer", "tickets"),
            ("channels_per_peer", "channels"),
        ):
            if getattr(self, per) > getattr(self, total):
                raise ValueError(f"bulk limit {per} must not exceed {total}")

    def declare(self, resources: ResourceManager) -> None:
        """Set this service's limits on ``resources`` (tickets: :class:`~p2p.bulk.handshake.TicketBook`)."""
        resources.set_limit(
            PENDING_HANDSHAKES, Limit(self.pending_handshakes_per_ip, self.pending_handshakes)
        )
        resources.set_limit(CHANNELS, Limit(self.channels_per_peer, self.channels))


class EventReporter:
    """Reports :class:`~p2p.events.SecurityEvent` s to ``sink``, at most one per ``(kind, key)`` every
    ``every_s`` seconds (a flood of refused sockets must not flood the audit log); the next event
    of a key says how many were left out (``suppressed``). Keys kept are bounded by ``max_keys``."""

    def __init__(
        self, sink: EventSink, *, protocol: str, every_s: float = 10.0, max_keys: int = 1024
    ) -> None:
        self.sink = sink
        self.protocol = protocol
        self._throttle = EventThrottle(every_s=every_s, max_keys=max_keys)

    def report(
        self,
        kind: str,
        key: str,
        reason: str,
        *,
        peer: str | None = None,
        **details: str | int | float | bool,
    ) -> None:
        suppressed = self._throttle.admit((kind, key), trio.current_time())
        if suppressed is None:
            return
        if suppressed:
            details["suppressed"] = suppressed
        self.sink(SecurityEvent(kind, self.protocol, peer, reason, details))
