"""What the sync and async clients share: finding the daemon, request pieces, error decoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from accel_node.core.schemas import InferOptions
from accel_node.errors import ApiError, DaemonNotRunningError, DaemonTimeoutError
from accel_node.home import NodeHome, pid_alive

DEFAULT_TIMEOUT_S = 30.0
NPZ = "application/x-npz"
# What a client accepts in an answer: generous, since the client asked for it.
RESPONSE_LIMITS = {
    "max_body_bytes": 1 << 34,
    "max_json_bytes": 1 << 30,
    "max_elements": 1 << 34,
    "max_json_elements": 1 << 28,
}


@dataclass(frozen=True)
class RawOutput:
    """An inference answer as the daemon sent it."""

    content: bytes
    media_type: str


def daemon_address(home: NodeHome) -> tuple[str, str]:
    """``(url, token)`` of the daemon running on ``home``; :class:`DaemonNotRunningError` if none."""
    info = home.read_api_info()
    if info is None:
        raise DaemonNotRunningError(
            f"no accel-node daemon is running on {home.root} (no api.json); start one with 'accel-node run'"
        )
    pid = info.get("pid")
    if isinstance(pid, int) and not pid_alive(pid):
        raise DaemonNotRunningError(
            f"the daemon recorded in {home.api_info_path} (pid {pid}) is not running; "
            "start one with 'accel-node run'"
        )
    return str(info["url"]), home.token()


def auth_headers(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def unreachable(url: str, exc: httpx.TransportError) -> DaemonNotRunningError | DaemonTimeoutError:
    """What a transport failure means to the caller: a daemon that is slow, or one that is not there."""
    if isinstance(exc, httpx.TimeoutException):
        return DaemonTimeoutError(f"the daemon at {url} did not answer in time ({type(exc).__name__})")
    return DaemonNotRunningError(f"cannot reach the daemon at {url}: {exc}")


def check(response: httpx.Response) -> httpx.Response:
    """``response`` if it is a success, else :class:`ApiError` with the daemon's status, code and
    message (``{"error": {...}}``; a body of another shape is shown as text)."""
    if response.status_code < 400:
        return response
    code, message, extra = "http_error", response.text[:500], {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = dict(body["error"])
        code = str(error.pop("code", code))
        message = str(error.pop("message", message))
        extra = error
    elif isinstance(body, dict) and "detail" in body:
        message = str(body["detail"])
    raise ApiError(response.status_code, f"{message} (HTTP {response.status_code})", code=code, extra=extra)


def params(**values: Any) -> dict[str, Any]:
    """Query parameters without the unset (None) ones; booleans as the API spells them."""
    return {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in values.items() if v is not None}


def infer_params(options: InferOptions | None) -> dict[str, Any]:
    return params(**(options or InferOptions()).model_dump())
