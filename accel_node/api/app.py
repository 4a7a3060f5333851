"""The FastAPI application of the control API.

Handlers stay thin: they validate input (pydantic), call a service and render its result; they
live in one router per concern (``routes_node``, ``routes_peers``, ``routes_hardware``, ``routes_keys``,
``routes_models``, ``routes_infer``). Errors a
caller can cause map to 4xx with a ``detail`` message; a peer that cannot be reached maps to 502.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from accel_node import __version__
from accel_node.api.context import ApiContext
from accel_node.api.middleware import AuthMetricsMiddleware
from accel_node.api.routes_hardware import hardware_routes
from accel_node.api.routes_infer import infer_routes
from accel_node.api.routes_keys import key_routes
from accel_node.api.routes_models import model_routes
from accel_node.api.routes_node import node_routes
from accel_node.api.routes_peers import peer_routes
from accel_node.api.routes_shard import shard_routes
from accel_node.errors import UsageError
from accel_node.runtime.errors import InputError, QueueFull, RuntimeFailure
from accel_node.shard.errors import (
    ShardError,
    ShardRequestError,
    ShardRouteError,
    ShardTimeoutError,
    ShardVerificationError,
)
from p2p.errors import DialError, InvalidAddressError

OPEN_PATHS = ("/healthz",)


def create_app(ctx: ApiContext) -> FastAPI:
    """Build the control API for one node."""
    app = FastAPI(
        title="accel-node control API",
        version=__version__,
        description="Local control API of an accel-node daemon. Every endpoint except /healthz "
        "requires `Authorization: Bearer <token>` (the token is in the node home's api.token).",
    )
    app.include_router(node_routes(ctx))
    app.include_router(peer_routes(ctx))
    app.include_router(hardware_routes(ctx))
    app.include_router(key_routes(ctx))
    app.include_router(model_routes(ctx))
    app.include_router(infer_routes(ctx))
    app.include_router(shard_routes(ctx))

    @app.exception_handler(ShardError)
    async def shard_failure(_: Request, exc: ShardError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=shard_status(exc))

    @app.exception_handler(RuntimeFailure)
    async def runtime_failure(_: Request, exc: RuntimeFailure) -> JSONResponse:
        headers = {}
        if isinstance(exc, QueueFull):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        body: dict[str, Any] = {"detail": str(exc)}
        if isinstance(exc, InputError) and exc.input_name is not None:
            body["input"] = exc.input_name
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(InvalidAddressError)
    async def invalid_address(_: Request, exc: InvalidAddressError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(UsageError)
    async def usage_error(_: Request, exc: UsageError) -> JSONResponse:
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


def shard_status(exc: ShardError) -> int:
    """HTTP status of a sharded-inference failure."""
    if isinstance(exc, ShardRequestError):
        return 400
    if isinstance(exc, ShardRouteError):
        return 503  # no capable peer serves a stage (now)
    if isinstance(exc, ShardVerificationError):
        return 502
    if isinstance(exc, ShardTimeoutError):
        return 504
    return 422  # plans that do not fit, bad stage numbers, ...
