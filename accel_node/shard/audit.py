"""After-the-fact audits: the requester checks stages it was already answered by.

Every micro-batch carries signed receipts (:mod:`accel_node.shard.receipts`): the stages cannot tell an
audited request from any other, so a stage that lies must lie on requests that will be audited. After a
RESULT is delivered to the caller, the router hands the verified receipt chain to :meth:`Auditor.delivered`,
which audits each stage with probability ``audit_probability(peer, model, stage)`` (by default
``[shard] spot_check_p`` for every stage). An audit, in the auditor's own background tasks (at most
``max_concurrent`` at once, at most ``max_pending`` waiting, so it adds no latency to the request):

1. asks the stage's signer for what it retained (``AUDIT`` on ``shard/1``); a stage that refuses, times
   out, or answers with tensors other than those its receipt commits to is penalised here (no evidence
   others could check: its word against ours);
2. re-executes the stage on the committed input: a local session when this node holds the stage
   (:class:`~accel_node.shard.spotcheck.LocalReferees`), else another replica of the stage (and a third
   when those two disagree), judged by :func:`~accel_node.shard.spotcheck.judge` with the router's
   :class:`~accel_node.shard.spotcheck.Tolerance`;
3. a stage whose committed output is a lie is penalised, reported as CHEATING, and its evidence record
   (:mod:`accel_node.shard.evidence`) goes to ``publish`` (the node gossips it).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import trio
from libp2p.peer.id import ID
from trio_typing import TaskStatus

from accel_node.shard.errors import ShardError
from accel_node.shard.evidence import EvidenceError, by_name, make_evidence
from accel_node.shard.links import MessageChannel
from accel_node.shard.observed import PeerObservations
from accel_node.shard.receipts import Receipt, as_received, tensor_digest
from accel_node.shard.results import RouterStats
from accel_node.shard.retention import unpacked
from accel_node.shard.server import SHARD_PURPOSE
from accel_node.shard.spotcheck import Judgement, LocalReferees, LocalStages, Tolerance, judge
from accel_node.shard.wire import DEFAULT_LIMITS, Kind, Message, WireLimits
from p2p.bulk import BulkError, ChannelTransport
from p2p.events import CHEATING, EventSink, SecurityEvent, drop
from p2p.tasks import FailureHook, OwnedTasks

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]
AuditProbability = Callable[[ID, str, int], float]
"""``audit_probability(peer, model, stage)``: how likely a delivered micro-batch's stage is audited."""
RefereeHop = Callable[[int, Sequence[ID], Arrays], Awaitable[Arrays]]
"""``await hop(stage, replicas, frame)``: the stage's output for ``frame`` from the first replica that
delivers (the router's fail-over); raises :class:`~accel_node.shard.errors.ShardError` when none does."""
Publish = Callable[[bytes], None]


@dataclass(frozen=True)
class Delivered:
    """A delivered micro-batch whose receipt chain holds: what its audits need."""

    model: str
    route: tuple[tuple[ID, ...], ...]
    receipts: tuple[Receipt, ...]
    tolerance: Tolerance
    local_stages: LocalStages
    hop: RefereeHop
    probability: AuditProbability


