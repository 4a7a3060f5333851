"""Registering a route from its :class:`~accel_node.core.endpoints.Endpoint`, so that the path and
method are written once (the client builds its requests from the same objects), and so is the token
scope the route needs: the middleware (:mod:`accel_node.api.middleware`) says which scope the
caller's token grants, and a route of the admin scope refuses any other with 403 ``forbidden``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request

from accel_node.core.endpoints import OPEN, Endpoint
from accel_node.errors import ApiScopeError
from accel_node.home import ADMIN

F = TypeVar("F", bound=Callable[..., Any])
SCOPE_KEY = "accel_node.scope"  # set in the ASGI scope by the middleware: the caller's token scope


def _require_admin(request: Request) -> None:
    if request.scope.get(SCOPE_KEY) != ADMIN:
        raise ApiScopeError(f"{request.method} {request.url.path} needs the admin API token")


def route(router: APIRouter, endpoint: Endpoint, **options: Any) -> Callable[[F], F]:
    """Decorator: serve ``endpoint`` with the decorated handler (``options`` go to FastAPI)."""

    def register(handler: F) -> F:
        if endpoint.scope not in (OPEN, "read"):
            options["dependencies"] = [*options.get("dependencies", ()), Depends(_require_admin)]
        router.add_api_route(endpoint.path, handler, methods=[endpoint.method], **options)
        return handler

    return register
