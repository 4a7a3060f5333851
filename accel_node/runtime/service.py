"""The inference service: verified models in, outputs out, with batching, caching and measurements.

The node gives it three hooks:

- ``resolve(cid) -> (model_path, input_signature)`` (sync or async): the fp32 model file of a
  verified model and its manifest's inputs; raises :class:`ModelUnavailable` (unknown model) or
  :class:`ModelNotVerified`. Positive answers are cached for ``resolve_cache_s``; call
  :meth:`InferenceService.forget` when a model is removed.
- ``variant_path(cid, variant) -> Path | None`` (sync or async): the file of a built precision
  variant, None when there is none (then :class:`ModelUnavailable` names the variant).
- ``record(measurement)`` (async, optional): receives a sample (``sample_rate``) of executed
  batches as measurement records (see :meth:`InferenceService._measurement`).

Start :meth:`InferenceService.run` in a nursery. The service owns the batchers (one per model
and variant, started by the first request for it): they live as long as the service, or until
:meth:`InferenceService.forget`; a batcher that fails is logged, passed to ``on_failure`` and
started afresh by the next request.
"""

from __future__ import annotations

import inspect
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import trio
from trio_typing import TaskStatus

from accel_node.config import RuntimeSection
from accel_node.runtime.batcher import Batcher, BatchReport, RunSync
from accel_node.runtime.codecs import TensorLimits
from accel_node.runtime.errors import InferenceFailed, InputError, ModelUnavailable, RuntimeFailure
from accel_node.runtime.measure import default_threads
from accel_node.runtime.metrics import RuntimeMetrics
from accel_node.runtime.sessions import SessionCache, SessionKey
from accel_node.runtime.validation import Arrays, Signature, is_static, validate
from p2p.tasks import FailureHook, OwnedTasks

T = TypeVar("T")
MAX_THREADS = 256
Resolved = tuple[Path, Signature]
Resolve = Callable[[str], Resolved | Awaitable[Resolved]]
VariantPath = Callable[[str, str], Path | Awaitable[Path | None] | None]
Record = Callable[[dict[str, Any]], Awaitable[None]]


class RuntimeSettings(RuntimeSection):
    """How the runtime serves: the ``[runtime]`` config section itself (the same fields, defaults,
    bounds and validation, declared once in :mod:`accel_node.config`), plus what derives from it.

    ``RuntimeSettings(**config.runtime.model_dump())`` or keyword arguments (tests, benchmarks);
    invalid values raise pydantic's ``ValidationError`` (a ``ValueError``) naming the field.
    """

    @property
    def limits(self) -> TensorLimits:
        return TensorLimits(
            max_body_bytes=self.max_body_bytes,
            max_json_bytes=self.max_json_bytes,
            max_elements=self.max_elements,
            max_json_elements=self.max_json_elements,
        )


@dataclass(frozen=True)
class ModelRef:
    """A servable model variant: its file and the (parent's) input signature."""

    cid: str
    variant: str
    path: Path
    signature: Signature


@dataclass
class _Served:
    batcher: Batcher
    path: Path
    scope: trio.CancelScope


