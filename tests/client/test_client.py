"""The HTTP client on its own: the generated sync client is up to date, requests are built from the
endpoint table (path parameters encoded), and every error answer becomes an ApiError with the
daemon's status, code and fields. The real daemon is exercised by tests/core/test_conformance.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import httpx
import pytest

from accel_node.client import AsyncClient, Client
from accel_node.core import endpoints as E
from accel_node.errors import ApiError, DaemonNotRunningError, DaemonTimeoutError
from tests.support.daemons import REPO_ROOT


def _generator() -> object:
    spec = importlib.util.spec_from_file_location(
        "unasync_client", REPO_ROOT / "scripts" / "unasync_client.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sync_client_is_generated_from_the_async_one() -> None:
    generator = _generator()
    source = Path(generator.SOURCE).read_text()  # type: ignore[attr-defined]
    generated = generator.generate(source)  # type: ignore[attr-defined]
    assert Path(generator.TARGET).read_text() == generated, "run python scripts/unasync_client.py"  # type: ignore[attr-defined]
    assert "await " not in generated and "async def" not in generated


def test_path_parameters_are_encoded_so_they_never_add_a_segment() -> None:
    assert E.TRUST_REMOVE.url(name="a/b c") == E.TRUST.path + "/a%2Fb%20c"
    assert E.MODEL.url(cid="bafy..") == E.MODELS.path + "/bafy.."


def _answering(status: int, body: bytes, content_type: str = "application/json") -> Client:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    client = Client("http://127.0.0.1:9", "secret", transport=httpx.MockTransport(handler))
    client.seen = seen  # type: ignore[attr-defined]
    return client


def test_an_error_answer_becomes_an_api_error_with_status_code_and_fields() -> None:
    body = {
        "error": {"code": "invalid_input", "message": "input 'x' is wrong", "input": "x"},
        "detail": "...",
    }
    with _answering(400, json.dumps(body).encode()) as api, pytest.raises(ApiError) as caught:
        api.models.show("bafy")
    error = caught.value
    assert (error.http_status, error.error_code, error.fields) == (400, "invalid_input", {"input": "x"})
    assert "input 'x' is wrong (HTTP 400)" in str(error)
    request = api.seen[0]  # type: ignore[attr-defined]
    assert request.method == "GET" and request.url.path == E.MODEL.url(cid="bafy")
    assert request.headers["authorization"] == "Bearer secret"


def test_an_answer_of_another_shape_is_still_an_api_error() -> None:
    with _answering(502, b"<html>bad gateway</html>", "text/html") as api, pytest.raises(ApiError) as caught:
        api.node.status()
    assert caught.value.http_status == 502 and caught.value.error_code == "http_error"
    assert "bad gateway" in str(caught.value)


def test_query_parameters_leave_out_unset_values_and_spell_booleans_as_the_api_does() -> None:
    with _answering(200, b'{"peers": []}') as api:
        assert api.peers.find(gpu=False).peers == []
    assert api.seen[0].url.query == b"gpu=false"  # type: ignore[attr-defined]


async def test_an_unreachable_daemon_is_daemon_not_running() -> None:
    async with AsyncClient("http://127.0.0.1:9", "t", timeout_s=2) as api:  # port 9: discard, closed
        with pytest.raises(DaemonNotRunningError, match="cannot reach the daemon"):
            await api.node.status()


def test_a_slow_daemon_is_a_timeout_not_a_missing_daemon() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    api = Client("http://127.0.0.1:9", "t", transport=httpx.MockTransport(handler))
    with api, pytest.raises(DaemonTimeoutError, match="did not answer in time"):
        api.node.status()
