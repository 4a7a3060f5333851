"""What this node saw its peers do, per (peer, plan, stage): the basis of routing, not what they claim.

A capability record says how fast a peer is and which stages it serves; both are the peer's own claims
(bounded for plausibility by :mod:`accel_node.capability`, but a liar stays inside the bounds).
:class:`PeerObservations` keeps, for each (peer, plan CID, stage) this node's router sent work to:

- **latency**: a time-decayed mean of the time from sending a RUN to that replica until its result
  arrived (for a RUN with a route after the stage, that is the time through the rest of the route: the
  same for every replica of the stage, so it still orders them). Each sample's weight halves every
  ``half_life_s``; :meth:`expected_ms` is None once the decayed weight of all samples falls below
  ``min_weight`` (an observation that old says little; routing falls back to the bounded claim).
- **throughput**: the same decayed mean of items (rows of the micro-batch) per second of latency.
- **reliability**: decayed counts of successes and failures (a failure is a broken channel, a timeout,
  or a FAIL that was the replica's fault, see :mod:`accel_node.shard.failover`).
- **proven**: an after-the-fact audit (or a spot check) confirmed an output of this replica for this
  stage, and no audit caught it lying since. A lie is remembered for good (until the entry is evicted)
  and also makes :meth:`proven` false for every other stage of that peer.

Ranking (:func:`rank`): proven replicas (this node's own stages count as proven) come before merely
claimed ones; within each group, by observed latency scaled by the failure rate when there is a fresh
observation, else by the claimed estimate. An unproven replica is used only as a probe: with no proven
replica left it is all there is, otherwise it is moved to the front of a route with probability
``probe_p`` so that it can prove itself; and every request it serves is audited
(:meth:`PeerObservations.audit_probability` is 1.0 for it), so a probe that lies is caught.

Memory is bounded: at most ``max_entries`` (peer, plan, stage) entries and ``max_peers`` liars,
least recently used evicted first. Time comes from ``clock`` (trio's by default), so tests run decay on
``trio.testing.MockClock`` or a plain function.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio
from libp2p.peer.id import ID

Key = tuple[ID, str, int]
"""(peer, plan CID, stage)."""

DEFAULT_HALF_LIFE_S = 300.0
DEFAULT_MIN_WEIGHT = 0.25
DEFAULT_MAX_ENTRIES = 4096
DEFAULT_MAX_PEERS = 1024
DEFAULT_PROBE_P = 0.05
MIN_SUCCESS_RATE = 0.05  # a replica that mostly fails still ranks (last) rather than dividing by zero


@dataclass
class _Entry:
    updated: float
    weight: float = 0.0  # decayed weight of the latency samples
    latency_s: float = 0.0  # decayed mean
    items_per_s: float = 0.0  # decayed mean
    successes: float = 0.0  # decayed
    failures: float = 0.0  # decayed
    verified: int = 0  # audits that confirmed an output, since the entry was made


class PeerObservations:
    """Decayed observations per (peer, plan, stage) and the proven state; see the module docstring."""

    def __init__(
        self,
        *,
        half_life_s: float = DEFAULT_HALF_LIFE_S,
        min_weight: float = DEFAULT_MIN_WEIGHT,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_peers: int = DEFAULT_MAX_PEERS,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if half_life_s <= 0 or min_weight <= 0 or max_entries < 1 or max_peers < 1:
            raise ValueError("observations need half_life_s > 0, min_weight > 0, max_entries, max_peers >= 1")
        self.half_life_s = half_life_s
        self.min_weight = min_weight
        self.max_entries = max_entries
        self.max_peers = max_peers
        self._clock = clock
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._liars: OrderedDict[ID, int] = OrderedDict()  # peer -> lies caught

    def now(self) -> float:
        """The time on this object's clock."""
        return self._clock()

    # -- recording ----------------------------------------------------------------------------------

    def _decayed(self, key: Key) -> _Entry:
        """The entry for ``key`` (made if new, most recently used now), decayed to the present."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(updated=now)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
            factor = self._factor(now - entry.updated)
            entry.weight *= factor
            entry.successes *= factor
            entry.failures *= factor
            entry.updated = now
        return entry

    def _factor(self, elapsed_s: float) -> float:
        return math.exp(-math.log(2) * max(0.0, elapsed_s) / self.half_life_s)

    def record_success(self, peer: ID, model: str, stage: int, latency_s: float, *, items: int = 1) -> None:
        """``peer`` delivered a result for ``stage`` of plan ``model`` ``latency_s`` after it was sent."""
        latency_s = max(0.0, latency_s)
        entry = self._decayed((peer, model, stage))
        entry.weight += 1.0
        entry.latency_s += (latency_s - entry.latency_s) / entry.weight
        rate = items / max(latency_s, 1e-6)
        entry.items_per_s += (rate - entry.items_per_s) / entry.weight
        entry.successes += 1.0

    def record_failure(self, peer: ID, model: str, stage: int) -> None:
        """``peer`` failed a request for ``stage`` of plan ``model`` (its fault: see the module docstring)."""
        self._decayed((peer, model, stage)).failures += 1.0

    def record_verified(self, peer: ID, model: str, stage: int) -> None:
        """An audit confirmed an output of ``peer`` for ``stage`` of plan ``model``."""
        self._decayed((peer, model, stage)).verified += 1

    def record_lie(self, peer: ID, model: str, stage: int) -> None:
        """An audit caught ``peer`` returning a wrong output for ``stage`` of plan ``model``."""
        self._decayed((peer, model, stage)).verified = 0
        self._liars[peer] = self._liars.pop(peer, 0) + 1
        while len(self._liars) > self.max_peers:
            self._liars.popitem(last=False)

    # -- reading --------------------------------------------------------------------------------------

    def _fresh(self, key: Key) -> _Entry | None:
        """The entry's figures decayed to now, without changing it (reads do not refresh an entry)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        factor = self._factor(self._clock() - entry.updated)
        return _Entry(
            updated=entry.updated,
            weight=entry.weight * factor,
            latency_s=entry.latency_s,
            items_per_s=entry.items_per_s,
            successes=entry.successes * factor,
            failures=entry.failures * factor,
            verified=entry.verified,
        )

    def proven(self, peer: ID, model: str, stage: int) -> bool:
        """Whether an audit confirmed ``peer``'s output for this stage and it was never caught lying."""
        entry = self._entries.get((peer, model, stage))
        return entry is not None and entry.verified > 0 and peer not in self._liars

    def lied(self, peer: ID) -> bool:
        return peer in self._liars

    def expected_ms(self, peer: ID, model: str, stage: int) -> float | None:
        """The observed time for ``peer`` to serve this stage (ms), scaled up by its failure rate; None
        without a fresh enough observation (see the module docstring)."""
        entry = self._fresh((peer, model, stage))
        if entry is None or entry.weight < self.min_weight:
            return None
        attempts = entry.successes + entry.failures
        success_rate = entry.successes / attempts if attempts > 0 else 1.0
        return entry.latency_s * 1000.0 / max(MIN_SUCCESS_RATE, success_rate)

    def throughput(self, peer: ID, model: str, stage: int) -> float | None:
        """Observed items per second for this stage, or None without a fresh enough observation."""
        entry = self._fresh((peer, model, stage))
        return None if entry is None or entry.weight < self.min_weight else entry.items_per_s

    def failures(self, peer: ID, model: str, stage: int) -> float:
        """Decayed count of failures."""
        entry = self._fresh((peer, model, stage))
        return 0.0 if entry is None else entry.failures

    def audit_probability(self, peer: ID, model: str, stage: int, base_p: float) -> float:
        """How likely a request ``peer`` served for this stage should be audited: always while it is not
        proven (a probe), ``base_p`` once it is; never when auditing is off (``base_p`` 0)."""
        if base_p <= 0.0:
            return 0.0
        return base_p if self.proven(peer, model, stage) else 1.0

    def audit_hook(self, base_p: float) -> Callable[[ID, str, int], float]:
        """:meth:`audit_probability` at ``base_p``, as the router's ``audit_probability(peer, model,
        stage)`` hook."""
        return lambda peer, model, stage: self.audit_probability(peer, model, stage, base_p)

    @property
    def entries(self) -> int:
        """How many (peer, plan, stage) entries are held (at most ``max_entries``)."""
        return len(self._entries)