async def _maybe_await(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await value
    return value


class InferenceService:
    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        resolve: Resolve,
        variant_path: VariantPath | None = None,
        record: Record | None = None,
        metrics: RuntimeMetrics | None = None,
        providers: Sequence[str] | None = None,
        on_failure: FailureHook | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = SessionCache(settings.memory_budget_bytes, providers=providers)
        self.limiter = trio.CapacityLimiter(settings.concurrency)  # concurrent ORT runs, all models
        self._resolve = resolve
        self._variant_path = variant_path
        self._record = record
        self._metrics = metrics
        self._resolved: dict[tuple[str, str], tuple[ModelRef, float]] = {}
        self._served: dict[tuple[str, str], _Served] = {}
        self._serve_lock = trio.Lock()
        self._tasks = OwnedTasks("inference", on_failure=on_failure)
        self._random = random.Random()  # noqa: S311 - sampling, not security
        self._process = psutil.Process()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._tasks.open():
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._served.clear()

    # -- the API's entry points ---------------------------------------------------------------

    async def model(self, cid: str, variant: str = "fp32") -> ModelRef:
        """The servable file and signature of ``cid``'s ``variant`` (for decoding request bodies)."""
        key = (cid, variant)
        cached = self._resolved.get(key)
        if cached is not None and cached[1] > trio.current_time():
            return cached[0]
        path, signature = await _maybe_await(self._resolve(cid))
        if variant != "fp32":
            found = await _maybe_await(self._variant_path(cid, variant)) if self._variant_path else None
            if found is None:
                raise ModelUnavailable(f"model {cid} has no {variant!r} variant on this node; build it first")
            path = found
        ref = ModelRef(cid, variant, Path(path), tuple(signature))
        if self.settings.resolve_cache_s > 0:
            self._resolved[key] = (ref, trio.current_time() + self.settings.resolve_cache_s)
        return ref

    async def infer(
        self,
        cid: str,
        inputs: dict[str, Any],
        *,
        variant: str = "fp32",
        threads: int | None = None,
        timeout_s: float | None = None,
    ) -> Arrays:
        """Outputs of ``cid`` (``variant``) for ``inputs``, validated against its signature.

        ``threads``: intra-op threads for this request's session (None: the configured default);
        ``timeout_s``: queueing and running together (None: ``request_timeout_s``).
        """
        if threads is not None and not 0 <= threads <= MAX_THREADS:
            raise InputError(f"threads must be in 0..{MAX_THREADS}")
        if timeout_s is not None and timeout_s <= 0:
            raise InputError("timeout must be positive")
        started = trio.current_time()
        ref: ModelRef | None = None
        try:
            ref = await self.model(cid, variant)
            arrays = validate(inputs, ref.signature)
            served = await self._serve(ref)
            outputs = await served.batcher.submit(
                arrays,
                threads=self.settings.intra_op_threads if threads is None else threads,
                timeout_s=self.settings.request_timeout_s if timeout_s is None else timeout_s,
            )
        except RuntimeFailure as exc:
            if self._metrics is not None:  # unknown CIDs share one series: clients choose them
                labels = (cid, variant) if ref is not None else ("-", "-")
                self._metrics.count_failure(*labels, type(exc).__name__)
            raise
        if self._metrics is not None:
            self._metrics.observe_request(cid, variant, trio.current_time() - started)
        return outputs

    async def forget(self, cid: str) -> None:
        """Drop everything held for ``cid`` (call it when the model is removed)."""
        for key in [k for k in self._served if k[0] == cid]:
            self._served.pop(key).scope.cancel()
        for key in [k for k in self._resolved if k[0] == cid]:
            del self._resolved[key]
        self.sessions.drop(cid)
        if self._metrics is not None:
            self._metrics.forget(cid)
            self._metrics.session_bytes.set(self.sessions.used_bytes)
        await trio.lowlevel.checkpoint()

    def stats(self) -> dict[str, Any]:
        return {
            "sessions": [e.describe() for e in self.sessions.entries()],
            "session_bytes": self.sessions.used_bytes,
            "memory_budget_bytes": self.sessions.budget_bytes,
            "batchers": {f"{cid}/{variant}": s.batcher.stats() for (cid, variant), s in self._served.items()},
        }

    # -- batchers -----------------------------------------------------------------------------

    async def _serve(self, ref: ModelRef) -> _Served:
        key = (ref.cid, ref.variant)
        served = self._served.get(key)
        if served is not None and served.path == ref.path:
            return served
        async with self._serve_lock:
            served = self._served.get(key)
            if served is not None and served.path == ref.path:
                return served
            if served is not None:  # the variant file changed: start afresh
                served.scope.cancel()
                self.sessions.drop(ref.cid, ref.variant)
            if not self._tasks.running:
                raise InferenceFailed("the inference service is not running")
            batcher = Batcher(
                self._preparer(ref),
                signature=ref.signature,
                limiter=self.limiter,
                max_batch=self.settings.max_batch,
                max_wait_ms=self.settings.max_wait_ms,
                max_queue=self.settings.max_queue,
                name=f"{ref.cid}/{ref.variant}",
                on_batch=lambda report: self._on_batch(ref, report),
                on_depth=self._depth_observer(ref),
            )
            scope: trio.CancelScope = await self._tasks.start("batcher", self._run_batcher, key, batcher)
            served = _Served(batcher, ref.path, scope)
            self._served[key] = served
            return served

    async def _run_batcher(
        self, key: tuple[str, str], batcher: Batcher, *, task_status: TaskStatus[trio.CancelScope]
    ) -> None:
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as inner:
                    await inner.start(batcher.run)
                    task_status.started(scope)
        finally:  # a batcher that stopped is not served any more: the next request starts one
            served = self._served.get(key)
            if served is not None and served.batcher is batcher:
                del self._served[key]

    def _preparer(self, ref: ModelRef) -> Callable[[int | None], Awaitable[RunSync]]:
        async def prepare(threads: int | None) -> RunSync:
            key = SessionKey(
                cid=ref.cid,
                variant=ref.variant,
                intra_op_threads=self.settings.intra_op_threads if threads is None else threads,
                inter_op_threads=self.settings.inter_op_threads,
                graph_optimization=self.settings.graph_optimization,
            )
            entry = await self.sessions.get(key, ref.path)
            if self._metrics is not None:
                self._metrics.session_bytes.set(self.sessions.used_bytes)
            return entry.run

        return prepare

    def _depth_observer(self, ref: ModelRef) -> Callable[[int], None] | None:
        metrics = self._metrics
        if metrics is None:
            return None
        return lambda depth: metrics.set_queue_depth(ref.cid, ref.variant, depth)

    async def _on_batch(self, ref: ModelRef, report: BatchReport) -> None:
        if self._metrics is not None:
            self._metrics.observe_batch(ref.cid, ref.variant, report)
        if (
            self._record is not None
            and report.failed < report.requests
            and self._random.random() < self.settings.sample_rate
        ):
            await self._record(self._measurement(ref, report))

    def _measurement(self, ref: ModelRef, report: BatchReport) -> dict[str, Any]:
        """A live measurement record.

        ``latency_ms`` is the batch's ORT run time (merge and split included, queueing not);
        ``peak_rss_bytes`` is the process RSS right after the batch (a live request is not sampled
        while it runs); ``seq_len`` is the size of the first input's first dynamic non-batch axis.
        """
        seq_len = None
        for spec in ref.signature:
            shape = report.shapes.get(spec.name, ())
            dynamic = [axis for axis, d in enumerate(spec.shape) if axis > 0 and not is_static(d)]
            if dynamic and len(shape) > dynamic[0]:
                seq_len = shape[dynamic[0]]
                break
        threads = report.threads or default_threads()
        return {
            "source": "live",
            "time": time.time(),
            "cid": ref.cid,
            "variant": ref.variant,
            "batch": report.rows,
            "requests": report.requests,
            "threads": threads,
            "seq_len": seq_len,
            "latency_ms": report.run_s * 1000,
            "queue_ms": report.queue_s * 1000,
            "throughput_items_s": report.rows / report.run_s if report.run_s > 0 else 0.0,
            "peak_rss_bytes": self._process.memory_info().rss,
            "graph_optimization": self.settings.graph_optimization,
        }
