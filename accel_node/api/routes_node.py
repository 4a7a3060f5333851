"""Routes about the node itself: health, status, configuration, metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from accel_node import __version__
from accel_node.api import schemas
from accel_node.api.context import ApiContext
from accel_node.config import config_as_dict
from accel_node.metrics import CONTENT_TYPE


def node_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter()
    network = ctx.network

    @router.get("/healthz", response_model=schemas.Health, tags=["node"])
    async def healthz() -> schemas.Health:
        """Liveness probe; needs no token."""
        return schemas.Health(ok=True)

    @router.get("/v1/status", response_model=schemas.Status, tags=["node"])
    async def status() -> schemas.Status:
        """Identity, addresses, version and uptime of this node."""
        return schemas.Status(
            peer_id=network.peer_id,
            name=ctx.name,
            version=__version__,
            addrs=network.own_addrs(),
            uptime_s=round(ctx.metrics.uptime_s(), 3),
            connected_peers=len(network.host.get_connected_peers()),
        )

    @router.get("/v1/config", response_model=schemas.ConfigView, tags=["node"])
    async def config() -> schemas.ConfigView:
        """The effective configuration (file plus environment overrides); holds no secrets."""
        return schemas.ConfigView(config=config_as_dict(ctx.config))

    @router.get("/metrics", tags=["node"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)

    return router
