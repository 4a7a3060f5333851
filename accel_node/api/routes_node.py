"""Routes about the node itself: health, status, configuration, metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from accel_node.api.context import ApiContext
from accel_node.api.routing import route
from accel_node.core import endpoints as E
from accel_node.core.schemas import ConfigView, Health, Status
from accel_node.metrics import CONTENT_TYPE


def node_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["node"])
    node = ctx.core.node

    @route(router, E.HEALTH, response_model=Health)
    async def healthz() -> Health:
        """Liveness probe; needs no token."""
        return Health(ok=True)

    @route(router, E.STATUS, response_model=Status)
    async def status() -> Status:
        """Identity, addresses, version and uptime of this node."""
        return await node.status()

    @route(router, E.CONFIG, response_model=ConfigView)
    async def config() -> ConfigView:
        """The effective configuration (file plus environment overrides); holds no secrets."""
        return await node.config()

    @route(router, E.METRICS, response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(node.metrics_text(), media_type=CONTENT_TYPE)

    return router
