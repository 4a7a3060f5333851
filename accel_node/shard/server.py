"""The stage server: runs the pipeline stages this node holds and pushes activations to the next stage.

Protocol (bulk purpose ``shard/1``, encrypted channels only; messages in :mod:`accel_node.shard.wire`):

1. An upstream (the router, or the previous stage) sends ``RUN`` for (model, stage) with the frame of
   the stage's start boundary, the remaining route (per later stage, its replicas best first), the
   reply-to peer and the time left.
2. The server checks the frame against the stage (:class:`~accel_node.shard.runner.StageRunner`), runs
   ONNX Runtime on a worker thread (at most ``concurrency`` runs at once, a :class:`trio.CapacityLimiter`),
   and then
   - pushes a ``RUN`` for the next stage, with its output frame, to the first *usable* replica of the
     next stage; or, when the route is empty (the last stage, or a spot check asking for this stage's
     output), sends ``RESULT`` to the reply-to peer on ``shard-result/1``;
   - answers its upstream with ``ACK`` only once the rest of the chain has delivered (each hop ACKs when
     its downstream ACKed; the requester ACKs the RESULT), or with ``FAIL`` and a code.
3. Fail-over (:class:`~accel_node.shard.failover.FailOver`, the router's rules): a FAIL, a broken channel
   or a timeout from replica r backs r off (:class:`ReplicaHealth`) and the server replays its own output
   (the last good boundary, kept until ACKed) to the next replica; when no replica is left it FAILs
   upstream with ``exhausted`` naming the stage, so the requester can re-place it.

Channels to next hops are reused (:class:`~accel_node.shard.links.LinkPool`): many requests are
multiplexed on one channel by tag, so every stage works on a different micro-batch at the same time.
A malformed or oversize message is answered with ``FAIL malformed`` (the sender is penalised in the
:class:`~p2p.penalties.PenaltyBox`) and the server keeps serving. :meth:`StageServer.loads` gives the
figures to announce (queue depth, in flight, busy fraction).

Admission (:mod:`accel_node.shard.admission`): each upstream peer holds at most its share of RUNs in
flight, of their bytes, of bytes in reassembly and of channels; over a share a RUN is answered
``FAIL busy`` at once by the channel's read loop, which never waits for a slot, so one peer's backlog
slows no other peer's channel. A RUN lives at most (stages left + 1) x ``hop_timeout_s``; the wait for
an ACK from the next hop or the requester is bounded by the hop timeout, not by the sender's ttl.

No dial oracle: the addresses a RUN carries (``addrs``) are an upstream's claim about third parties
and are ignored (the field stays decodable); next hops and the reply-to peer are reached only through
what the node already knows of them (connections, and the peerstore filled by discovery and
identify). FAIL reasons sent back say nothing about third parties (why a next hop or the requester
could not be reached is logged here, not sent).

The server talks through a :class:`~p2p.bulk.ChannelTransport`: next hops and the reply-to peer that are
this node itself are reached over the transport's in-memory channel to itself, like any other peer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import trio
from libp2p.peer.id import ID
from trio_typing import TaskStatus

from accel_node.shard.admission import (
    DEFAULT_ADMISSION,
    MAX_TTL_S,
    Admission,
    AdmissionLimits,
    Admitted,
    next_hop_ttl_ms,
    run_deadline,
)
from accel_node.shard.errors import (
    ReassemblyRefused,
    ShardLinkError,
    ShardWireError,
    StageInputError,
    StageRunFailed,
)
from accel_node.shard.failover import FailOver
from accel_node.shard.health import ReplicaHealth
from accel_node.shard.links import LinkPool, MessageChannel
from accel_node.shard.load import ServedStage as _Served
from accel_node.shard.load import StageLoad
from accel_node.shard.retention import Retention
from accel_node.shard.runner import Offload, StageRunner, StageSpec, in_worker_thread
from accel_node.shard.wire import (
    BUSY,
    DEFAULT_LIMITS,
    FAILED,
    INVALID,
    MALFORMED,
    TIMEOUT,
    UNDELIVERABLE,
    UNKNOWN_STAGE,
    Kind,
    Message,
    WireLimits,
    ack,
    fail,
    reject,
)
from p2p.bulk import BulkError, ChannelClosed, ChannelTransport, FrameChannel, FrameError
from p2p.events import REFUSED, EventSink, drop
from p2p.penalties import PenaltyBox
from p2p.resources import ResourceManager

log = logging.getLogger(__name__)

SHARD_PURPOSE = "shard/1"
RESULT_PURPOSE = "shard-result/1"
__all__ = ["MAX_TTL_S", "RESULT_PURPOSE", "SHARD_PURPOSE", "StageLoad", "StageServer"]
Arrays = dict[str, np.ndarray[Any, Any]]
DEADLINE_GRACE_S = 0.05
BUSY_PAUSE_S = 0.001
BUSY_PAUSE_MAX_S = 0.25
_ADMITTED: ContextVar[Admitted | None] = ContextVar("shard_admitted", default=None)
"""The shares of the RUN a task answers (set by the task, read by ``_process``: no seam changes)."""


def _allow_all(peer: ID) -> bool:
    return True


class StageServer:
    """Serves pipeline stages over ``transport``; see the module docstring.

    ``allow`` (the node sets it to its policy's ``compute`` check) says which upstreams may send RUNs;
    others are answered ``FAIL busy`` (and the policy reports the denial).

    ``penalties`` (the node's box) receives malformed messages and malformed answers; ``health`` backs off
    next-hop replicas that fail (both default to private instances). ``hop_timeout_s`` bounds one attempt
    per remaining stage (an attempt waits for the whole rest of the chain). ``offload`` loads and runs
    ONNX Runtime sessions (a worker thread by default). ``max_in_flight`` caps the RUNs of one stage;
    ``resources`` (the node's :class:`~p2p.resources.ResourceManager`, default a private one) holds the
    shares of ``admission`` (per upstream peer and in total); refusals are reported to ``events``.
    """

    allow: Callable[[ID], bool] = staticmethod(_allow_all)

    def __init__(
        self,
        transport: ChannelTransport,
        *,
        penalties: PenaltyBox | None = None,
        health: ReplicaHealth | None = None,
        concurrency: int = 1,
        intra_op_threads: int = 0,
        graph_optimization: str = "all",
        providers: Sequence[str] | None = None,
        limits: WireLimits = DEFAULT_LIMITS,
        max_in_flight: int = 64,
        hop_timeout_s: float = 10.0,
        open_timeout_s: float = 5.0,
        busy_window_s: float = 10.0,
        link_idle_s: float = 300.0,
        offload: Offload = in_worker_thread,
        retention: Retention | None = None,
        resources: ResourceManager | None = None,
        admission: AdmissionLimits = DEFAULT_ADMISSION,
        events: EventSink = drop,
    ) -> None:
        if concurrency < 1 or max_in_flight < 1:
            raise ValueError("concurrency and max_in_flight must be >= 1")
        self.transport = transport
        self.local_id: ID = transport.local_id
        self.offload = offload
        self.penalties = penalties
        self.health = health or ReplicaHealth()
        self.concurrency = concurrency
        self.intra_op_threads = intra_op_threads
        self.graph_optimization = graph_optimization
        self.providers = list(providers) if providers else None
        self.limits = limits
        self.max_in_flight = max_in_flight
        self.hop_timeout_s = hop_timeout_s
        self.busy_window_s = busy_window_s
        self.retention = retention  # signs receipts, keeps what it computed for audits (None: neither)
        self.events = events
        self.resources = resources or ResourceManager()
        self.admission = Admission(self.resources, admission, events=events)
        self.pool = LinkPool(
            transport,
            limits=limits,
            open_timeout_s=open_timeout_s,
            idle_close_s=link_idle_s,
            on_malformed=self._penalise,
        )
        self._limiter = trio.CapacityLimiter(concurrency)
        self._stages: dict[tuple[str, int], _Served] = {}
        self._run_ids = 0
        self.malformed = 0
        self._draining = False
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    # -- lifecycle and stages ---------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept ``shard/1`` channels until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.pool.run)
            self.transport.set_handler(SHARD_PURPOSE, self._serve_channel, require_encryption=True)
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.transport.remove_handler(SHARD_PURPOSE)

    async def drain(self) -> None:
        """Shutdown, first step: refuse new RUNs (``busy``, so that upstreams fail over to another
        replica at once) and return when the RUNs in flight have finished. The caller bounds the
        wait (the node gives it what is left of ``[node] shutdown_grace_s``)."""
        self._draining = True
        await self._idle.wait()

    async def serve(self, model_cid: str, stage_index: int, model: Path | bytes, spec: StageSpec) -> None:
        """Load stage ``stage_index`` of ``model_cid`` (its ONNX file or bytes, and its spec) and serve it.
        Raises :class:`~accel_node.shard.runner.StageLoadError`."""
        runner = await self.offload(
            lambda: StageRunner.load(
                model,
                spec,
                intra_op_threads=self.intra_op_threads,
                graph_optimization=self.graph_optimization,
                providers=self.providers,
            )
        )
        self._stages[(model_cid, stage_index)] = _Served(model_cid, stage_index, runner)
        log.info("serving shard stage", extra={"model": model_cid, "stage": stage_index})

    def unserve(self, model_cid: str, stage_index: int) -> bool:
        """Stop serving a stage (requests already running finish). Whether it was served."""
        return self._stages.pop((model_cid, stage_index), None) is not None

    def served(self) -> list[tuple[str, int]]:
        """(model CID, stage index) of every stage served."""
        return sorted(self._stages)

    def loads(self) -> list[StageLoad]:
        """The load of every served stage."""
        now = trio.current_time()
        return [s.load(now, self.busy_window_s, self.concurrency) for s in self._stages.values()]

    def _penalise(self, peer: ID, reason: str) -> None:
        if self.penalties is not None and peer != self.local_id:
            self.penalties.penalise(peer, reason)

    # -- the core: one RUN ----------------------------------------------------------------------------

    async def process(self, message: Message, upstream: ID) -> Message:  # noqa: PLR0911 - one per refusal
        """Handle one RUN from ``upstream``; the ACK or FAIL to answer it with."""
        if not self.allow(upstream):
            return reject(message, BUSY, "denied by this node's policy")
        served = self._stages.get((message.model, message.stage))
        if message.kind == Kind.AUDIT and self.retention is not None:
            return self.retention.answer(message, upstream)
        if message.kind != Kind.RUN:
            return reject(message, MALFORMED, f"expected RUN, got {message.kind.name}")
        if served is None:
            return reject(
                message,
                UNKNOWN_STAGE,
                f"{self.local_id} does not serve stage {message.stage} of {message.model}",
            )
        if message.reply_to is None:
            return reject(message, MALFORMED, "RUN without a reply-to peer")
        if self._draining:
            return reject(message, BUSY, f"{self.local_id} is shutting down")
        deadline = run_deadline(
            trio.current_time(),
            message.ttl_ms,
            len(message.route),
            self.hop_timeout_s,
            self.admission.limits.max_ttl_s,
        )
        served.in_flight += 1
        self._in_flight += 1
        self._idle = trio.Event() if self._in_flight == 1 else self._idle
        try:  # what waits inside (next hops, the requester) ends by `deadline`, and says why; this is
            with trio.move_on_at(deadline + DEADLINE_GRACE_S):  # the net for a run that overran it
                reply = await self._process(served, message, deadline)
                if reply.kind == Kind.ACK:
                    served.served += 1
                else:
                    served.failed += 1
                return reply
            served.failed += 1
            return reject(message, TIMEOUT, f"stage {message.stage} on {self.local_id} ran out of time")
        finally:
            served.in_flight -= 1
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _process(self, served: _Served, message: Message, deadline: float) -> Message:
        try:
            frame = served.runner.check(message.tensors)
        except StageInputError as exc:
            return reject(message, INVALID, str(exc))
        try:
            output = await self._compute(served, frame)
        except StageRunFailed as exc:
            return reject(message, FAILED, str(exc))
        if not self._computed(output):
            return reject(message, BUSY, "too many results wait here for the same reply-to peer")
        if self.retention is not None:  # every RUN gets a receipt: audits cannot be told apart
            message = self.retention.commit(message, output)
        if not message.route:
            return await self._deliver(message, output, deadline)
        return await self._forward(served, message, output, deadline)

    async def _compute(self, served: _Served, frame: Arrays) -> Arrays:
        served.queued += 1
        try:
            await self._limiter.acquire()
        finally:
            served.queued -= 1
        run_id = self._run_ids = self._run_ids + 1
        served.running += 1
        served.active[run_id] = trio.current_time()
        try:
            return await self.offload(lambda: self.run_stage(served.runner, frame))
        finally:
            served.busy.append((served.active.pop(run_id), trio.current_time()))
            served.running -= 1
            self._limiter.release()

    def run_stage(self, runner: StageRunner, frame: Arrays) -> Arrays:
        """Compute a checked frame's outgoing frame (runs on a worker thread; a hook for tests)."""
        return runner.next_frame(frame, runner.compute(frame))

    # -- pushing on -------------------------------------------------------------------------------

    async def _request(self, peer: ID, purpose: str, message: Message, timeout_s: float) -> Message:
        """Send ``message`` to ``peer`` (this node included) on a reused link; its ACK/FAIL."""
        with trio.fail_after(timeout_s):
            link = await self.pool.get(peer, purpose)
            return await link.request(message, timeout_s=timeout_s)

    async def _forward(self, served: _Served, message: Message, frame: Arrays, deadline: float) -> Message:
        nxt = message.stage + 1
        replicas = message.route[0]
        outgoing = replace(message, stage=nxt, route=message.route[1:], tensors=frame, tag=0, addrs={})
        failover = FailOver(nxt, replicas, self.health, self.penalties)
        while (peer := failover.next()) is not None:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                failover.not_tried(peer, "no time left")
                break
            if failover.retrying:
                served.replays += 1
            timeout = min(remaining, self.hop_timeout_s * len(message.route))
            try:
                ttl_ms = next_hop_ttl_ms(timeout)
                reply = await self._request(peer, SHARD_PURPOSE, replace(outgoing, ttl_ms=ttl_ms), timeout)
            except ShardLinkError as exc:
                failover.broke(peer, str(exc))
                continue
            except trio.TooSlowError:
                failover.timed_out(peer, timeout)
                continue
            if reply.kind == Kind.ACK:
                failover.delivered(peer)
                return ack(message)
            failover.refused(peer, reply.code, reply.reason, at_stage=reply.stage)
        summary = failover.summary()
        log.info("no replica of the next stage delivered", extra={"stage": nxt, "error": summary})
        if failover.common_code == BUSY:  # load, not failure: the upstream may try elsewhere, or later
            return reject(message, BUSY, f"every replica of stage {nxt} is busy", stage=nxt)
        if failover.common_code == UNDELIVERABLE:
            return reject(message, UNDELIVERABLE, "the result could not be delivered to the reply-to peer")
        stage = failover.stage_to_blame  # what the replicas said stays here: it is about third parties
        return reject(message, failover.relay_code, f"no replica of stage {stage} delivered", stage=stage)

    async def _deliver(self, message: Message, frame: Arrays, deadline: float) -> Message:
        reply_to = message.reply_to
        assert reply_to is not None
        result = Message(
            Kind.RESULT,
            message.request_id,
            stage=message.stage,
            model=message.model,
            micro_batch=message.micro_batch,
            fp16=message.fp16,
            tensors=frame,
            receipts=message.receipts,
        )
        reason = "no time left"
        for _attempt in range(2):  # a broken link is reopened once
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                break
            try:
                reply = await self._request(
                    reply_to, RESULT_PURPOSE, result, min(remaining, self.hop_timeout_s)
                )
            except ShardLinkError as exc:
                reason = str(exc)
                continue
            except trio.TooSlowError:
                reason = "the requester did not acknowledge the result in time"
                break
            if reply.kind == Kind.ACK:
                return ack(message)
            reason = f"{reply.code}: {reply.reason}"
            break
        log.info("cannot deliver a result", extra={"peer_id": str(reply_to), "error": reason})
        return reject(message, UNDELIVERABLE, "the result could not be delivered to the reply-to peer")

    # -- channels from upstreams --------------------------------------------------------------------

    async def _serve_channel(self, channel: FrameChannel, peer: ID) -> None:
        """``shard/1``: read RUNs, answer each from its own task; cancel them when the channel ends."""
        share = self.admission.channel(peer)
        if share is None:  # over the peer's share of channels: closed at once (the handler returns)
            return
        messages = MessageChannel(
            channel, self.limits, budget=lambda size: self.admission.reassembly(peer, size)
        )
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._read_requests(messages, peer, nursery)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            messages.discard()
            share.release()

    async def _read_requests(self, messages: MessageChannel, peer: ID, nursery: trio.Nursery) -> None:
        """Never waits for anything but the next message and the answers it sends itself (refusals):
        a RUN is admitted or refused at once, and run in its own task. After a refusal this channel
        (only) is read again after a pause that doubles with each refusal in a row (up to
        ``BUSY_PAUSE_MAX_S``): a peer that keeps sending over its share slows itself down, not the
        node, and refusing costs the node little."""
        refusals = 0
        while True:
            if refusals:
                await trio.sleep(min(BUSY_PAUSE_MAX_S, BUSY_PAUSE_S * 2 ** (refusals - 1)))
            try:
                message = await messages.receive()
            except ReassemblyRefused as exc:  # a share, not a fault: busy, and no penalty
                await self._reply(
                    messages, fail(exc.request_id, exc.tag, stage=0, code=BUSY, reason=str(exc))
                )
                refusals += 1
                continue
            except ShardWireError as exc:
                self._malformed(peer, f"malformed shard message: {exc}")
                await self._reply(
                    messages, fail(exc.request_id, exc.tag, stage=0, code=MALFORMED, reason=str(exc))
                )
                continue
            except FrameError as exc:  # over the channel's own limit or forged: the channel is lost
                self._malformed(peer, f"bad shard frame: {exc}")
                await self._reply(messages, fail(None, None, stage=0, code=MALFORMED, reason=str(exc)))
                return
            except (ChannelClosed, BulkError):
                return
            served = self._stages.get((message.model, message.stage))
            if served is None or message.kind != Kind.RUN:
                await self._reply(messages, await self.process(message, peer))
                continue
            admitted = self._admit(served, message, peer)
            if admitted is None:
                await self._reply(
                    messages, reject(message, BUSY, f"no share of stage {message.stage} left for this peer")
                )
                refusals += 1
                continue
            refusals = 0
            nursery.start_soon(self._answer, messages, peer, message, served, admitted)

    def _admit(self, served: _Served, message: Message, peer: ID) -> Admitted | None:
        """The shares for one RUN, or None when one is full (the refusal is reported)."""
        if served.admitted >= self.max_in_flight:
            self.admission.stage_full(peer, served.stage, self.max_in_flight)
            return None
        queued = sum(int(t.nbytes) for t in message.tensors.values())

        def computed() -> None:
            served.admitted -= 1

        reply_to = message.reply_to or peer
        trusted = peer == self.local_id  # our router, or our own earlier stage: admitted there already
        admitted = self.admission.run(
            peer, reply_to, queued, stage=served.stage, trusted=trusted, on_computed=computed
        )
        if admitted is not None:
            served.admitted += 1
        return admitted

    @staticmethod
    def _computed(output: Arrays) -> bool:
        """Hand the RUN's shares from its upstream to its reply-to peer (see
        :mod:`accel_node.shard.admission`); False when the reply-to's share is full."""
        admitted = _ADMITTED.get()
        return admitted is None or admitted.computed(sum(int(a.nbytes) for a in output.values()))

    def _malformed(self, peer: ID, reason: str) -> None:
        self.malformed += 1
        self._penalise(peer, reason)
        self.admission.report(peer, "shard.malformed", reason, kind=REFUSED)

    async def _answer(
        self, messages: MessageChannel, peer: ID, message: Message, served: _Served, admitted: Admitted
    ) -> None:
        _ADMITTED.set(admitted)  # (this task's own context) for _process, once the RUN is computed
        try:
            await self._reply(messages, await self.process(message, peer))
        finally:  # the shares are held until the answer is sent (or could not be, within the hop timeout)
            admitted.release()

    async def _reply(self, messages: MessageChannel, reply: Message) -> None:
        """Send an answer; a peer that does not read it within the hop timeout loses the channel."""
        try:
            with trio.fail_after(self.hop_timeout_s):
                await messages.send(reply)
        except (BulkError, ShardWireError, trio.TooSlowError) as exc:
            log.info(
                "cannot answer a shard request", extra={"peer_id": str(messages.peer_id), "error": str(exc)}
            )
