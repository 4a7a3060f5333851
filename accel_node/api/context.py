"""What the API handlers may use; built by the node."""

from __future__ import annotations

from dataclasses import dataclass

from accel_node.local import LocalApi
from accel_node.metrics import NodeMetrics


@dataclass(frozen=True)
class ApiContext:
    """The core API the routes adapt to HTTP, and what the middleware needs (token, metrics)."""

    core: LocalApi
    metrics: NodeMetrics
    token: str
