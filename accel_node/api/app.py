"""The FastAPI application of the control API.

Handlers stay thin: they validate input (pydantic), call a service and render its result. Errors
a caller can cause map to 4xx with a ``detail`` message; a peer that cannot be reached maps to 502.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response

from accel_node import __version__
from accel_node.api import schemas
from accel_node.api.middleware import AuthMetricsMiddleware
from accel_node.config import Config, config_as_dict
from accel_node.metrics import CONTENT_TYPE, NodeMetrics
from accel_node.network import PeerNetwork, PeerView
from p2p.errors import DialError, InvalidAddressError

OPEN_PATHS = ("/healthz",)


@dataclass(frozen=True)
class ApiContext:
    """What the API handlers may use; built by the node."""

    network: PeerNetwork
    config: Config
    metrics: NodeMetrics
    token: str
    name: str


def _peer(view: PeerView) -> schemas.Peer:
    return schemas.Peer(
        peer_id=view.peer_id,
        addrs=view.addrs,
        latency_ms=view.latency_ms,
        measured_at=view.measured_at,
    )


def create_app(ctx: ApiContext) -> FastAPI:
    """Build the control API for one node."""
    app = FastAPI(
        title="accel-node control API",
        version=__version__,
        description="Local control API of an accel-node daemon. Every endpoint except /healthz "
        "requires `Authorization: Bearer <token>` (the token is in the node home's api.token).",
    )
    network = ctx.network

    @app.get("/healthz", response_model=schemas.Health, tags=["node"])
    async def healthz() -> schemas.Health:
        """Liveness probe; needs no token."""
        return schemas.Health(ok=True)

    @app.get("/v1/status", response_model=schemas.Status, tags=["node"])
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

    @app.get("/v1/peers", response_model=schemas.Peers, tags=["peers"])
    async def peers() -> schemas.Peers:
        """Peers with an open connection, their addresses and last measured latency."""
        return schemas.Peers(peers=[_peer(v) for v in network.peers()])

    @app.post(
        "/v1/peers/connect",
        response_model=schemas.Peer,
        tags=["peers"],
        responses={400: {"model": schemas.ErrorBody}, 502: {"model": schemas.ErrorBody}},
    )
    async def connect(body: schemas.ConnectRequest) -> schemas.Peer:
        """Connect to a peer by multiaddr (``/ip4/<addr>/tcp/<port>/p2p/<peer-id>``)."""
        return _peer(await network.connect(body.addr))

    @app.get("/v1/config", response_model=schemas.ConfigView, tags=["node"])
    async def config() -> schemas.ConfigView:
        """The effective configuration (file plus environment overrides); holds no secrets."""
        return schemas.ConfigView(config=config_as_dict(ctx.config))

    @app.get("/metrics", tags=["node"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)

    @app.exception_handler(InvalidAddressError)
    async def invalid_address(_: Request, exc: InvalidAddressError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(DialError)
    async def dial_failed(_: Request, exc: DialError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=502)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            schema["security"] = [{"bearer": []}]
            schema["paths"]["/healthz"]["get"]["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(AuthMetricsMiddleware, token=ctx.token, metrics=ctx.metrics, open_paths=OPEN_PATHS)
    return app
