"""The node domain in process: identity, status, configuration, metrics."""

from __future__ import annotations

from accel_node import __version__
from accel_node.config import Config, config_as_dict
from accel_node.core.schemas import ConfigView, Status
from accel_node.metrics import NodeMetrics
from accel_node.network import PeerNetwork


class LocalNode:
    def __init__(self, network: PeerNetwork, config: Config, metrics: NodeMetrics, name: str) -> None:
        self._network = network
        self._config = config
        self._metrics = metrics
        self._name = name

    async def status(self) -> Status:
        network = self._network
        return Status(
            peer_id=network.peer_id,
            name=self._name,
            version=__version__,
            addrs=network.own_addrs(),
            uptime_s=round(self._metrics.uptime_s(), 3),
            connected_peers=len(network.host.get_connected_peers()),
        )

    async def config(self) -> ConfigView:
        return ConfigView(config=config_as_dict(self._config))

    def metrics_text(self) -> bytes:
        """Prometheus exposition of every metric of this node."""
        return self._metrics.render()
