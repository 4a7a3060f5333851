"""Admission at a stage server: what one upstream peer may make this node hold, and for how long.

Why (issue 11, findings 3 and 8): one semaphore per stage, awaited inside a channel's read loop and
shared by every upstream, let one peer pin all 64 slots of a stage with tiny RUNs whose ttl was an
hour and whose reply-to never acknowledged; a legitimate request then timed out. Messages of up to
256 MiB could wait 64 at a time per stage. Now, through the node's
:class:`~p2p.resources.ResourceManager`:

- ``shard.in_flight``: RUNs accepted and not yet computed, per upstream peer and in total, beside
  each stage's own cap (the server's ``max_in_flight``); ``shard.queued_bytes``: the bytes of their
  tensors; ``shard.awaiting``: RUNs computed and waiting for the rest of their chain, per reply-to
  peer (see below);
  ``shard.reassembly_bytes``: bytes of multi-part messages being reassembled
  (:mod:`accel_node.shard.parts`); ``shard.channels``: ``shard/1`` channels a peer holds open.
- Over a share the RUN is answered ``FAIL busy`` at once, from the read loop (which never waits
  for a slot): the peer's own channel is the only one that slows down, and it never blocks another
  peer's. Upstreams fail over to another replica; the router raises
  :class:`~accel_node.shard.errors.ShardBusyError` (the API's 429) when every replica was busy.
- :func:`run_deadline`: a RUN lives at most (stages left + 1) x the hop timeout, and never more
  than ``max_ttl_s``, whatever ttl its sender wrote; :func:`next_hop_ttl_ms` gives the next hop a
  little less than the time this server waits for it.

Who is to blame for a slot held by an undeliverable result: nobody that can be proven. The upstream
that sent the RUN is authenticated, but it usually only passed on the requester's reply-to (stage
k's upstream is stage k-1), and the reply-to peer that did not acknowledge may be a third party
that never asked for anything. So an undeliverable result penalises nobody. The wait is charged to the
party it is for: once a RUN is computed, its upstream's shares are given back and the RUN holds a
share of ``shard.awaiting`` (and of ``shard.queued_bytes``, for the output kept for replays) in the
name of its reply-to peer, until the chain answers. Charging the upstream would let a flooder pin,
through an honest stage k-1 that forwards its RUNs, that stage's share at stage k, and so starve
every honest request that also passes through stage k-1. A reply-to that never acknowledges fills
only its own share (and a reply-to must be a peer this node can reach through what it already knows:
see the server's "no dial oracle"); the wait is bounded by the hop timeout, not the sender's ttl.

Refusals are reported as :class:`~p2p.events.SecurityEvent` (``limit``), at most one per peer and
resource every
``report_every_s`` (with the number suppressed), so a flood does not flood the audit log as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio
from libp2p.peer.id import ID

from p2p.events import LIMIT, EventSink, EventThrottle, SecurityEvent, drop
from p2p.resources import Limit, Reservation, ResourceLimitExceeded, ResourceManager

PROTOCOL = "shard/1"
CHANNELS = "shard.channels"
IN_FLIGHT = "shard.in_flight"
AWAITING = "shard.awaiting"
QUEUED_BYTES = "shard.queued_bytes"
REASSEMBLY_BYTES = "shard.reassembly_bytes"
MAX_TTL_S = 3600.0
"""The absolute cap of a RUN's time to live, whatever the plan."""


@dataclass(frozen=True)
class AdmissionLimits:
    """Shares of a stage server (see the module docstring); ``[shard]`` config keys set them."""

    peer_in_flight: int = 16
    total_in_flight: int = 256
    peer_queued_bytes: int = 256 << 20
    total_queued_bytes: int = 1 << 30
    peer_reassembly_bytes: int = 256 << 20
    total_reassembly_bytes: int = 1 << 30
    peer_channels: int = 16
    total_channels: int = 256
    max_ttl_s: float = MAX_TTL_S

    def __post_init__(self) -> None:
        if min(self.peer_in_flight, self.total_in_flight, self.peer_channels) < 1:
            raise ValueError("in-flight and channel limits must be >= 1")
        if self.max_ttl_s <= 0:
            raise ValueError("max_ttl_s must be > 0")

    def resource_limits(self) -> Mapping[str, Limit]:
        return {
            CHANNELS: Limit(self.peer_channels, self.total_channels),
            IN_FLIGHT: Limit(self.peer_in_flight, self.total_in_flight),
            AWAITING: Limit(2 * self.peer_in_flight, self.total_in_flight),
            QUEUED_BYTES: Limit(self.peer_queued_bytes, self.total_queued_bytes),
            REASSEMBLY_BYTES: Limit(self.peer_reassembly_bytes, self.total_reassembly_bytes),
        }


DEFAULT_ADMISSION = AdmissionLimits()


def run_deadline(now: float, ttl_ms: int, stages_left: int, hop_timeout_s: float, max_ttl_s: float) -> float:
    """When a RUN with ``stages_left`` stages after this one must be answered: its sender's ttl,
    bounded by the plan ((stages left + 1) x the hop timeout) and by ``max_ttl_s``."""
    return now + min(ttl_ms / 1000, (stages_left + 1) * hop_timeout_s, max_ttl_s)


