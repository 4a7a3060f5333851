"""A synchronous client of the control API, found through the node home's ``api.json``."""

from __future__ import annotations

from typing import Any

import httpx

from accel_node.errors import ApiError, DaemonNotRunningError
from accel_node.home import NodeHome, pid_alive

DEFAULT_TIMEOUT_S = 30.0


class ApiClient:
    """Talks to the daemon running on ``home``."""

    def __init__(self, home: NodeHome, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        info = home.read_api_info()
        if info is None:
            raise DaemonNotRunningError(
                f"no accel-node daemon is running on {home.root} (no api.json); "
                "start one with 'accel-node run'"
            )
        pid = info.get("pid")
        if isinstance(pid, int) and not pid_alive(pid):
            raise DaemonNotRunningError(
                f"the daemon recorded in {home.api_info_path} (pid {pid}) is not running; "
                "start one with 'accel-node run'"
            )
        self.url: str = info["url"]
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {home.token()}"},
            timeout=timeout_s,
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        return self.send(method, path, json=json, params=params).json()

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The raw response of a request (raises ApiError with the daemon's detail on 4xx/5xx)."""
        try:
            response = self._http.request(
                method, path, json=json, content=content, params=params, headers=headers
            )
        except httpx.TransportError as exc:
            raise DaemonNotRunningError(f"cannot reach the daemon at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, f"{detail} (HTTP {response.status_code})")
        return response

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body)
