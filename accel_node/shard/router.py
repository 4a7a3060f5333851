"""The requesting side of sharded inference: micro-batches through a chain of stage servers.

:meth:`ShardRouter.infer` splits a batch along axis 0 into micro-batches, sends each as a ``RUN`` to the
first usable replica of stage 0 with the rest of the route, and collects the ``RESULT`` that the last
stage pushes back on ``shard-result/1`` (the stage servers push activations from stage to stage; they
never come back through the router). Micro-batches are in flight together (``max_in_flight``), so every
stage works on a different one at the same time.

Exactly once: each micro-batch has a random request id, kept when it is replayed; the
:class:`~accel_node.shard.results.ResultBox` accepts the first RESULT from an allowed sender. If stage 0
FAILs, breaks or times out, the micro-batch is retried from the start on the next stage-0 replica
(:class:`~accel_node.shard.failover.FailOver`, the same rules as the stage servers'); when none is left,
:class:`ShardRouteError` names the stage that had no capable replica (``exhausted`` answers say which later
stage that was) so that the caller can re-place it.

Verification cannot be told apart from normal traffic: every stage signs a receipt for every micro-batch
(:mod:`accel_node.shard.receipts`); the router checks the receipt chain of every RESULT (a break is
penalised and the micro-batch fails with :class:`ShardVerificationError`) and, after delivering it, audits
each stage with probability ``audit_probability(peer, model, stage)`` (default: ``spot_check_p``) in the
background (:mod:`accel_node.shard.audit`).

The router talks to stage servers through a :class:`~p2p.bulk.ChannelTransport`; stages this node serves
itself are reached like any other, over the transport's in-memory channel to itself.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import trio
from libp2p.peer.id import ID
from multiaddr import Multiaddr
from trio_typing import TaskStatus

from accel_node.runtime.validation import Signature
from accel_node.shard.audit import Auditor, AuditProbability, Delivered, Publish, uniform
from accel_node.shard.errors import (
    ShardBusyError,
    ShardError,
    ShardLinkError,
    ShardRequestError,
    ShardRouteError,
    ShardTimeoutError,
    ShardVerificationError,
)
from accel_node.shard.failover import FailOver
from accel_node.shard.frames import merge_batches, split_batch
from accel_node.shard.health import ReplicaHealth
from accel_node.shard.links import LinkPool
from accel_node.shard.observed import PeerObservations
from accel_node.shard.receipts import ChainBreak, as_received, check_chain, tensor_digest
from accel_node.shard.results import Expected, ResultBox, RouterStats
from accel_node.shard.runner import Offload, in_worker_thread
from accel_node.shard.server import RESULT_PURPOSE, SHARD_PURPOSE
from accel_node.shard.spotcheck import FP16_RTOL, LocalReferees, LocalStages, Tolerance
from accel_node.shard.wire import DEFAULT_LIMITS, Kind, Message, WireLimits
from p2p.bulk import ChannelTransport
from p2p.events import EventSink, drop
from p2p.penalties import PenaltyBox
from p2p.tasks import FailureHook

__all__ = ["FP16_RTOL", "LocalStages", "RouterStats", "ShardRouter"]


Arrays = dict[str, np.ndarray[Any, Any]]
Route = Sequence[Sequence[ID]]


@dataclass(frozen=True)
class _Call:
    """What one infer() call sends with every micro-batch."""

    model: str
    route: tuple[tuple[ID, ...], ...]
    addrs: Mapping[ID, tuple[Multiaddr, ...]]
    deadline: float
    fp16: bool
    local_stages: LocalStages
    audit: AuditProbability


class ShardRouter:
    """Runs requests through chains of stage servers; see the module docstring.

    ``penalties`` (the node's box) takes peers that lie in spot checks or send malformed results; ``health``
    backs off stage-0 replicas that fail. ``advertise_addrs`` puts this node's addresses in each RUN so
    that the last stage can reach it even when not connected yet. ``offload`` runs local referee sessions
    (a worker thread by default).

    Audits: ``audit_probability(peer, model, stage)`` overrides ``spot_check_p`` per stage (e.g. 1.0 for
    peers not yet proven); at most ``audit_concurrency`` run at once; ``publish_evidence`` receives the
    evidence record of a caught liar (the node gossips it); ``events`` hears of every liar caught.
    """

    def __init__(
        self,
        transport: ChannelTransport,
        *,
        penalties: PenaltyBox | None = None,
        health: ReplicaHealth | None = None,
        spot_check_p: float = 0.0,
        atol: float = 1e-4,
        rtol: float = 1e-3,
        limits: WireLimits = DEFAULT_LIMITS,
        max_in_flight: int = 16,
        hop_timeout_s: float = 10.0,
        open_timeout_s: float = 5.0,
        intra_op_threads: int = 0,
        advertise_addrs: bool = True,
        rng: random.Random | None = None,
        link_idle_s: float = 300.0,
        offload: Offload = in_worker_thread,
        audit_probability: AuditProbability | None = None,
        audit_concurrency: int = 4,
        publish_evidence: Publish | None = None,
        events: EventSink = drop,
        on_failure: FailureHook | None = None,
        observations: PeerObservations | None = None,
    ) -> None:
        if not 0.0 <= spot_check_p <= 1.0:
            raise ValueError("spot_check_p must be within [0, 1]")
        self.transport = transport
        self.local_id: ID = transport.local_id
        self.penalties = penalties
        self.health = health or ReplicaHealth()
        self.observations = observations or PeerObservations()  # what replicas did (ranking)
        self.spot_check_p = spot_check_p
        self.atol = atol
        self.rtol = rtol
        self.limits = limits
        self.hop_timeout_s = hop_timeout_s
        self.advertise_addrs = advertise_addrs
        self.rng = rng or random.Random()  # noqa: S311 - sampling, not secrets
        self.stats = RouterStats()
        self.results = ResultBox(self.stats, limits, self._penalise)
        self.referees = LocalReferees(offload, intra_op_threads)
        self.audit_probability = audit_probability
        self.auditor = Auditor(
            transport,
            stats=self.stats,
            penalise=self._penalise,
            referees=self.referees,
            rng=self.rng,
            limits=limits,
            timeout_s=hop_timeout_s,
            max_concurrent=audit_concurrency,
            publish=publish_evidence,
            events=events,
            on_failure=on_failure,
            observations=self.observations,
        )
        self.pool = LinkPool(
            transport,
            limits=limits,
            open_timeout_s=open_timeout_s,
            idle_close_s=link_idle_s,
            on_malformed=self._penalise,
        )
        self._slots = trio.CapacityLimiter(max_in_flight)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept results on ``shard-result/1`` and hold links to stage 0 until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.pool.run)
            await nursery.start(self.auditor.run)
            self.transport.set_handler(RESULT_PURPOSE, self.results.serve, require_encryption=True)
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.transport.remove_handler(RESULT_PURPOSE)

    # -- public API -----------------------------------------------------------------------------------

    async def infer(
        self,
        route: Route,
        model_cid: str,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        *,
        micro_batch: int | None = None,
        signature: Signature | None = None,
        timeout_s: float = 30.0,
        compress_fp16: bool = False,
        spot_check_p: float | None = None,
        local_stages: LocalStages | None = None,
        addrs: Mapping[ID, Sequence[Multiaddr]] | None = None,
    ) -> Arrays:
        """Run ``inputs`` through the stages of ``model_cid``; the model's outputs.

        ``route[i]`` lists the replicas of stage i, best first. ``micro_batch`` splits axis 0 (use it only
        when the batch dim is dynamic; every input and output must have it first); ``signature``, the
        specs of the inputs, keeps a batch whole where axis 0 is not the batch axis (see
        :func:`~accel_node.shard.frames.split_batch`; None: the caller vouches that it is).
        ``local_stages`` are stages this node holds (model file or bytes, spec), used to referee audits;
        ``spot_check_p`` overrides the audit probability of every stage for this call. ``addrs`` are
        addresses of route peers the stage servers may not know yet. Returned arrays may be read-only.
        Raises :class:`ShardRouteError` (no capable replica for a stage; ``.stage`` names it),
        :class:`ShardTimeoutError`, :class:`ShardVerificationError` (a receipt chain broke).
        """
        self.stats.requests += 1
        audit = self._probability if spot_check_p is None else uniform(spot_check_p)
        call = self._prepare(
            route, model_cid, timeout_s=timeout_s, fp16=compress_fp16, local_stages=local_stages, addrs=addrs,
            audit=audit,
        )  # fmt: skip
        chunks = split_batch(inputs, micro_batch, signature)
        results: list[Arrays | None] = [None] * len(chunks)
        errors: list[BaseException] = []

        async def one(index: int, chunk: Arrays) -> None:
            try:
                async with self._slots:
                    self.stats.micro_batches += 1
                    results[index] = await self._pipelined(call, index, chunk)
                    self.stats.delivered += 1
            except ShardError as exc:
                errors.append(exc)
                nursery.cancel_scope.cancel()

        with trio.move_on_at(call.deadline) as scope:
            async with trio.open_nursery() as nursery:
                for index, chunk in enumerate(chunks):
                    nursery.start_soon(one, index, chunk)
        if errors:
            raise errors[0]
        if scope.cancelled_caught or any(r is None for r in results):
            raise ShardTimeoutError(f"sharded inference of {model_cid} did not finish within {timeout_s:g} s")
        return merge_batches([r for r in results if r is not None])

    def _prepare(
        self,
        route: Route,
        model_cid: str,
        *,
        timeout_s: float,
        fp16: bool,
        local_stages: LocalStages | None,
        addrs: Mapping[ID, Sequence[Multiaddr]] | None,
        audit: AuditProbability,
    ) -> _Call:
        if not route or len(route) > self.limits.max_stages:
            raise ShardRequestError(f"a route needs 1 to {self.limits.max_stages} stages, got {len(route)}")
        usable = []
        for index, replicas in enumerate(route):
            kept = tuple(dict.fromkeys(p for p in replicas if not self._excluded(p)))
            if not kept:
                raise ShardRouteError(
                    f"no usable replica for stage {index} of {model_cid}: "
                    + ("none given" if not replicas else "every replica is excluded for misbehaving"),
                    stage=index,
                )
            usable.append(kept[: self.limits.max_replicas])
        known: dict[ID, tuple[Multiaddr, ...]] = {
            p: tuple(a)[: self.limits.max_addrs_per_peer] for p, a in (addrs or {}).items()
        }
        if self.advertise_addrs:
            known[self.local_id] = tuple(self.transport.advertised_addrs())[: self.limits.max_addrs_per_peer]
        return _Call(
            model=model_cid,
            route=tuple(usable),
            addrs=known,
            deadline=trio.current_time() + timeout_s,
            fp16=fp16,
            local_stages=local_stages or {},
            audit=audit,
        )

    # -- penalties ------------------------------------------------------------------------------------

    def _probability(self, peer: ID, model: str, stage: int) -> float:
        if peer == self.local_id:
            return 0.0  # this node's own stage server: nothing to prove to itself
        if self.audit_probability is not None:
            return self.audit_probability(peer, model, stage)
        return self.spot_check_p

    def _excluded(self, peer: ID) -> bool:
        return self.penalties is not None and self.penalties.excluded(peer)

    def _penalise(self, peer: ID, reason: str) -> None:
        self.stats.penalised.append(str(peer))
        if self.penalties is not None:
            self.penalties.penalise(peer, reason)

    # -- one micro-batch ------------------------------------------------------------------------------

    async def _pipelined(self, call: _Call, index: int, frame: Arrays) -> Arrays:
        """Through the whole route; the receipt chain checked, the stages' audits drawn afterwards."""
        route = call.route
        request_id, result = await self._through(
            call, index, stage=0, replicas=route[0], rest=route[1:], frame=frame
        )
        assert result.sender is not None and result.message is not None
        chain = check_chain(
            result.message.receipts,
            request_id=request_id,
            model=call.model,
            micro_batch=index,
            fp16=call.fp16,
            route=route,
            sent_digest=tensor_digest(as_received(frame, call.fp16)),
            result_digest=tensor_digest(result.message.tensors),
            result_sender=result.sender,
        )
        if isinstance(chain, ChainBreak):
            self.stats.receipt_breaks += 1
            for peer in chain.blame:
                self._penalise(peer, f"receipts of {call.model}: {chain.reason}")
            raise ShardVerificationError(f"sharded inference of {call.model}: {chain.reason}")

        async def hop(stage: int, replicas: Sequence[ID], frame: Arrays) -> Arrays:  # a referee's run
            again = replace(call, deadline=trio.current_time() + self.hop_timeout_s)
            _, referee = await self._through(
                again, index, stage=stage, replicas=replicas, rest=(), frame=frame
            )
            assert referee.message is not None
            return dict(referee.message.tensors)

        tolerance = Tolerance(self.atol, self.rtol, call.fp16)
        self.auditor.delivered(
            Delivered(call.model, route, tuple(chain), tolerance, call.local_stages, hop, call.audit)
        )
        return dict(result.message.tensors)

    async def _through(
        self,
        call: _Call,
        index: int,
        *,
        stage: int,
        replicas: Sequence[ID],
        rest: Sequence[Sequence[ID]],
        frame: Arrays,
    ) -> tuple[bytes, Expected]:
        """Send ``frame`` to ``stage`` (its ``replicas`` in order, failing over) with the ``rest`` of the
        route; the request id and the delivered RESULT (from the last stage of ``rest``, or from
        ``stage`` if ``rest`` is empty). Replays keep the request id, so a result is delivered once."""
        request_id = os.urandom(16)
        senders = frozenset(rest[-1] if rest else replicas)
        expected = self.results.expect(request_id, call.model, stage + len(rest), senders)
        failover = FailOver(
            stage, replicas, self.health, self.penalties, observations=self.observations, model=call.model
        )
        message = Message(
            Kind.RUN,
            request_id,
            stage=stage,
            model=call.model,
            micro_batch=index,
            route=tuple(tuple(r) for r in rest),
            reply_to=self.local_id,
            addrs={p: a for p, a in call.addrs.items() if any(p in r for r in rest) or p == self.local_id},
            fp16=call.fp16,
            tensors=frame,
        )
        try:
            while (peer := failover.next()) is not None:
                if failover.retrying:
                    self.stats.retries += 1
                await self._attempt(
                    peer,
                    message,
                    expected=expected,
                    failover=failover,
                    deadline=call.deadline,
                    hops=len(rest) + 1,
                )
                if expected.message is not None:
                    return request_id, expected
            if trio.current_time() >= call.deadline:
                raise ShardTimeoutError(f"sharded inference of {call.model} ran out of time at stage {stage}")
            if failover.all_busy:  # load, not failure: 429, and nothing to re-place
                raise ShardBusyError(f"every replica was busy for {call.model}: {failover.summary()}")
            stage = failover.stage_to_blame
            raise ShardRouteError(
                f"no capable replica left for stage {stage} of {call.model}: {failover.summary()}",
                stage=stage,
                reasons=failover.reasons,
            )
        finally:
            self.results.forget(request_id)

    async def _attempt(
        self,
        peer: ID,
        message: Message,
        *,
        expected: Expected,
        failover: FailOver,
        deadline: float,
        hops: int,
    ) -> None:
        """One try on ``peer``; what happened goes to ``failover`` (the result, if any, to ``expected``)."""
        remaining = deadline - trio.current_time()
        if remaining <= 0:
            failover.not_tried(peer, "no time left")
            return
        timeout = min(remaining, self.hop_timeout_s * hops)
        message = replace(message, ttl_ms=math.floor(remaining * 1000))
        try:
            with trio.fail_after(timeout):
                reply = await self._ask(peer, message, expected)
        except ShardLinkError as exc:
            if expected.message is None:
                failover.broke(peer, str(exc))
            return
        except trio.TooSlowError:
            failover.timed_out(peer, timeout)
            return
        if expected.message is not None:
            failover.delivered(peer)
        elif reply is None or reply.kind == Kind.ACK:  # delivered, it says, but no result came
            failover.broke(peer, "acknowledged, but no result arrived")
        else:
            failover.refused(peer, reply.code, reply.reason, at_stage=reply.stage)

    async def _ask(self, peer: ID, message: Message, expected: Expected) -> Message | None:
        """Send a RUN on a reused link; its ACK/FAIL, or None as soon as the result is in."""
        link = await self.pool.get(peer, SHARD_PURPOSE)
        waiter = await link.submit(message)
        try:
            await _first(waiter.event, expected.event)
        finally:
            link.finish(waiter)
        return None if expected.message is not None else waiter.answer(peer)


async def _first(*events: trio.Event) -> None:
    """Wait until any of ``events`` is set."""
    if any(e.is_set() for e in events):
        return
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait, event)
