"""Where the router's results arrive: requests waiting for a RESULT, exactly once, from allowed senders.

Each micro-batch the router sends has a random request id, kept when it is replayed to another replica.
:class:`ResultBox` remembers, per request id, which peers may answer (the replicas of the last stage of the
route, or the replica a spot check asked) and accepts the first RESULT from one of them; a RESULT again
(a replay answered twice) or a late one (the request is finished) is acknowledged and dropped, so the
chain may stop; a RESULT from a peer that was not asked is refused and the peer penalised. Results come
on ``shard-result/1`` channels (:meth:`ResultBox.serve`), from other nodes and, in memory, from this
node's own stage server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from libp2p.peer.id import ID

from accel_node.shard.errors import ShardWireError
from accel_node.shard.links import MessageChannel
from accel_node.shard.wire import INVALID, MALFORMED, Kind, Message, WireLimits, ack, fail, reject
from p2p.bulk import BulkError, ChannelClosed, FrameChannel, FrameError


@dataclass
class RouterStats:
    """Counters of one router (for /metrics and status pages)."""

    requests: int = 0
    micro_batches: int = 0
    delivered: int = 0  # micro-batch results delivered to callers (each once)
    duplicates: int = 0  # results that arrived again for a request still in progress
    late: int = 0  # results for requests already finished (or unknown)
    retries: int = 0  # micro-batches sent again to another stage-0 replica
    refused_results: int = 0  # results from a peer not allowed to answer
    spot_checks: int = 0  # audits run (a stage of a delivered micro-batch checked afterwards)
    spot_checks_skipped: int = 0  # audits drawn but not run (too many pending, nobody to compare with)
    mismatches: int = 0  # two replicas disagreed in an audit
    receipt_breaks: int = 0  # delivered micro-batches whose receipt chain did not hold
    audit_failures: int = 0  # audited stages that could not produce what they committed to
    lies_caught: int = 0  # audited stages whose committed output was a lie
    evidence_published: int = 0
    penalised: list[str] = field(default_factory=list)


@dataclass
class Expected:
    """A request waiting for its RESULT."""

    model: str
    stage: int
    senders: frozenset[ID]
    event: trio.Event = field(default_factory=trio.Event)
    message: Message | None = None
    sender: ID | None = None


class ResultBox:
    """Requests waiting for results; see the module docstring."""

    def __init__(self, stats: RouterStats, limits: WireLimits, penalise: Callable[[ID, str], None]) -> None:
        self.stats = stats
        self.limits = limits
        self._penalise = penalise
        self._expected: dict[bytes, Expected] = {}

    def expect(self, request_id: bytes, model: str, stage: int, senders: frozenset[ID]) -> Expected:
        """Wait for the RESULT of ``request_id``: stage ``stage`` of ``model``, from one of ``senders``."""
        expected = Expected(model, stage, senders)
        self._expected[request_id] = expected
        return expected

    def forget(self, request_id: bytes) -> None:
        """The request is finished: results for it are late from now on."""
        self._expected.pop(request_id, None)

    @property
    def waiting(self) -> int:
        return len(self._expected)

    def accept(self, message: Message, peer: ID) -> Message:
        """Take a RESULT from ``peer``; the ACK or FAIL to answer it with (first one wins)."""
        if message.kind != Kind.RESULT:
            return reject(message, MALFORMED, f"expected RESULT, got {message.kind.name}")
        expected = self._expected.get(message.request_id)
        if expected is None:
            self.stats.late += 1
            return ack(message)  # finished or unknown: the chain may stop
        if peer not in expected.senders or message.model != expected.model or message.stage != expected.stage:
            self.stats.refused_results += 1
            self._penalise(peer, f"sent a result for stage {message.stage} it was not asked for")
            return reject(message, INVALID, "this peer was not asked for this result")
        if expected.message is not None:
            self.stats.duplicates += 1
            return ack(message)
        expected.message, expected.sender = message, peer
        expected.event.set()
        return ack(message)

    async def serve(self, channel: FrameChannel, peer: ID) -> None:
        """``shard-result/1``: take RESULTs pushed by last stages, answer each with ACK or FAIL."""
        messages = MessageChannel(channel, self.limits)
        while True:
            try:
                message = await messages.receive()
            except ShardWireError as exc:
                self._penalise(peer, f"malformed shard result: {exc}")
                reply = fail(exc.request_id, exc.tag, stage=0, code=MALFORMED, reason=str(exc))
            except FrameError as exc:
                self._penalise(peer, f"bad shard result frame: {exc}")
                return
            except (ChannelClosed, BulkError):
                return
            else:
                reply = self.accept(message, peer)
            try:
                await messages.send(reply)
            except (BulkError, ShardWireError):
                return
