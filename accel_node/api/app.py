"""The FastAPI application of the control API.

Handlers are thin adapters of the core API (:mod:`accel_node.core`, implemented in process by
:mod:`accel_node.local`): they validate input (pydantic), call the core and render its result; they
live in one router per domain (``routes_node``, ``routes_peers``, ``routes_hardware``, ``routes_keys``,
``routes_models``, ``routes_infer``, ``routes_shard``, ``routes_audit``, ``routes_policy``), each
registered from :mod:`accel_node.core.endpoints`. Every error goes through one boundary,
:mod:`accel_node.api.errors`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from accel_node import __version__
from accel_node.api.context import ApiContext
from accel_node.api.errors import document_errors, install_error_handlers
from accel_node.api.middleware import AuthMetricsMiddleware
from accel_node.api.routes_audit import audit_routes
from accel_node.api.routes_hardware import hardware_routes
from accel_node.api.routes_infer import infer_routes
from accel_node.api.routes_keys import key_routes
from accel_node.api.routes_models import model_routes
from accel_node.api.routes_node import node_routes
from accel_node.api.routes_peers import peer_routes
from accel_node.api.routes_policy import policy_routes
from accel_node.api.routes_shard import shard_routes

OPEN_PATHS = ("/healthz",)


def create_app(ctx: ApiContext) -> FastAPI:
    """Build the control API for one node."""
    app = FastAPI(
        title="accel-node control API",
        version=__version__,
        description="Local control API of an accel-node daemon. Every endpoint except /healthz "
        "requires `Authorization: Bearer <token>` (the token is in the node home's api.token; "
        "api.read.token holds a read-only token for the endpoints that change nothing).",
    )
    app.include_router(node_routes(ctx))
    app.include_router(peer_routes(ctx))
    app.include_router(hardware_routes(ctx))
    app.include_router(key_routes(ctx))
    app.include_router(audit_routes(ctx))
    app.include_router(model_routes(ctx))
    app.include_router(infer_routes(ctx))
    app.include_router(shard_routes(ctx))
    app.include_router(policy_routes(ctx))

    install_error_handlers(app)

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
            document_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(
        AuthMetricsMiddleware,
        tokens=ctx.tokens,
        metrics=ctx.metrics,
        open_paths=OPEN_PATHS,
        events=ctx.events,
    )
    return app
