"""Dynamic batching of inference requests for one (model, variant).

Requests wait in a bounded FIFO queue. A scheduler task forms batches: it waits until the oldest
request's group holds ``max_batch`` rows or the oldest request has waited ``max_wait_ms``, then
waits for a free worker slot (a shared :class:`trio.CapacityLimiter`: how many ORT runs may
execute at once on this node), and only then takes the batch from the queue. While every worker
is busy, requests keep accumulating, so batches grow with load without adding latency when idle.
With ``max_wait_ms = 0`` (the default) a request never waits for company while a worker is free:
batches form from what arrived while the workers were busy, which under load (say 64 clients and
one worker) gives full batches; a positive ``max_wait_ms`` trades that much latency for larger
batches at moderate load.

Merging: when axis 0 is the batch axis of every model input (:func:`batch_axis_ok`) requests whose
inputs agree on the row count and whose non-batch shapes and dtypes match (one *group*, which also
includes the thread count asked for) are concatenated along axis 0 and run once; the outputs are
split back by row counts. If a merged run's outputs do not all have the total row count first, the
model is not batch-major after all: that batch is rerun request by request and the batcher stops
merging. If a merged run fails, its requests are rerun one by one so only the faulty one fails.
Merging, running and splitting all happen in a worker thread, never on the event loop.

Timeouts and cancellation: a request that times out or whose task is cancelled before its batch
started is removed from the queue; one that is already running gets its result discarded (the ORT
call itself cannot be interrupted and finishes in its thread).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio
from trio_typing import TaskStatus

from accel_node.runtime.errors import InferenceFailed, InferenceTimeout, InputError, QueueFull, RuntimeFailure
from accel_node.runtime.validation import Arrays, Signature, is_static, symbol

log = logging.getLogger(__name__)

RunSync = Callable[[Arrays], Arrays]
"""A blocking model run (name -> array in, name -> array out), called from a worker thread."""
Prepare = Callable[[int | None], Awaitable[RunSync]]
"""Returns the run function for a thread count (None: the configured default), loading as needed."""

LATENCY_WINDOW = 1024


@dataclass(frozen=True)
class BatchReport:
    """What one executed batch looked like, for metrics and measurement records."""

    rows: int
    requests: int
    threads: int | None
    run_s: float
    queue_s: float
    merged: bool
    shapes: Mapping[str, tuple[int, ...]]
    failed: int


@dataclass(eq=False)
class _Request:
    inputs: Arrays
    rows: int | None  # None: this request cannot be merged with others
    group: Hashable
    threads: int | None
    enqueued: float
    done: trio.Event = field(default_factory=trio.Event)
    result: Arrays | None = None
    error: RuntimeFailure | None = None
    started: bool = False
    abandoned: bool = False


def batch_axis_ok(signature: Signature) -> bool:
    """True when axis 0 is, as far as the signature tells, the batch axis of every input.

    Requests may only be concatenated along axis 0 when it is. Not so, and run per request: an
    input of rank 0 (a scalar such as a sample rate) or with a static first dim (``state [2, N,
    128]``); first dims with different names; a named first dim mixed with free ones (``[N, T]``
    next to ``[?, ?, 128]``: the free one may be anything); a first-dim name that also sits on
    another axis (``state [?, N, 128]`` or a mask ``[N, N]``: the batch is elsewhere too). First
    dims that are all free (``?``, -1, unnamed) say nothing either way: they merge, and the
    output check in :meth:`Batcher._execute` stops merging if the outputs are not batch-major.
    """
    if not signature:
        return False
    firsts = []
    for spec in signature:
        if not spec.shape or is_static(spec.shape[0]):
            return False
        firsts.append(spec.shape[0])
    names = {symbol(d) for d in firsts}
    if len(names) > 1:  # two different names, or a name mixed with free dims
        return False
    name = names.pop()
    return name is None or not any(symbol(d) == name for spec in signature for d in spec.shape[1:])


def _ort_failure(exc: Exception) -> RuntimeFailure:
    if isinstance(exc, RuntimeFailure):
        return exc
    if type(exc).__name__ == "InvalidArgument":  # onnxruntime's pybind error for bad feeds
        return InputError(f"ONNX Runtime refused the inputs: {exc}")
    return InferenceFailed(f"ONNX Runtime failed: {exc}")


def _clone(exc: RuntimeFailure) -> RuntimeFailure:
    """A copy of ``exc`` for each waiting task (one exception object raised in many tasks would
    accumulate their tracebacks)."""
    copy = RuntimeFailure.__new__(type(exc))
    copy.__dict__.update(exc.__dict__)
    copy.args = exc.args
    return copy


class Batcher:
    """The queue and scheduler of one (model, variant). Start :meth:`run` in a nursery first."""

    def __init__(
        self,
        prepare: Prepare,
        *,
        signature: Signature,
        limiter: trio.CapacityLimiter,
        max_batch: int = 32,
        max_wait_ms: float = 0.0,
        max_queue: int = 256,
        name: str = "",
        on_batch: Callable[[BatchReport], Awaitable[None]] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self.name = name
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.batchable = batch_axis_ok(signature)
        self._prepare = prepare
        self._limiter = limiter
        self._threads = trio.CapacityLimiter(math.inf)  # admission is self._limiter's job
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._queue: deque[_Request] = deque()
        self._group_rows: dict[Hashable, int] = {}  # queued rows per mergeable group
        self._wake = trio.Event()
        self._running = False
        # statistics
        self.submitted = self.completed = self.failed = self.rejected = 0
        self.timed_out = self.cancelled = self.batches = self.rows = 0
        self.batch_sizes: Counter[int] = Counter()
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._run_ewma: float | None = None
        self._requests_ewma = 1.0

    # -- client side ---------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    async def submit(
        self, inputs: Arrays, *, threads: int | None = None, timeout_s: float | None = None
    ) -> Arrays:
        """Run ``inputs`` (already validated) as part of a batch; the outputs for these rows only."""
        if not self._running:
            raise InferenceFailed(f"the inference runtime for {self.name} is not running")
        if len(self._queue) >= self.max_queue:
            self.rejected += 1
            retry = self.retry_after_s()
            raise QueueFull(
                f"the queue of {self.name} is full ({self.max_queue} requests); retry in {retry:.2f} s",
                retry_after_s=retry,
            )
        rows, group = self._grouping(inputs, threads)
        request = _Request(inputs, rows, group, threads, trio.current_time())
        self.submitted += 1
        self._queue.append(request)
        self._count_rows(request, +1)
        self._changed()
        try:
            with trio.fail_after(math.inf if timeout_s is None else timeout_s):
                await request.done.wait()
        except trio.TooSlowError:
            self._abandon(request)
            self.timed_out += 1
            raise InferenceTimeout(f"inference on {self.name} did not finish within {timeout_s} s") from None
        except BaseException:
            self._abandon(request)
            self.cancelled += 1
            raise
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _grouping(self, inputs: Arrays, threads: int | None) -> tuple[int | None, Hashable]:
        if self.batchable:
            first_dims = {arr.shape[0] for arr in inputs.values() if arr.ndim >= 1}
            if len(first_dims) == 1 and all(arr.ndim >= 1 for arr in inputs.values()):
                key = tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in inputs.items()))
                return first_dims.pop(), (threads, key)
        return None, object()

    def _abandon(self, request: _Request) -> None:
        request.abandoned = True
        if not request.started:
            try:
                self._queue.remove(request)
            except ValueError:  # already taken out by a batch or by shutdown
                return
            self._count_rows(request, -1)
            self._changed()

    def _count_rows(self, request: _Request, sign: int) -> None:
        if request.rows is not None:
            rows = self._group_rows.get(request.group, 0) + sign * request.rows
            if rows:
                self._group_rows[request.group] = rows
            else:
                self._group_rows.pop(request.group, None)

    def _changed(self) -> None:
        self._wake.set()
        if self._on_depth is not None:
            self._on_depth(len(self._queue))

    def retry_after_s(self) -> float:
        """When the queue should have room: batches ahead x recent batch time / workers + wait."""
        per_batch = self._run_ewma if self._run_ewma is not None else max(self.max_wait_s, 0.01)
        batches_ahead = math.ceil(len(self._queue) / max(1.0, self._requests_ewma))
        workers = self._limiter.total_tokens
        workers = 1 if workers == math.inf else max(1, int(workers))
        return max(0.01, batches_ahead * per_batch / workers + self.max_wait_s)

    def stats(self) -> dict[str, Any]:
        latencies = sorted(self._latencies)

        def pct(q: float) -> float | None:
            return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

        return {
            "queue_depth": len(self._queue),
            "batchable": self.batchable,
            "submitted": self.submitted,
            "completed": self.completed,
            "failed": self.failed,
            "rejected": self.rejected,
            "timed_out": self.timed_out,
            "cancelled": self.cancelled,
            "batches": self.batches,
            "rows": self.rows,
            "batch_sizes": dict(sorted(self.batch_sizes.items())),
            "latency_ms_p50": pct(0.5),
            "latency_ms_p90": pct(0.9),
            "latency_ms_p99": pct(0.99),
        }

    # -- scheduler -----------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._running = True
            task_status.started()
            try:
                while True:
                    await self._schedule_one(nursery)
            finally:
                self._running = False
                for request in self._queue:
                    request.error = InferenceFailed(f"the inference runtime for {self.name} stopped")
                    request.done.set()
                self._queue.clear()
                self._group_rows.clear()

    async def _wait_change(self) -> None:
        self._wake = trio.Event()
        await self._wake.wait()

    async def _schedule_one(self, nursery: trio.Nursery) -> None:
        while not self._queue:
            await self._wait_change()
        first = self._queue[0]
        if self.batchable and first.rows is not None:
            deadline = first.enqueued + self.max_wait_s
            while (
                self._group_rows.get(first.group, 0) < self.max_batch
                and trio.current_time() < deadline
                and not first.abandoned
            ):
                with trio.move_on_at(deadline):
                    await self._wait_change()
            if first.abandoned:
                return  # start over with the new oldest request and its own waiting time
        token = object()
        await self._limiter.acquire_on_behalf_of(token)
        batch = self._take()
        if not batch:
            self._limiter.release_on_behalf_of(token)
            return
        nursery.start_soon(self._run_batch, batch, token)

    def _take(self) -> list[_Request]:
        """The next batch: the oldest request and, if mergeable, same-group requests in FIFO order."""
        if not self._queue:
            return []
        first = self._queue[0]
        if not self.batchable or first.rows is None:
            batch = [first]
        else:
            batch, rows = [], 0
            for request in self._queue:
                if request.group != first.group:
                    continue
                assert request.rows is not None
                if batch and rows + request.rows > self.max_batch:
                    break
                batch.append(request)
                rows += request.rows
        chosen = {id(r) for r in batch}
        self._queue = deque(r for r in self._queue if id(r) not in chosen)
        for request in batch:
            request.started = True
            self._count_rows(request, -1)
        self._changed()
        return batch

    async def _run_batch(self, batch: list[_Request], token: object) -> None:
        started = trio.current_time()
        try:
            try:
                run = await self._prepare(batch[0].threads)
            except Exception as exc:  # loading failed: every request of the batch gets the failure
                failure = _ort_failure(exc)
                outcomes: list[Arrays | RuntimeFailure] = [_clone(failure) for _ in batch]
                run_s, merged = 0.0, False
            else:
                outcomes, run_s, merged = await trio.to_thread.run_sync(
                    self._execute, run, batch, limiter=self._threads
                )
        except BaseException:  # cancelled (shutdown, forget) before the batch ran: nobody may hang
            for request in batch:
                request.error = InferenceFailed(f"the inference runtime for {self.name} stopped")
                request.done.set()
            raise
        finally:
            self._limiter.release_on_behalf_of(token)
        now = trio.current_time()
        failed = 0
        for request, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, RuntimeFailure):
                request.error = outcome
                failed += 1
            else:
                request.result = outcome
            request.done.set()
            if not request.abandoned:
                self._latencies.append(now - request.enqueued)
        rows = sum(r.rows or 1 for r in batch)
        self.batches += 1
        self.rows += rows
        self.completed += len(batch) - failed
        self.failed += failed
        self.batch_sizes[rows] += 1
        self._run_ewma = run_s if self._run_ewma is None else 0.8 * self._run_ewma + 0.2 * run_s
        self._requests_ewma = 0.8 * self._requests_ewma + 0.2 * len(batch)
        if self._on_batch is not None:
            shapes = {n: (rows, *a.shape[1:]) if a.ndim else () for n, a in batch[0].inputs.items()}
            report = BatchReport(
                rows=rows,
                requests=len(batch),
                threads=batch[0].threads,
                run_s=run_s,
                queue_s=started - min(r.enqueued for r in batch),
                merged=merged,
                shapes=shapes,
                failed=failed,
            )
            try:
                await self._on_batch(report)
            except Exception:  # a metrics or recording problem must not fail inference
                log.exception("batch report handler failed", extra={"batcher": self.name})

    def _execute(
        self, run: RunSync, batch: list[_Request]
    ) -> tuple[list[Arrays | RuntimeFailure], float, bool]:
        """Worker thread: merge, run, split (or run one by one). Returns outcomes, run time, merged."""
        started = time.perf_counter()
        if len(batch) > 1:
            total = sum(r.rows or 0 for r in batch)
            feeds = {name: np.concatenate([r.inputs[name] for r in batch]) for name in batch[0].inputs}
            try:
                outputs = run(feeds)
            except Exception as exc:
                log.info("merged batch failed; rerunning its requests one by one", extra={"error": str(exc)})
            else:
                if all(o.ndim >= 1 and o.shape[0] == total for o in outputs.values()):
                    results: list[Arrays | RuntimeFailure] = []
                    offset = 0
                    for request in batch:
                        assert request.rows is not None
                        end = offset + request.rows
                        results.append({name: o[offset:end] for name, o in outputs.items()})
                        offset = end
                    return results, time.perf_counter() - started, True
                log.warning("outputs are not batch-major; batching turned off", extra={"batcher": self.name})
                self.batchable = False
        results = []
        for request in batch:
            try:
                results.append(run(request.inputs))
            except Exception as exc:
                results.append(_ort_failure(exc))
        return results, time.perf_counter() - started, False