class Auditor:
    """Audits delivered micro-batches in the background; see the module docstring."""

    def __init__(
        self,
        transport: ChannelTransport,
        *,
        stats: RouterStats,
        penalise: Callable[[ID, str], None],
        referees: LocalReferees,
        rng: random.Random,
        limits: WireLimits = DEFAULT_LIMITS,
        timeout_s: float = 10.0,
        max_concurrent: int = 4,
        max_pending: int = 256,
        publish: Publish | None = None,
        events: EventSink = drop,
        on_failure: FailureHook | None = None,
        observations: PeerObservations | None = None,
    ) -> None:
        if max_concurrent < 1 or max_pending < 1:
            raise ValueError("max_concurrent and max_pending must be >= 1")
        self.transport = transport
        self.stats = stats
        self._penalise = penalise
        self.referees = referees
        self.rng = rng
        self.limits = limits
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.publish = publish
        self.events = events
        self.observations = observations  # audits prove replicas (ranking, probes) or catch them
        self._slots = trio.CapacityLimiter(max_concurrent)
        self._tasks = OwnedTasks("shard-audit", on_failure=on_failure)
        self.pending = 0
        self._idle = trio.Event()
        self._idle.set()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run audits until cancelled."""
        async with self._tasks.open():
            task_status.started()
            await trio.sleep_forever()

    async def wait_idle(self) -> None:
        """Return once no audit is pending or running (tests, shutdown)."""
        await self._idle.wait()

    def delivered(self, batch: Delivered) -> None:
        """Draw which stages of ``batch`` to audit and start their audits (never blocks)."""
        for receipt in batch.receipts:
            p = batch.probability(receipt.signer, batch.model, receipt.stage)
            if self.rng.random() >= p:
                continue
            if self.pending >= self.max_pending or not self._tasks.running:
                self.stats.spot_checks_skipped += 1
                continue
            self.pending += 1
            self._idle = trio.Event() if self._idle.is_set() else self._idle
            self._tasks.spawn("audit", self._audit, batch, receipt)

    async def _audit(self, batch: Delivered, receipt: Receipt) -> None:
        try:
            async with self._slots:
                self.stats.spot_checks += 1
                await self.audit(batch, receipt)
        finally:
            self.pending -= 1
            if self.pending == 0:
                self._idle.set()

    async def audit(self, batch: Delivered, receipt: Receipt) -> None:
        """Audit the stage of ``receipt`` (see the module docstring, steps 1 to 3)."""
        peer, stage = receipt.signer, receipt.stage
        what = f"stage {stage} of {batch.model}"
        committed = await self._retained(receipt)
        if isinstance(committed, str):
            self.stats.audit_failures += 1
            self._penalise(peer, f"audit of {what}: {committed}")
            return
        inputs, outputs = committed
        try:
            local = await self.referees.run(batch.model, stage, batch.local_stages, inputs)
        except ShardError as exc:  # the committed input does not fit the stage: it should have refused
            self.stats.audit_failures += 1
            self._penalise(peer, f"audit of {what}: it committed to an input the stage refuses ({exc})")
            return
        if local is not None:
            referee = by_name(as_received(local, receipt.fp16))
            agree, diff = batch.tolerance.agree(by_name(outputs), referee)
            if not agree:
                self._caught(receipt, inputs, outputs, f"{what}: committed output differs (max {diff:.3g})")
            else:
                self._verified(receipt)
            return
        await self._refereed_by_replicas(batch, receipt, inputs, outputs)

    async def _refereed_by_replicas(
        self, batch: Delivered, receipt: Receipt, inputs: Arrays, outputs: Arrays
    ) -> None:
        peer, stage = receipt.signer, receipt.stage
        others = [p for p in batch.route[stage] if p != peer]
        if not others:
            self.stats.spot_checks_skipped += 1  # nobody to compare with
            return
        mine = by_name(outputs)
        try:
            first = by_name(await batch.hop(stage, others[:1], inputs))
        except ShardError:
            self.stats.spot_checks_skipped += 1
            return
        verdict = judge({peer: mine, others[0]: first}, batch.tolerance, local_referee=False)
        if verdict.judgement == Judgement.AGREED:
            self._verified(receipt)
            return
        self.stats.mismatches += 1
        if len(others) < 2:
            return  # two replicas disagree and nobody can tell which one lied
        try:
            third = by_name(await batch.hop(stage, others[1:], inputs))
        except ShardError:
            return
        verdict = judge({peer: mine, others[0]: first}, batch.tolerance, local_referee=False, referee=third)
        for liar, diff in verdict.liars.items():
            reason = f"stage {stage} of {batch.model}: output differs from the referees' (max {diff:.3g})"
            if liar == peer:
                self._caught(receipt, inputs, outputs, reason)
            else:
                self._penalise(liar, reason)

    def _verified(self, receipt: Receipt) -> None:
        if self.observations is not None:
            self.observations.record_verified(receipt.signer, receipt.model, receipt.stage)

    def _caught(self, receipt: Receipt, inputs: Arrays, outputs: Arrays, reason: str) -> None:
        self.stats.lies_caught += 1
        if self.observations is not None:
            self.observations.record_lie(receipt.signer, receipt.model, receipt.stage)
        self._penalise(receipt.signer, reason)
        self.events(SecurityEvent(CHEATING, SHARD_PURPOSE, str(receipt.signer), reason,
                                  {"stage": receipt.stage, "model": receipt.model}))  # fmt: skip
        try:
            evidence = make_evidence(receipt, inputs, outputs)
        except EvidenceError as exc:
            log.info("no evidence to share", extra={"peer_id": str(receipt.signer), "error": str(exc)})
            return
        if self.publish is not None:
            self.stats.evidence_published += 1
            self.publish(evidence.raw)

    async def _retained(self, receipt: Receipt) -> tuple[Arrays, Arrays] | str:
        """The committed (inputs, outputs) from the signer, or why it could not produce them."""
        request = Message(Kind.AUDIT, receipt.request_id, stage=receipt.stage, model=receipt.model)
        try:
            with trio.fail_after(self.timeout_s):
                async with self.transport.open(
                    receipt.signer, SHARD_PURPOSE, timeout_s=self.timeout_s
                ) as channel:
                    messages = MessageChannel(channel, self.limits)
                    await messages.send(request)
                    reply = await messages.receive()
        except trio.TooSlowError:
            return "no answer to the audit in time"
        except (BulkError, ShardError) as exc:
            return f"the audit failed: {exc}"
        if reply.kind != Kind.RETAINED:
            return f"it did not produce the data it committed to ({reply.code or reply.kind.name})"
        parts = unpacked(reply.tensors)
        if reply.receipts != (receipt.raw,) or reply.request_id != receipt.request_id or parts is None:
            return "its audit answer is not about the audited request"
        inputs, outputs = parts
        if tensor_digest(inputs) != receipt.input_digest or tensor_digest(outputs) != receipt.output_digest:
            return "the data it retained is not what its receipt commits to"
        return {n: np.array(a) for n, a in inputs.items()}, {n: np.array(a) for n, a in outputs.items()}


def uniform(p: float) -> AuditProbability:
    """The default audit probability: ``p`` for every peer, model and stage."""

    def probability(peer: ID, model: str, stage: int) -> float:
        return p

    return probability