@dataclass(frozen=True)
class Candidate:
    """A replica to rank: its claimed estimate (the stage's FLOPs at its bounded claimed throughput,
    scaled by its claimed load, plus RTT), and whether it is this node itself."""

    peer: ID
    claimed_ms: float
    local: bool = False


def rank(
    candidates: Sequence[Candidate],
    observations: PeerObservations,
    model: str,
    stage: int,
    *,
    probe_p: float = DEFAULT_PROBE_P,
    rng: random.Random | None = None,
) -> list[ID]:
    """The candidates best first (see the module docstring): proven before claimed, each group by
    observed time when fresh, else by the claim; a peer caught lying is left out; with probability
    ``probe_p`` the best unproven one goes first (when a proven one exists)."""

    def score(candidate: Candidate) -> float:
        observed = observations.expected_ms(candidate.peer, model, stage)
        return candidate.claimed_ms if observed is None else observed

    usable = [c for c in candidates if c.local or not observations.lied(c.peer)]
    is_proven = [c.local or observations.proven(c.peer, model, stage) for c in usable]
    proven = sorted((c for c, p in zip(usable, is_proven, strict=True) if p), key=score)
    claimed = sorted((c for c, p in zip(usable, is_proven, strict=True) if not p), key=score)
    ranked = proven + claimed
    draw = rng.random() if rng is not None else random.random()  # noqa: S311 - sampling, not secrets
    if proven and claimed and draw < probe_p:
        ranked.remove(claimed[0])
        ranked.insert(0, claimed[0])
    return [c.peer for c in ranked]
