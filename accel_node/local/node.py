"""The node domain in process: identity, status, configuration, metrics."""

from __future__ import annotations

import time

from accel_node import __version__
from accel_node.audit import TOKEN_ROTATED, AuditLog
from accel_node.config import Config, config_as_dict
from accel_node.core.schemas import ConfigView, Status, TokenRotated
from accel_node.errors import InvalidRequestError
from accel_node.home import SCOPES, ApiTokens
from accel_node.metrics import NodeMetrics
from accel_node.network import PeerNetwork


class LocalNode:
    def __init__(
        self,
        network: PeerNetwork,
        config: Config,
        metrics: NodeMetrics,
        name: str,
        *,
        tokens: ApiTokens,
        audit: AuditLog,
    ) -> None:
        self._network = network
        self._config = config
        self._metrics = metrics
        self._name = name
        self._tokens = tokens
        self._audit = audit

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

    async def rotate_token(self, scope: str = "admin") -> TokenRotated:
        """Replace the API token of ``scope``: the old one is refused from now on; the new one is
        only in its file (which the CLI reads)."""
        if scope not in SCOPES:
            raise InvalidRequestError(f"invalid request: scope must be one of {', '.join(SCOPES)}")
        path = self._tokens.rotate(scope)
        self._audit.record(TOKEN_ROTATED, reason=f"{scope} API token rotated", details={"scope": scope})
        await self._audit.flush()
        return TokenRotated(scope=scope, path=str(path), rotated_at=time.time())

    def metrics_text(self) -> bytes:
        """Prometheus exposition of every metric of this node."""
        return self._metrics.render()
