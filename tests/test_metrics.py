"""The node's metrics export what the resource manager holds and refused."""

from __future__ import annotations

from accel_node.metrics import NodeMetrics
from p2p.resources import Limit, ResourceManager


def test_resource_usage_and_refusals_are_exported_per_resource() -> None:
    resources = ResourceManager({"bulk.channels": Limit(per_peer=1, total=4)})
    metrics = NodeMetrics()
    metrics.track_resources(resources)
    resources.reserve("bulk.channels", "peer-a")
    assert resources.try_reserve("bulk.channels", "peer-a") is None
    text = metrics.render().decode()
    assert 'accel_node_resource_used{resource="bulk.channels"} 1.0' in text
    assert 'accel_node_resource_limit{resource="bulk.channels"} 4.0' in text
    assert 'accel_node_resource_refused_total{resource="bulk.channels"} 1.0' in text
