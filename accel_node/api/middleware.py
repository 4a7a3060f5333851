"""Bearer-token authentication and request metrics as one pure ASGI middleware.

Pure ASGI (not Starlette's ``BaseHTTPMiddleware``) because it runs on every request and the status
endpoint has a 2 ms p50 budget. Tokens are compared in constant time and never logged.

Two scopes (:class:`accel_node.home.ApiTokens`): the admin token may call anything; the read-only
token only safe methods (GET, HEAD; anything else is refused here with 403 ``forbidden``), and of
those only the endpoints marked ``read`` in :mod:`accel_node.core.endpoints` (checked by the route,
:mod:`accel_node.api.routing`, from the scope this middleware puts in the ASGI scope).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accel_node.api.errors import error_body
from accel_node.api.routing import SCOPE_KEY
from accel_node.home import READ, ApiTokens
from accel_node.metrics import NodeMetrics
from p2p.events import REFUSED, EventSink, SecurityEvent, drop

UNAUTHORIZED_BODY = json.dumps(error_body("unauthorized", "missing or invalid bearer token")).encode()
FORBIDDEN_BODY = json.dumps(
    error_body("forbidden", "the read-only API token may not change anything; use the admin token")
).encode()
SAFE_METHODS = frozenset({"GET", "HEAD"})


class AuthMetricsMiddleware:
    """Rejects requests without ``Authorization: Bearer <token>`` (except ``open_paths``)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: ApiTokens,
        metrics: NodeMetrics,
        open_paths: Iterable[str],
        events: EventSink = drop,
    ) -> None:
        self.app = app
        self._events = events
        self._tokens = tokens
        self._metrics = metrics
        self._open_paths = frozenset(open_paths)

    def _token_scope(self, scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return self._tokens.scope_of(value)
        return None

    async def _refuse(self, send: Send, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        if scope["path"] not in self._open_paths:
            granted = self._token_scope(scope)
            refusal = None
            if granted is None:
                refusal = (401, UNAUTHORIZED_BODY)
            elif granted == READ and scope["method"] not in SAFE_METHODS:
                refusal = (403, FORBIDDEN_BODY)
            if refusal is not None:
                status = refusal[0]
                reason = "unauthorized" if status == 401 else "forbidden"
                details = {"method": scope["method"], "path": scope["path"], "status": status}
                self._events(SecurityEvent(REFUSED, "api", None, reason, details))
                await self._refuse(send, *refusal)
                self._observe(scope, status, start)
                return
            scope[SCOPE_KEY] = granted

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self._observe(scope, status, start)

    def _observe(self, scope: Scope, status: int, start: float) -> None:
        route = scope.get("route")
        # Label by route template, never by raw path, so that label cardinality stays bounded.
        name = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
        self._metrics.api_requests.labels(method=scope["method"], route=name, status=str(status)).inc()
        self._metrics.api_latency.labels(route=name).observe(time.perf_counter() - start)
