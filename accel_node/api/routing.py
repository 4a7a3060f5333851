"""Registering a route from its :class:`~accel_node.core.endpoints.Endpoint`, so that the path and
method are written once (the client builds its requests from the same objects)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter

from accel_node.core.endpoints import Endpoint

F = TypeVar("F", bound=Callable[..., Any])


def route(router: APIRouter, endpoint: Endpoint, **options: Any) -> Callable[[F], F]:
    """Decorator: serve ``endpoint`` with the decorated handler (``options`` go to FastAPI)."""

    def register(handler: F) -> F:
        router.add_api_route(endpoint.path, handler, methods=[endpoint.method], **options)
        return handler

    return register
