"""Penalties against misbehaving peers, shared by every protocol that can catch one.

A peer is penalised when it sends something provably wrong: a block whose bytes do not match the
CID it was sent for, a malformed protocol message, activations that fail a spot check. After
``limit`` penalties it is *excluded*: protocols stop asking it. Exclusion is not forever: it lasts
``ban_s`` after the latest penalty, doubling with every further exclusion of the same peer
(backoff), and a peer that behaves for that long starts again from zero.

The box is in memory and synchronous (protocol code calls it from anywhere); the node gives it a
``listener`` that persists each penalty in the peer table and counts it in the metrics, and seeds
it with the penalties it had persisted before a restart (:meth:`PenaltyBox.restore`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from libp2p.peer.id import ID

PENALTY_LIMIT = 3
BAN_S = 3600.0

PenaltyListener = Callable[[ID, str, "PeerPenalty"], None]


@dataclass
class PeerPenalty:
    """What one peer has done wrong: how often since it was last forgiven, and when last."""

    count: int = 0
    last_at: float = 0.0
    exclusions: int = 0  # times it reached the limit; each doubles the ban
    last_reason: str = ""


class PenaltyBox:
    """Counts penalties per peer and answers whether a peer is currently excluded."""

    def __init__(
        self,
        *,
        limit: int = PENALTY_LIMIT,
        ban_s: float = BAN_S,
        listener: PenaltyListener | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limit < 1 or ban_s <= 0:
            raise ValueError("penalty limit must be >= 1 and ban_s > 0")
        self.limit = limit
        self.ban_s = ban_s
        self.listener = listener
        self._clock = clock
        self._peers: dict[ID, PeerPenalty] = {}

    def penalise(self, peer: ID, reason: str) -> PeerPenalty:
        """Record one penalty; returns the peer's updated state."""
        now = self._clock()
        state = self._current(peer, now)
        state.count += 1
        state.last_at = now
        state.last_reason = reason
        if state.count == self.limit:
            state.exclusions += 1
        if self.listener is not None:
            self.listener(peer, reason, state)
        return state

    def restore(self, peer: ID, state: PeerPenalty) -> None:
        """Seed the box with a penalty state persisted before a restart."""
        self._peers[peer] = PeerPenalty(state.count, state.last_at, state.exclusions, state.last_reason)

    def count(self, peer: ID) -> int:
        return self._current(peer, self._clock()).count

    def excluded(self, peer: ID) -> bool:
        """Whether protocols should stop asking ``peer`` (for now)."""
        return self._current(peer, self._clock()).count >= self.limit

    def state(self, peer: ID) -> PeerPenalty:
        current = self._current(peer, self._clock())
        return PeerPenalty(current.count, current.last_at, current.exclusions, current.last_reason)

    def _ban_s(self, state: PeerPenalty) -> float:
        return self.ban_s * float(2 ** max(0, state.exclusions - 1))

    def _current(self, peer: ID, now: float) -> PeerPenalty:
        state = self._peers.setdefault(peer, PeerPenalty())
        if state.count and now - state.last_at >= self._ban_s(state):
            state.count = 0  # served its time (or behaved long enough): forgiven, history kept
        return state
