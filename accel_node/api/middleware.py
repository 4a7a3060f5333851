"""Bearer-token authentication and request metrics as one pure ASGI middleware.

Pure ASGI (not Starlette's ``BaseHTTPMiddleware``) because it runs on every request and the status
endpoint has a 2 ms p50 budget. The token is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accel_node.api.errors import error_body
from accel_node.metrics import NodeMetrics

UNAUTHORIZED_BODY = json.dumps(error_body("unauthorized", "missing or invalid bearer token")).encode()


class AuthMetricsMiddleware:
    """Rejects requests without ``Authorization: Bearer <token>`` (except ``open_paths``)."""

    def __init__(self, app: ASGIApp, *, token: str, metrics: NodeMetrics, open_paths: Iterable[str]) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode("ascii")
        self._metrics = metrics
        self._open_paths = frozenset(open_paths)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self._expected)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        if scope["path"] not in self._open_paths and not self._authorized(scope):
            status = 401
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b"Bearer"),
                        (b"content-length", str(len(UNAUTHORIZED_BODY)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": UNAUTHORIZED_BODY})
            self._observe(scope, status, start)
            return

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
