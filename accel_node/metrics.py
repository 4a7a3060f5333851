"""Prometheus metrics of one node, in a registry of its own (never the process-global one)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from accel_node import __version__
from p2p.resources import ResourceManager

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeMetrics:
    """The metrics a node exports at ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.started_at = time.monotonic()
        self.info = Info("accel_node", "Build and identity of this node", registry=self.registry)
        self.uptime = Gauge(
            "accel_node_uptime_seconds", "Seconds since the daemon started", registry=self.registry
        )
        self.uptime.set_function(self.uptime_s)
        self.connected_peers = Gauge(
            "accel_node_connected_peers",
            "Peers with an open libp2p connection",
            registry=self.registry,
        )
        self.api_requests = Counter(
            "accel_node_api_requests",
            "Control API requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.api_latency = Histogram(
            "accel_node_api_request_duration_seconds",
            "Control API request handling time",
            ["route"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=self.registry,
        )
        self.ping_rtt = Histogram(
            "accel_node_peer_rtt_seconds",
            "Round-trip time of libp2p pings to peers",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.dials = Counter(
            "accel_node_dials",
            "Outbound connection attempts by result",
            ["result"],
            registry=self.registry,
        )
        self.records_rejected = Counter(
            "accel_node_records_rejected",
            "Signed records from peers that were refused, by kind and reason",
            ["kind", "reason"],
            registry=self.registry,
        )

        self.peer_penalties = Counter(
            "accel_node_peer_penalties",
            "Penalties given to peers for provably bad data or messages, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.peer_exclusions = Counter(
            "accel_node_peer_exclusions",
            "Times a peer reached the penalty limit and was excluded for a while",
            registry=self.registry,
        )

        self.background_failures = Counter(
            "accel_node_background_failures",
            "Background tasks owned by a service that failed, by service and task",
            ["service", "task"],
            registry=self.registry,
        )

    def background_failure(self, service: str, task: str, exc: BaseException) -> None:
        """Count one failed background task (a services' ``on_failure`` hook; the owner logs it)."""
        self.background_failures.labels(service=service, task=task).inc()

    def uptime_s(self) -> float:
        return time.monotonic() - self.started_at

    def set_identity(self, peer_id: str) -> None:
        self.info.info({"version": __version__, "peer_id": peer_id})

    def track_peers(self, count: Callable[[], int]) -> None:
        self.connected_peers.set_function(count)

    def track_resources(self, resources: ResourceManager) -> None:
        """Export what the resource manager holds and refused, per resource (read at scrape time)."""
        self.registry.register(_ResourceCollector(resources))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ResourceCollector(Collector):
    """``accel_node_resource_{used,limit}`` and ``accel_node_resource_refused_total`` by resource."""

    def __init__(self, resources: ResourceManager) -> None:
        self._resources = resources

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "accel_node_resource_used", "Units reserved now, by resource", labels=["resource"]
        )
        limit = GaugeMetricFamily(
            "accel_node_resource_limit", "Limit in total, by resource", labels=["resource"]
        )
        refused = CounterMetricFamily(
            "accel_node_resource_refused",
            "Reservations refused at a per-peer or total limit, by resource",
            labels=["resource"],
        )
        for usage in self._resources.usage():
            used.add_metric([usage.resource], usage.used)
            limit.add_metric([usage.resource], usage.total_limit)
            refused.add_metric([usage.resource], usage.refused)
        yield from (used, limit, refused)