def next_hop_ttl_ms(attempt_timeout_s: float) -> int:
    """The ttl to give a next hop that this server waits ``attempt_timeout_s`` for: a little less
    (10 %, at most 1 s), so that its answer, whatever it is, arrives before this server gives up on
    it. Otherwise a stuck chain (a reply-to that never acknowledges) times out here at the very moment
    the next hop answers, and the next hop, which did nothing wrong, is backed off."""
    return math.floor((attempt_timeout_s - min(1.0, 0.1 * attempt_timeout_s)) * 1000)


class Admitted:
    """The shares one accepted RUN holds. Until it is computed, its upstream's (``shard.in_flight``,
    ``shard.queued_bytes``); then, while it waits for the rest of the chain, its reply-to peer's
    (``shard.awaiting``, and the bytes of the output kept for replays): see :meth:`computed`."""

    __slots__ = ("_admission", "_on_computed", "_reply_to", "_upstream", "_waiting")

    def __init__(
        self,
        admission: Admission,
        upstream: list[Reservation],
        waiting: list[Reservation],
        reply_to: ID,
        on_computed: Callable[[], None],
    ) -> None:
        self._admission = admission
        self._upstream = upstream
        self._waiting = waiting
        self._reply_to = reply_to
        self._on_computed: Callable[[], None] | None = on_computed

    def computed(self, output_bytes: int) -> bool:
        """The RUN is computed: give the upstream's shares back, and hold ``output_bytes`` for the
        reply-to peer instead. False (refused: answer busy) when that is over the reply-to's share."""
        self._release_upstream()
        held = self._admission._take(self._reply_to, [(QUEUED_BYTES, output_bytes)], stage=None)
        if held is None:
            return False
        self._waiting += held
        return True

    def _release_upstream(self) -> None:
        for reservation in self._upstream:
            reservation.release()
        on_computed, self._on_computed = self._on_computed, None
        if on_computed is not None:
            on_computed()

    def release(self) -> None:
        """Give every share back (idempotent)."""
        self._release_upstream()
        for reservation in self._waiting:
            reservation.release()


class Admission:
    """Takes and reports the shares of ``resources`` that channels and RUNs hold (module docstring)."""

    def __init__(
        self,
        resources: ResourceManager,
        limits: AdmissionLimits = DEFAULT_ADMISSION,
        *,
        events: EventSink = drop,
        report_every_s: float = 10.0,
    ) -> None:
        self.resources = resources
        self.limits = limits
        self.events = events
        self.report_every_s = report_every_s
        for resource, limit in limits.resource_limits().items():
            resources.set_limit(resource, limit)
        self.refused = 0
        self._reported = EventThrottle(every_s=report_every_s, max_keys=4096)

    def channel(self, peer: ID) -> Reservation | None:
        """A share of ``shard.channels`` for a channel ``peer`` opened, or None (then close it)."""
        taken = self._take(peer, [(CHANNELS, 1)], stage=None)
        return None if taken is None else taken[0]

    def run(
        self,
        peer: ID,
        reply_to: ID,
        queued_bytes: int,
        *,
        stage: int,
        trusted: bool = False,
        on_computed: Callable[[], None] = lambda: None,
    ) -> Admitted | None:
        """Shares for one RUN from ``peer`` whose tensors hold ``queued_bytes`` and whose result goes
        to ``reply_to``, or None (busy). A ``trusted`` upstream (this node: its router, or its own
        earlier stage, where the RUN was admitted already) takes no upstream share."""
        wants = [] if trusted else [(IN_FLIGHT, 1), (QUEUED_BYTES, queued_bytes)]
        upstream = self._take(peer, wants, stage=stage)
        if upstream is None:
            return None
        waiting = self._take(reply_to, [(AWAITING, 1)], stage=stage)
        if waiting is None:
            for reservation in upstream:
                reservation.release()
            return None
        return Admitted(self, upstream, waiting, reply_to, on_computed)

    def reassembly(self, peer: ID, size: int) -> Reservation | None:
        """A share of ``shard.reassembly_bytes`` for a ``size``-byte message in parts, or None."""
        taken = self._take(peer, [(REASSEMBLY_BYTES, size)], stage=None)
        return None if taken is None else taken[0]

    def stage_full(self, peer: ID, stage: int, cap: int) -> None:
        """Report a RUN refused because the stage's own cap (``cap`` RUNs in flight) is reached."""
        self.refused += 1
        self.report(peer, "shard.stage_in_flight", f"stage {stage} has {cap} RUNs in flight", stage=stage)

    def _take(self, peer: ID, wants: list[tuple[str, int]], *, stage: int | None) -> list[Reservation] | None:
        scope = str(peer)
        taken: list[Reservation] = []
        try:
            for resource, amount in wants:
                taken.append(self.resources.reserve(resource, scope, amount))
        except ResourceLimitExceeded as exc:
            for reservation in taken:
                reservation.release()
            self.refused += 1
            self.report(peer, exc.resource, str(exc), stage=stage)
            return None
        return taken

    def report(
        self, peer: ID, resource: str, reason: str, *, stage: int | None = None, kind: str = LIMIT
    ) -> None:
        """A ``kind`` event (``limit`` by default) about ``resource`` (or what was refused), at most one
        per (peer, resource) every ``report_every_s``."""
        suppressed = self._reported.admit((str(peer), resource), trio.current_time())
        if suppressed is None:
            return
        details: dict[str, str | int | float | bool] = {"resource": resource, "suppressed": suppressed}
        if stage is not None:
            details["stage"] = stage
        self.events(SecurityEvent(kind, PROTOCOL, str(peer), reason, details))
