"""The one error boundary of the control API.

Every exception that leaves a route is rendered here as ``{"error": {"code", "message", ...},
"detail": message}`` (``detail``, and ``input`` where an input is named, repeat what ``error``
says for clients written before codes existed):

- :class:`~accel_node.errors.AccelNodeError`: its own ``status``, ``code``, ``extra()`` and
  ``headers()`` (the taxonomy lives with each package, in its ``errors.py``);
- errors of the :mod:`p2p` substrate (which cannot know about HTTP), translated by
  :func:`accel_node.errors.from_p2p` (the in-process core translates them the same way);
- request validation (pydantic): 422 ``invalid_request`` with one entry per problem;
- Starlette's own HTTP errors (unknown path, wrong method): their status, with a code;
- anything else is a bug: 500 ``internal``, logged with its traceback, and the message says no more
  than that (internals never reach the caller).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from accel_node.core.schemas import ErrorResponse
from accel_node.errors import AccelNodeError, from_p2p
from p2p.errors import P2PError

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal",
    502: "bad_gateway",
    503: "unavailable",
    504: "timeout",
}
MAX_VALIDATION_ITEMS = 20
LEGACY_FIELDS = ("input",)  # top-level fields of error bodies before error.code existed


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON of an error answer (``detail`` and the legacy fields repeat what ``error`` says)."""
    body: dict[str, Any] = {"error": {"code": code, "message": message, **extra}, "detail": message}
    body.update({name: extra[name] for name in LEGACY_FIELDS if name in extra})
    return body


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


def _validation_items(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Where and why, without echoing the input back (it can be large, or a secret)."""
    items = []
    for error in list(exc.errors())[:MAX_VALIDATION_ITEMS]:
        loc = [part if isinstance(part, int) else str(part)[:64] for part in error.get("loc", ())]
        items.append({"loc": loc, "message": str(error.get("msg", ""))[:300], "type": str(error.get("type"))})
    return items


def _summary(items: list[dict[str, Any]]) -> str:
    parts = []
    for item in items:
        loc = [str(part) for part in item["loc"]]
        where = ".".join(loc[1:]) or (loc[0] if loc else "request")  # drop "body"/"query" when there is more
        parts.append(f"{where}: {item['message']}")
    return "invalid request: " + "; ".join(parts[:5]) if parts else "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Register the boundary on ``app``."""

    @app.exception_handler(AccelNodeError)
    async def node_error(_: Request, exc: AccelNodeError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("request failed", extra={"code": exc.code, "error": str(exc)})
        return error_response(exc.status, exc.code, str(exc), headers=exc.headers() or None, **exc.extra())

    @app.exception_handler(P2PError)
    async def p2p_error(request: Request, exc: P2PError) -> JSONResponse:
        return await node_error(request, from_p2p(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        items = _validation_items(exc)
        return error_response(422, "invalid_request", _summary(items), errors=items)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(
            exc.status_code, code, str(exc.detail), headers=dict(exc.headers) if exc.headers else None
        )

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.error("internal error while serving a request", exc_info=exc)
        return error_response(500, "internal", "internal error; the daemon's log has the details")


def document_errors(schema: dict[str, Any]) -> None:
    """Make the OpenAPI description say what every error answer looks like: each operation's
    ``422`` and ``default`` responses are :class:`~accel_node.core.schemas.ErrorResponse`."""
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    content = {"application/json": {"schema": ref}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components["ErrorResponse"] = body
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status, response in list(responses.items()):
                if status[0] in "45" and status != "default":
                    response["content"] = content
            if "422" in responses:
                responses["422"]["description"] = "invalid request (the error lists each problem)"
            responses["default"] = {"description": "error", "content": content}
