"""Serving the control API with hypercorn's trio worker, inside the node's nursery."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from fastapi import FastAPI
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from trio_typing import TaskStatus

from p2p.addrs import is_loopback_host

log = logging.getLogger(__name__)


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def client_url(bound_url: str, host: str) -> str:
    """The URL a local client should use: a wildcard bind is reached through loopback."""
    if host in ("0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
        port = bound_url.rsplit(":", 1)[1]
        return f"http://127.0.0.1:{port}"
    return bound_url


async def serve_api(
    app: FastAPI,
    *,
    host: str,
    port: int,
    grace_s: float,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` returns, then let in-flight requests finish
    within ``grace_s``. Reports the bound URLs once listening."""
    config = HypercornConfig()
    config.bind = [_bind(host, port)]
    config.graceful_timeout = grace_s
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 30
    if not is_loopback_host(host):
        log.warning("control API is reachable from other machines", extra={"bind": config.bind[0]})
    # FastAPI is an ASGI app; its declared signature is looser than hypercorn's typed protocol.
    await serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)  # type: ignore[arg-type]
