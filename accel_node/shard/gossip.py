"""Evidence of cheating shared over GossipSub, so that every node can exclude a caught liar.

The router's auditor hands the evidence record of a liar it caught to :meth:`EvidenceGossip.publish`
(queued, never blocking); it goes out on :data:`TOPIC`. Every node verifies what it receives on its own
(:func:`accel_node.shard.evidence.verify`, re-executing the stage when it holds it) and, only if the
evidence proves the lie, penalises the liar in its own :class:`~p2p.penalties.PenaltyBox` and reports
CHEATING. Evidence that does not verify penalises nobody (the publisher may be honest and wrong, or a
node that relayed it): it is counted and logged.

Bounded: messages over :data:`~accel_node.shard.evidence.MAX_EVIDENCE_BYTES` are dropped before decoding,
duplicates (by SHA-256 of the bytes, the last ``seen`` kept) are dropped, at most ``max_pending`` records
wait for verification (more are dropped) and one is verified at a time (re-execution costs CPU).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import trio
from libp2p.peer.id import ID
from trio_typing import TaskStatus

from accel_node.shard.errors import ShardError
from accel_node.shard.evidence import (
    MAX_EVIDENCE_BYTES,
    EvidenceError,
    EvidenceVerdict,
    Finding,
    decode_evidence,
    verify,
)
from accel_node.shard.runner import Offload, in_worker_thread
from accel_node.shard.spotcheck import LocalReferees, LocalStages, Tolerance
from p2p.events import BAD_CONTENT, CHEATING, EventSink, SecurityEvent, drop
from p2p.penalties import PenaltyBox
from p2p.pubsub import messages

log = logging.getLogger(__name__)

TOPIC = "accel-node/shard-evidence/1"
PROTOCOL = "gossipsub:" + TOPIC


class Gossip(Protocol):
    """The part of :class:`p2p.pubsub.PubSub` this module uses."""

    async def subscribe(self, topic: str) -> object: ...
    async def publish(self, topic: str, data: bytes) -> None: ...


StagesOf = Callable[[str], Awaitable[LocalStages | None]]
"""``await stages(plan_cid)``: the plan's stages this node can run (None: it does not hold the model)."""


@dataclass
class GossipStats:
    published: int = 0
    received: int = 0
    dropped: int = 0  # oversize, duplicate, or over ``max_pending``
    refused: int = 0  # malformed, badly signed, or tensors other than the committed ones
    proven: int = 0
    unfounded: int = 0
    unverifiable: int = 0


class EvidenceGossip:
    """Publishes and verifies evidence records; see the module docstring."""

    def __init__(
        self,
        pubsub: Gossip,
        *,
        local_id: ID,
        stages: StagesOf,
        referees: LocalReferees,
        penalties: PenaltyBox | None,
        tolerance: Tolerance,
        offload: Offload = in_worker_thread,
        events: EventSink = drop,
        max_pending: int = 16,
        seen: int = 1024,
    ) -> None:
        self.pubsub = pubsub
        self.local_id = local_id
        self.stages = stages
        self.referees = referees
        self.penalties = penalties
        self.tolerance = tolerance
        self.offload = offload
        self.events = events
        self.seen = seen
        self.stats = GossipStats()
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._out_send, self._out_receive = trio.open_memory_channel[bytes](max_pending)
        self._in_send, self._in_receive = trio.open_memory_channel[tuple[ID, bytes]](max_pending)

    def publish(self, raw: bytes) -> None:
        """Queue an evidence record for gossip (dropped when the queue is full)."""
        self._remember(raw)  # our own comes back to us: no need to verify it again
        try:
            self._out_send.send_nowait(raw)
        except trio.WouldBlock:
            self.stats.dropped += 1

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        subscription = await self.pubsub.subscribe(TOPIC)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_loop)
            nursery.start_soon(self._verify_loop)
            nursery.start_soon(self._receive_loop, subscription)
            task_status.started()

    def _remember(self, raw: bytes) -> bool:
        """Whether ``raw`` is new (and remember it)."""
        key = hashlib.sha256(raw).digest()
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > self.seen:
            self._seen.popitem(last=False)
        return True

    def offer(self, author: ID, raw: bytes) -> bool:
        """Take a received record for verification; whether it was queued."""
        self.stats.received += 1
        if len(raw) > MAX_EVIDENCE_BYTES or not self._remember(raw):
            self.stats.dropped += 1
            return False
        try:
            self._in_send.send_nowait((author, raw))
        except trio.WouldBlock:
            self.stats.dropped += 1
            return False
        return True

    async def _send_loop(self) -> None:
        async for raw in self._out_receive:
            try:
                await self.pubsub.publish(TOPIC, raw)
                self.stats.published += 1
            except Exception:  # gossip is best effort
                log.exception("publishing evidence failed")

    async def _receive_loop(self, subscription: object) -> None:
        async for author, data in messages(subscription):  # type: ignore[arg-type]
            if author != self.local_id:
                self.offer(author, data)

    async def _verify_loop(self) -> None:
        async for author, raw in self._in_receive:
            try:
                await self.check(author, raw)
            except Exception:  # one record must not stop the loop
                log.exception("verifying evidence failed")

    def _convict(self, author: ID, liar: ID, stage: int, model: str, diff: float) -> None:
        reason = (
            f"evidence (from {author}): stage {stage} of {model} committed to an output that "
            f"re-execution refutes (max abs diff {diff:.3g})"
        )
        if self.penalties is not None and liar != self.local_id:
            self.penalties.penalise(liar, reason)
        details: dict[str, str | int | float | bool] = {"stage": stage, "model": model, "from": str(author)}
        self.events(SecurityEvent(CHEATING, PROTOCOL, str(liar), reason, details))

    async def check(self, author: ID, raw: bytes) -> EvidenceVerdict | None:
        """Verify one record from ``author``; penalise the liar when it proves the lie. None: refused."""
        try:
            evidence = decode_evidence(raw)
        except EvidenceError as exc:
            self.stats.refused += 1
            self.events(SecurityEvent(BAD_CONTENT, PROTOCOL, str(author), f"evidence refused: {exc}"))
            return None
        receipt = evidence.receipt
        local = await self.stages(receipt.model)
        runner = None
        if local is not None:
            try:
                runner = await self.referees.runner(receipt.model, receipt.stage, local)
            except ShardError as exc:
                log.info("cannot load a stage to verify evidence", extra={"error": str(exc)})
        try:
            verdict = await self.offload(
                lambda: verify(evidence, runner.run if runner else None, self.tolerance)
            )
        except ShardError:  # the committed input does not fit the stage: not proof of a lie in the output
            verdict = EvidenceVerdict(Finding.UNVERIFIABLE)
        if verdict.finding == Finding.PROVEN:
            self.stats.proven += 1
            self._convict(author, evidence.receipt.signer, receipt.stage, receipt.model, verdict.max_abs_diff)
        elif verdict.finding == Finding.UNFOUNDED:
            self.stats.unfounded += 1
            log.info("unfounded evidence", extra={"peer_id": str(author), "accused": str(receipt.signer)})
        else:
            self.stats.unverifiable += 1
        return verdict
