"""Prometheus metrics of the inference runtime, registered on the node's registry.

Labels are the model CID and variant (bounded by the models a node holds); :meth:`forget` removes
a model's series when it is dropped.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from accel_node.runtime.batcher import BatchReport

LABELS = ("cid", "variant")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class RuntimeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "accel_node_inference_latency_seconds",
            "Inference request latency, queueing included, of successful requests",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_run = Histogram(
            "accel_node_inference_batch_run_seconds",
            "ONNX Runtime time per executed batch",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "accel_node_inference_queue_depth", "Requests waiting for a batch", LABELS, registry=registry
        )
        self.batch_size = Histogram(
            "accel_node_inference_batch_size",
            "Rows per executed batch",
            LABELS,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.items = Counter("accel_node_inference_items", "Rows (items) inferred", LABELS, registry=registry)
        self.failures = Counter(
            "accel_node_inference_failures",
            "Requests refused or failed, by error type (QueueFull, InferenceTimeout, ...)",
            (*LABELS, "reason"),
            registry=registry,
        )
        self.session_bytes = Gauge(
            "accel_node_inference_session_bytes",
            "Estimated memory of the cached ONNX Runtime sessions",
            registry=registry,
        )
        self._series: set[tuple[str, str]] = set()
        self._reasons: set[tuple[str, str, str]] = set()

    def observe_request(self, cid: str, variant: str, latency_s: float) -> None:
        self._series.add((cid, variant))
        self.latency.labels(cid, variant).observe(latency_s)

    def observe_batch(self, cid: str, variant: str, report: BatchReport) -> None:
        self._series.add((cid, variant))
        self.batch_size.labels(cid, variant).observe(report.rows)
        self.batch_run.labels(cid, variant).observe(report.run_s)
        self.items.labels(cid, variant).inc(report.rows)

    def set_queue_depth(self, cid: str, variant: str, depth: int) -> None:
        self._series.add((cid, variant))
        self.queue_depth.labels(cid, variant).set(depth)

    def count_failure(self, cid: str, variant: str, reason: str) -> None:
        self._reasons.add((cid, variant, reason))
        self.failures.labels(cid, variant, reason).inc()

    def forget(self, cid: str) -> None:
        for series in [s for s in self._series if s[0] == cid]:
            for metric in (self.latency, self.batch_run, self.queue_depth, self.batch_size, self.items):
                with contextlib.suppress(KeyError):  # a series that was never set
                    metric.remove(*series)
            self._series.discard(series)
        for series3 in [s for s in self._reasons if s[0] == cid]:
            self.failures.remove(*series3)
            self._reasons.discard(series3)
