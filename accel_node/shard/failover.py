"""Fail-over as one sans-IO object: which replica of a stage to try next, and what to blame at the end.

Both the router (a micro-batch into stage 0) and the stage server (its output into the next stage) send
one request to the replicas of a stage in order until one delivers. :class:`FailOver` holds that loop's
state and rules; the caller does the I/O and tells it what happened:

- :meth:`FailOver.next` is the next replica to try: replicas backed off by :class:`ReplicaHealth` or
  excluded by the penalty box are skipped (and named in the reasons), and at most ``max_attempts`` are
  tried.
- :meth:`broke` (the channel broke or could not be opened) and :meth:`timed_out` back the replica off.
- :meth:`refused` reads a FAIL: ``invalid`` is the request's fault, not the replica's (no back-off);
  ``busy`` is load, not a fault, and ``undeliverable`` is about the requester (a third party the
  replica cannot answer for; backing replicas off for it would let anyone who names an unreachable
  reply-to push them out of routes): neither backs the replica off, the next one is tried, and when
  every attempt ended so, :attr:`common_code` tells the caller to answer with that code in turn;
  ``exhausted`` naming a *later* stage means a stage after this replica had no replica left (no back-off,
  and that later stage is what to re-place); any other code backs the replica off.
- :meth:`delivered` forgives the replica.
- :attr:`stage_to_blame` and :attr:`reasons` describe the failure once :meth:`next` returns None: the later
  stage when every attempt ended ``exhausted`` there, else this stage.

Nothing here does I/O or reads a clock itself (:class:`ReplicaHealth` does, through trio's clock).
"""

from __future__ import annotations

from collections.abc import Sequence

from libp2p.peer.id import ID

from accel_node.shard.health import ReplicaHealth
from accel_node.shard.wire import BUSY, EXHAUSTED, INVALID, UNDELIVERABLE
from p2p.penalties import PenaltyBox

_NOT_A_FAULT = (INVALID, BUSY, UNDELIVERABLE)


class FailOver:
    """One request's way through the replicas of ``stage``; see the module docstring."""

    def __init__(
        self,
        stage: int,
        replicas: Sequence[ID],
        health: ReplicaHealth,
        penalties: PenaltyBox | None = None,
        *,
        max_attempts: int | None = None,
    ) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.stage = stage
        self.replicas = tuple(replicas)
        self.health = health
        self.penalties = penalties
        self.max_attempts = max_attempts
        self.attempts = 0
        self.reasons: list[str] = []
        self.winner: ID | None = None
        self._position = 0
        self._exhausted: list[int] = []
        self._codes: list[str] = []

    # -- what to do next ------------------------------------------------------------------------------

    def next(self) -> ID | None:
        """The next replica to try, or None when none is left (or one delivered)."""
        if self.winner is not None:
            return None
        while self._position < len(self.replicas):
            if self.max_attempts is not None and self.attempts >= self.max_attempts:
                return None
            peer = self.replicas[self._position]
            self._position += 1
            if not self.health.usable(peer, self.penalties):
                self.reasons.append(f"{peer}: skipped ({self.health.why(peer) or 'excluded'})")
                continue
            self.attempts += 1
            return peer
        return None

    @property
    def retrying(self) -> bool:
        """Whether the replica :meth:`next` returned last is not the first one tried."""
        return self.attempts > 1

    # -- what happened --------------------------------------------------------------------------------

    def delivered(self, peer: ID) -> None:
        self.winner = peer
        self.health.succeeded(peer)

    def broke(self, peer: ID, reason: str) -> None:
        """The channel to ``peer`` broke, could not be opened, or the answer did not come as agreed."""
        self.health.failed(peer, reason)
        self.reasons.append(f"{peer}: {reason}")

    def timed_out(self, peer: ID, timeout_s: float) -> None:
        reason = f"no answer within {timeout_s:.3g} s"
        self.health.failed(peer, reason)
        self.reasons.append(f"{peer}: {reason}")

    def not_tried(self, peer: ID, reason: str) -> None:
        """``peer`` was not tried after all (e.g. no time was left): no back-off, no attempt counted."""
        self.attempts -= 1
        self.reasons.append(f"{peer}: {reason}")

    def refused(self, peer: ID, code: str, reason: str, *, at_stage: int) -> None:
        """``peer`` answered FAIL ``code`` about stage ``at_stage``."""
        self.reasons.append(f"{peer}: {code}: {reason}")
        self._codes.append(code)
        if code == EXHAUSTED and at_stage > self.stage:
            self._exhausted.append(at_stage)  # a later stage has no replica: not this replica's fault
        elif code not in _NOT_A_FAULT:
            self.health.failed(peer, f"{code}: {reason}")

    # -- the outcome ----------------------------------------------------------------------------------

    @property
    def stage_to_blame(self) -> int:
        """The stage that had no capable replica: a later one when every attempt ended exhausted there."""
        if self._exhausted and len(self._exhausted) == self.attempts:
            return self._exhausted[0]
        return self.stage

    @property
    def common_code(self) -> str | None:
        """``busy`` or ``undeliverable`` when every attempt (at least one) was answered so, else None."""
        codes = set(self._codes)
        if self.attempts > 0 and len(self._codes) == self.attempts and codes in ({BUSY}, {UNDELIVERABLE}):
            return codes.pop()
        return None

    @property
    def all_busy(self) -> bool:
        """Whether every attempt (at least one) was answered ``busy``."""
        return self.common_code == BUSY

    def summary(self) -> str:
        return "; ".join(self.reasons)
