"""Fail-over as one sans-IO object: which replica of a stage to try next, and what to blame at the end.

Both the router (a micro-batch into stage 0) and the stage server (its output into the next stage) send
one request to the replicas of a stage in order until one delivers. :class:`FailOver` holds that loop's
state and rules; the caller does the I/O and tells it what happened:

- :meth:`FailOver.next` is the next replica to try: replicas backed off by :class:`ReplicaHealth` or
  excluded by the penalty box are skipped (and named in the reasons), and at most ``max_attempts`` are
  tried.
- :meth:`broke` (the channel broke or could not be opened) and :meth:`timed_out` back the replica off.
- :meth:`refused` reads a FAIL: ``exhausted`` naming a *later* stage means a stage after this replica had
  no replica left (no back-off, and that later stage is what to re-place); ``invalid`` (the tensors did not
  fit the stage) depends on whose tensors they were, below; ``busy`` is load, not a fault, and
  ``undeliverable`` is about the requester (a third party the replica cannot answer for; backing replicas
  off for it would let anyone who names an unreachable reply-to push them out of routes): neither backs
  the replica off, the next one is tried, and when every attempt ended so, :attr:`common_code` tells the
  caller to answer with that code in turn; any other code backs the replica off.
- :meth:`delivered` forgives the replica.
- :attr:`stage_to_blame` and :attr:`reasons` describe the failure once :meth:`next` returns None: the later
  stage when every attempt ended ``exhausted`` there, else this stage; :attr:`relay_code` is the FAIL code a
  stage server passes upstream.

``invalid``, whose fault: the frame sent to this stage is the sender's (the requester's own inputs at
stage 0, the previous stage's output later on), so a replica answering ``invalid`` *about this stage* is
not backed off, and when every attempt says so the sender is the one at fault: :attr:`relay_code` is then
``invalid`` (about this stage), which tells the replica upstream of this one that *its* output was bad.
So ``invalid`` *about a later stage* means the replica asked here (or the chain behind it) produced output
that did not fit: it is backed off and another replica of this stage is tried. And a replica that called
``invalid`` a frame that another replica of the same stage then accepted was wrong about it (broken or
dodging work): it is backed off when the other one delivers.

With ``observations`` (:class:`~accel_node.shard.observed.PeerObservations`, the router's), each outcome is
also recorded there for plan ``model``: a delivery with the time since :meth:`next` handed the replica out,
a failure that was the replica's fault (the same cases that back it off) as a failure.

Nothing here does I/O or reads a clock itself (:class:`ReplicaHealth` and the observations do, through
trio's clock or an injected one).
"""

from __future__ import annotations

from collections.abc import Sequence

from libp2p.peer.id import ID

from accel_node.shard.health import ReplicaHealth
from accel_node.shard.observed import PeerObservations
from accel_node.shard.wire import BUSY, EXHAUSTED, INVALID, UNDELIVERABLE
from p2p.penalties import PenaltyBox

_NOT_A_FAULT = (BUSY, UNDELIVERABLE)  # load, or about the requester: no replica's fault


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
        observations: PeerObservations | None = None,
        model: str = "",
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
        self._invalid_here: list[ID] = []  # replicas that called this stage's frame invalid
        self.observations = observations
        self.model = model
        self._handed_out = 0.0  # when next() last returned a replica (the observations' clock)
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
            if self.observations is not None:
                self._handed_out = self.observations.now()
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
        if self.observations is not None:
            latency_s = self.observations.now() - self._handed_out
            self.observations.record_success(peer, self.model, self.stage, latency_s)
        for liar in self._invalid_here:  # the same frame fitted this stage after all
            self._failed(liar, f"called a frame of stage {self.stage} invalid that {peer} accepted")

    def _failed(self, peer: ID, reason: str) -> None:
        """``peer`` failed through its own fault: backed off, and observed failing."""
        self.health.failed(peer, reason)
        if self.observations is not None:
            self.observations.record_failure(peer, self.model, self.stage)

    def broke(self, peer: ID, reason: str) -> None:
        """The channel to ``peer`` broke, could not be opened, or the answer did not come as agreed."""
        self._failed(peer, reason)
        self.reasons.append(f"{peer}: {reason}")

    def timed_out(self, peer: ID, timeout_s: float) -> None:
        reason = f"no answer within {timeout_s:.3g} s"
        self._failed(peer, reason)
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
        elif code == INVALID and at_stage == self.stage:
            self._invalid_here.append(peer)  # the sender's frame (see the module docstring)
        elif code not in _NOT_A_FAULT:  # also INVALID about another stage: its output did not fit
            self._failed(peer, f"{code}: {reason}")

    # -- the outcome ----------------------------------------------------------------------------------

    @property
    def stage_to_blame(self) -> int:
        """The stage that had no capable replica: a later one when every attempt ended exhausted there."""
        if self._exhausted and len(self._exhausted) == self.attempts:
            return self._exhausted[0]
        return self.stage

    @property
    def invalid_input(self) -> bool:
        """Whether every attempt ended ``invalid`` about this stage: the frame sent here is at fault."""
        return self.attempts > 0 and len(self._invalid_here) == self.attempts

    @property
    def relay_code(self) -> str:
        """The FAIL code to pass upstream when no replica delivered: ``invalid`` (about this stage) when
        the frame was at fault, else ``exhausted`` (about :attr:`stage_to_blame`)."""
        return INVALID if self.invalid_input else EXHAUSTED

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
