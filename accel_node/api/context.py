"""What the API handlers may use; built by the node."""

from __future__ import annotations

from dataclasses import dataclass

from accel_node.home import ApiTokens
from accel_node.local import LocalApi
from accel_node.metrics import NodeMetrics
from p2p.events import EventSink, drop


@dataclass(frozen=True)
class ApiContext:
    """The core API the routes adapt to HTTP, and what the middleware needs (tokens, metrics, and
    where refused requests are reported)."""

    core: LocalApi
    metrics: NodeMetrics
    tokens: ApiTokens
    events: EventSink = drop
