"""The requesting side of sharded inference: micro-batches through a chain of stage servers.

:meth:`ShardRouter.infer` splits a batch along axis 0 into micro-batches, sends each as a ``RUN`` to the
first usable replica of stage 0 with the rest of the route, and collects the ``RESULT`` that the last
stage pushes back on ``shard-result/1`` (the stage servers push activations from stage to stage; they
never come back through the router). Micro-batches are in flight together (``max_in_flight``), so every
stage works on a different one at the same time.

Exactly once: each micro-batch has a random request id, kept when it is replayed. The router accepts a
RESULT only from a replica of the last stage of its route (or from the replica a spot check asked), takes
the first and acknowledges and drops any other (a replay answered twice, or a late one). If stage 0 FAILs,
breaks or times out, the micro-batch is retried from the start on the next stage-0 replica; when none is
left, :class:`ShardRouteError` names the stage that had no capable replica (``exhausted`` answers say which
later stage that was) so that the caller can re-place it.

Spot checks: with probability ``spot_check_p`` a micro-batch runs hop by hop instead (each stage's
replica returns its output to the router: a RUN with an empty route), and one randomly chosen stage runs
on two replicas (or one replica and a local session of the stage from ``local_stages``). Outputs equal
within ``atol``/``rtol`` go on; on a mismatch the local session, or else a third replica, referees: the
peer that disagrees with the referee is penalised (:class:`~p2p.penalties.PenaltyBox`; excluded from
routes after the box's limit) and the referee's output goes on.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import trio
from libp2p.peer.id import ID
from multiaddr import Multiaddr
from trio_typing import TaskStatus

from accel_node.shard.errors import (
    ShardError,
    ShardLinkError,
    ShardRequestError,
    ShardRouteError,
    ShardTimeoutError,
    ShardVerificationError,
    ShardWireError,
)
from accel_node.shard.frames import frames_agree, merge_batches, split_batch
from accel_node.shard.health import ReplicaHealth
from accel_node.shard.links import LinkPool, MessageChannel
from accel_node.shard.runner import StageRunner, StageSpec
from accel_node.shard.server import RESULT_PURPOSE, SHARD_PURPOSE, StageServer
from accel_node.shard.wire import (
    DEFAULT_LIMITS,
    EXHAUSTED,
    INVALID,
    MALFORMED,
    Kind,
    Message,
    WireLimits,
    ack,
    fail,
    reject,
)
from p2p.bulk import BulkError, BulkService, ChannelClosed, FrameChannel, FrameError
from p2p.host import listening_addrs
from p2p.penalties import PenaltyBox

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]
Route = Sequence[Sequence[ID]]
LocalStages = Mapping[int, tuple[Path | bytes, StageSpec]]
LOCAL_RUNNERS = 8
FP16_RTOL = 2.0**-9


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
    spot_checks: int = 0
    spot_checks_skipped: int = 0  # no stage had two replicas (or a replica and a local session)
    mismatches: int = 0
    penalised: list[str] = field(default_factory=list)


@dataclass
class _Expected:
    """A request waiting for its RESULT."""

    model: str
    stage: int
    senders: frozenset[ID]
    event: trio.Event = field(default_factory=trio.Event)
    message: Message | None = None
    sender: ID | None = None


@dataclass(frozen=True)
class _Call:
    """What one infer() call sends with every micro-batch."""

    model: str
    route: tuple[tuple[ID, ...], ...]
    addrs: Mapping[ID, tuple[Multiaddr, ...]]
    deadline: float
    fp16: bool
    local_stages: LocalStages


class _Failed(Exception):
    """One replica did not deliver; ``exhausted`` is the later stage it reported without replicas."""

    def __init__(self, reason: str, exhausted: int | None = None) -> None:
        super().__init__(reason)
        self.exhausted = exhausted


class ShardRouter:
    """Runs requests through chains of stage servers; see the module docstring.

    ``penalties`` (the node's box) takes peers that lie in spot checks or send malformed results; ``health``
    backs off stage-0 replicas that fail. ``advertise_addrs`` puts this host's addresses in each RUN so
    that the last stage can reach it even when not connected yet. ``local_server`` is this node's own
    stage server, if any: stages this node serves run in-process, and its last stages hand results over
    without a channel.
    """

    def __init__(
        self,
        bulk: BulkService,
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
        local_server: StageServer | None = None,
        rng: random.Random | None = None,
        link_idle_s: float = 300.0,
    ) -> None:
        if not 0.0 <= spot_check_p <= 1.0:
            raise ValueError("spot_check_p must be within [0, 1]")
        self.bulk = bulk
        self.local_id: ID = bulk.host.get_id()
        self.penalties = penalties
        self.health = health or ReplicaHealth()
        self.spot_check_p = spot_check_p
        self.atol = atol
        self.rtol = rtol
        self.limits = limits
        self.hop_timeout_s = hop_timeout_s
        self.intra_op_threads = intra_op_threads
        self.advertise_addrs = advertise_addrs
        self.local_server = local_server
        if local_server is not None:  # stages of ours run in-process, and deliver their results in-process
            local_server.result_sink = self.accept_result
        self.rng = rng or random.Random()  # noqa: S311 - sampling, not secrets
        self.stats = RouterStats()
        self.pool = LinkPool(
            bulk,
            limits=limits,
            open_timeout_s=open_timeout_s,
            idle_close_s=link_idle_s,
            on_malformed=self._penalise,
        )
        self._slots = trio.CapacityLimiter(max_in_flight)
        self._expected: dict[bytes, _Expected] = {}
        self._runners: OrderedDict[tuple[str, int], StageRunner] = OrderedDict()
        self._runner_lock = trio.Lock()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept results on ``shard-result/1`` and hold links to stage 0 until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.pool.run)
            self.bulk.set_handler(RESULT_PURPOSE, self._serve_results, require_encryption=True)
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.bulk.remove_handler(RESULT_PURPOSE)

    # -- public API -----------------------------------------------------------------------------------

    async def infer(
        self,
        route: Route,
        model_cid: str,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        *,
        micro_batch: int | None = None,
        timeout_s: float = 30.0,
        compress_fp16: bool = False,
        spot_check_p: float | None = None,
        local_stages: LocalStages | None = None,
        addrs: Mapping[ID, Sequence[Multiaddr]] | None = None,
    ) -> Arrays:
        """Run ``inputs`` through the stages of ``model_cid``; the model's outputs.

        ``route[i]`` lists the replicas of stage i, best first. ``micro_batch`` splits axis 0 (use it only
        when the batch dim is dynamic; every input and output must have it first). ``local_stages`` are
        stages this node holds (model file or bytes, spec), used to referee spot checks. ``addrs`` are
        addresses of route peers the stage servers may not know yet. Returned arrays may be read-only.
        Raises :class:`ShardRouteError` (no capable replica for a stage; ``.stage`` names it),
        :class:`ShardTimeoutError`, :class:`ShardVerificationError`.
        """
        self.stats.requests += 1
        call = self._prepare(
            route, model_cid, timeout_s=timeout_s, fp16=compress_fp16, local_stages=local_stages, addrs=addrs
        )
        chunks = split_batch(inputs, micro_batch)
        p = self.spot_check_p if spot_check_p is None else spot_check_p
        results: list[Arrays | None] = [None] * len(chunks)
        errors: list[BaseException] = []

        async def one(index: int, chunk: Arrays) -> None:
            try:
                async with self._slots:
                    self.stats.micro_batches += 1
                    checked = self.rng.random() < p
                    results[index] = await (self._spot_checked if checked else self._pipelined)(
                        call, index, chunk
                    )
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
            known[self.local_id] = tuple(listening_addrs(self.bulk.host))[: self.limits.max_addrs_per_peer]
        return _Call(
            model=model_cid,
            route=tuple(usable),
            addrs=known,
            deadline=trio.current_time() + timeout_s,
            fp16=fp16,
            local_stages=local_stages or {},
        )

    # -- penalties ------------------------------------------------------------------------------------

    def _excluded(self, peer: ID) -> bool:
        return self.penalties is not None and self.penalties.excluded(peer)

    def _penalise(self, peer: ID, reason: str) -> None:
        self.stats.penalised.append(str(peer))
        if self.penalties is not None:
            self.penalties.penalise(peer, reason)

    # -- one micro-batch ------------------------------------------------------------------------------

    async def _pipelined(self, call: _Call, index: int, frame: Arrays) -> Arrays:
        return await self._through(
            call, index, stage=0, replicas=call.route[0], rest=call.route[1:], frame=frame
        )

    async def _through(
        self,
        call: _Call,
        index: int,
        *,
        stage: int,
        replicas: Sequence[ID],
        rest: Sequence[Sequence[ID]],
        frame: Arrays,
    ) -> Arrays:
        """Send ``frame`` to ``stage`` (its ``replicas`` in order, failing over) with the ``rest`` of the
        route; the RESULT's tensors (from the last stage of ``rest``, or from ``stage`` if ``rest`` is
        empty). Replays keep the request id, so a result is delivered once."""
        request_id = os.urandom(16)
        senders = frozenset(rest[-1] if rest else replicas)
        expected = _Expected(call.model, stage + len(rest), senders)
        self._expected[request_id] = expected
        reasons: list[str] = []
        exhausted: list[int] = []
        attempts = 0
        try:
            for peer in replicas:
                if not self.health.usable(peer, self.penalties):
                    reasons.append(f"{peer}: skipped ({self.health.why(peer) or 'excluded'})")
                    continue
                attempts += 1
                if attempts > 1:
                    self.stats.retries += 1
                message = Message(
                    Kind.RUN,
                    request_id,
                    stage=stage,
                    model=call.model,
                    micro_batch=index,
                    route=tuple(tuple(r) for r in rest),
                    reply_to=self.local_id,
                    addrs={
                        p: a for p, a in call.addrs.items() if any(p in r for r in rest) or p == self.local_id
                    },
                    fp16=call.fp16,
                    tensors=frame,
                )
                try:
                    await self._attempt(peer, message, expected, call.deadline, len(rest) + 1)
                except _Failed as exc:
                    reasons.append(f"{peer}: {exc}")
                    if exc.exhausted is not None:
                        exhausted.append(exc.exhausted)
                if expected.message is not None:
                    return dict(expected.message.tensors)
            if trio.current_time() >= call.deadline:
                raise ShardTimeoutError(f"sharded inference of {call.model} ran out of time at stage {stage}")
            if exhausted and len(exhausted) == attempts:
                stage = exhausted[0]
            raise ShardRouteError(
                f"no capable replica left for stage {stage} of {call.model}: " + "; ".join(reasons),
                stage=stage,
                reasons=reasons,
            )
        finally:
            del self._expected[request_id]

    async def _attempt(
        self, peer: ID, message: Message, expected: _Expected, deadline: float, hops: int
    ) -> None:
        """One try on ``peer``: returns once the result is in, raises :class:`_Failed` otherwise."""
        remaining = deadline - trio.current_time()
        if remaining <= 0:
            raise _Failed("no time left")
        timeout = min(remaining, self.hop_timeout_s * hops)
        message = replace(message, ttl_ms=math.floor(remaining * 1000))
        try:
            with trio.fail_after(timeout):
                reply = await self._ask(peer, message, expected)
        except ShardLinkError as exc:
            if expected.message is None:
                self.health.failed(peer, str(exc))
                raise _Failed(str(exc)) from exc
            return
        except trio.TooSlowError:
            self.health.failed(peer, f"no answer within {timeout:.3g} s")
            raise _Failed(f"no answer within {timeout:.3g} s") from None
        if expected.message is not None:
            self.health.succeeded(peer)
            return
        assert reply is not None
        if reply.kind == Kind.ACK:  # delivered, it says, but no result came from an allowed sender
            self.health.failed(peer, "acknowledged without a result")
            raise _Failed("acknowledged, but no result arrived")
        if reply.code == EXHAUSTED and reply.stage > message.stage:
            raise _Failed(f"{reply.code}: {reply.reason}", exhausted=reply.stage)
        if reply.code != INVALID:
            self.health.failed(peer, f"{reply.code}: {reply.reason}")
        raise _Failed(f"{reply.code}: {reply.reason}")

    async def _ask(self, peer: ID, message: Message, expected: _Expected) -> Message | None:
        """Send a RUN; its ACK/FAIL, or None as soon as the result is in. Our own stages run locally."""
        if peer == self.local_id and self.local_server is not None:
            return await self.local_server.process(message, self.local_id)
        link = await self.pool.get(peer, SHARD_PURPOSE)
        waiter = await link.submit(message)
        try:
            await _first(waiter.event, expected.event)
        finally:
            link.finish(waiter)
        return None if expected.message is not None else waiter.answer(peer)

    # -- spot checks ----------------------------------------------------------------------------------

    async def _spot_checked(self, call: _Call, index: int, frame: Arrays) -> Arrays:
        """Hop by hop, one random stage verified (see the module docstring)."""
        candidates = [
            i
            for i, replicas in enumerate(call.route)
            if sum(self.health.usable(p, self.penalties) for p in replicas) + (i in call.local_stages) >= 2
        ]
        if not candidates:
            self.stats.spot_checks_skipped += 1
            return await self._pipelined(call, index, frame)
        checked = self.rng.choice(candidates)
        self.stats.spot_checks += 1
        for stage, replicas in enumerate(call.route):
            if stage == checked:
                frame = await self._verify(call, index, stage, frame)
            else:
                frame = await self._through(call, index, stage=stage, replicas=replicas, rest=(), frame=frame)
        return frame

    async def _verify(self, call: _Call, index: int, stage: int, frame: Arrays) -> Arrays:
        usable = [p for p in call.route[stage] if self.health.usable(p, self.penalties)]
        local = await self._local_runner(call, stage)
        pair = self.rng.sample(usable, 2) if len(usable) >= 2 else usable[:1]
        outputs: dict[ID, Arrays] = {}

        async def run_on(peer: ID) -> None:
            try:
                outputs[peer] = await self._through(
                    call, index, stage=stage, replicas=(peer,), rest=(), frame=frame
                )
            except ShardRouteError as exc:
                log.info("spot check replica failed", extra={"peer_id": str(peer), "error": str(exc)})

        async with trio.open_nursery() as nursery:
            for peer in pair:
                nursery.start_soon(run_on, peer)
        answered = list(outputs)
        if not answered:
            return await self._through(
                call, index, stage=stage, replicas=call.route[stage], rest=(), frame=frame
            )
        first = outputs[answered[0]]
        if len(answered) == 2 and self._agree(call, first, outputs[answered[1]])[0]:
            return first
        if len(answered) == 1 and local is None:
            return first  # the other replica failed: nothing to compare with
        if len(answered) == 2:
            self.stats.mismatches += 1
        referee = await self._referee(call, index, stage=stage, frame=frame, local=local, exclude=pair)
        liars = [p for p in answered if not self._agree(call, outputs[p], referee)[0]]
        if local is None and len(liars) == len(answered):
            raise ShardVerificationError(
                f"spot check of stage {stage} of {call.model}: replicas {[str(p) for p in answered]} and the "
                "referee replica all disagree"
            )
        for peer in liars:
            diff = self._agree(call, outputs[peer], referee)[1]
            self._penalise(peer, f"stage {stage} of {call.model}: activations differ from the referee's "
                                 f"(max abs diff {diff:.3g})")  # fmt: skip
        return referee

    def _agree(self, call: _Call, a: Arrays, b: Arrays) -> tuple[bool, float]:
        """Whether two outputs of a stage agree. Under fp16 compression the outputs travelled rounded to
        float16, so the relative tolerance is at least two float16 steps (2**-9)."""
        rtol = max(self.rtol, FP16_RTOL) if call.fp16 else self.rtol
        return frames_agree(a, b, atol=self.atol, rtol=rtol)

    async def _referee(
        self,
        call: _Call,
        index: int,
        *,
        stage: int,
        frame: Arrays,
        local: StageRunner | None,
        exclude: Sequence[ID],
    ) -> Arrays:
        if local is not None:
            frame = await trio.to_thread.run_sync(local.run, frame)
            if call.fp16:  # what an honest replica's output looks like after the trip
                frame = {n: a.astype(np.float16).astype(np.float32) if a.dtype == np.float32 else a
                         for n, a in frame.items()}  # fmt: skip
            return frame
        others = [p for p in call.route[stage] if p not in exclude and self.health.usable(p, self.penalties)]
        if not others:
            raise ShardVerificationError(
                f"spot check of stage {stage} of {call.model}: two replicas disagree and there is no referee "
                "(no third replica, no local copy of the stage)"
            )
        return await self._through(call, index, stage=stage, replicas=others, rest=(), frame=frame)

    async def _local_runner(self, call: _Call, stage: int) -> StageRunner | None:
        if stage not in call.local_stages:
            return None
        key = (call.model, stage)
        async with self._runner_lock:
            runner = self._runners.get(key)
            if runner is None:
                model, spec = call.local_stages[stage]
                runner = await trio.to_thread.run_sync(
                    lambda: StageRunner.load(model, spec, intra_op_threads=self.intra_op_threads)
                )
                self._runners[key] = runner
                while len(self._runners) > LOCAL_RUNNERS:
                    self._runners.popitem(last=False)
            self._runners.move_to_end(key)
            return runner

    # -- results --------------------------------------------------------------------------------------

    async def _serve_results(self, channel: FrameChannel, peer: ID) -> None:
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
                reply = self.accept_result(message, peer)
            try:
                await messages.send(reply)
            except (BulkError, ShardWireError):
                return

    def accept_result(self, message: Message, peer: ID) -> Message:
        """Take a RESULT from ``peer``; the ACK or FAIL to answer it with (first one wins, see above)."""
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
