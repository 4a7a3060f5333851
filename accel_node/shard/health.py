"""Which replicas to skip for now because they failed: availability, not misbehaviour.

A replica that crashed, timed out or whose channel broke is not lying, so it does not belong in the
:class:`p2p.penalties.PenaltyBox` (which is persisted in the peer table and excludes peers that sent
something provably wrong: malformed messages, activations that fail a spot check). It is *backed off*
instead: skipped for ``base_s`` after a failure, doubling with each further failure up to ``max_s``, and
forgiven at its first success. Both views decide together whether a replica is usable
(:meth:`ReplicaHealth.usable` takes the penalty box).

The ``listener`` hook (``listener(peer, reason, backoff_s)``) lets the node count or log failures.

Time comes from trio's clock (:func:`trio.current_time`, or an injected ``clock``), so that back-off and
its expiry follow ``trio.testing.MockClock`` in tests: a test jumps past a back-off instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio
from libp2p.peer.id import ID

from p2p.penalties import PenaltyBox

HealthListener = Callable[[ID, str, float], None]


@dataclass
class _Backoff:
    failures: int = 0
    until: float = 0.0
    last_reason: str = ""


class ReplicaHealth:
    """Backoff per peer after availability failures; see the module docstring."""

    def __init__(
        self,
        *,
        base_s: float = 1.0,
        max_s: float = 60.0,
        listener: HealthListener | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if base_s <= 0 or max_s < base_s:
            raise ValueError("backoff needs 0 < base_s <= max_s")
        self.base_s = base_s
        self.max_s = max_s
        self.listener = listener
        self._clock = clock
        self._peers: dict[ID, _Backoff] = {}

    def failed(self, peer: ID, reason: str) -> float:
        """Record a failure of ``peer``; returns how long it is skipped."""
        state = self._peers.setdefault(peer, _Backoff())
        state.failures += 1
        backoff = min(self.max_s, self.base_s * 2.0 ** (state.failures - 1))
        state.until = self._clock() + backoff
        state.last_reason = reason
        if self.listener is not None:
            self.listener(peer, reason, backoff)
        return backoff

    def succeeded(self, peer: ID) -> None:
        self._peers.pop(peer, None)

    def backing_off(self, peer: ID) -> bool:
        state = self._peers.get(peer)
        return state is not None and self._clock() < state.until

    def usable(self, peer: ID, penalties: PenaltyBox | None = None) -> bool:
        """Not backed off, and not excluded by ``penalties``."""
        return not self.backing_off(peer) and not (penalties is not None and penalties.excluded(peer))

    def failures(self, peer: ID) -> int:
        """Failures of ``peer`` since its last success (back-off expired or not)."""
        state = self._peers.get(peer)
        return state.failures if state is not None else 0

    def why(self, peer: ID) -> str:
        state = self._peers.get(peer)
        return state.last_reason if state is not None else ""

    def snapshot(self) -> dict[str, dict[str, float | int | str]]:
        """Peers currently backed off: failures, seconds left, last reason (for status pages)."""
        now = self._clock()
        return {
            str(peer): {"failures": s.failures, "retry_in_s": s.until - now, "reason": s.last_reason}
            for peer, s in self._peers.items()
            if s.until > now
        }
