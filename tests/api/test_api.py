"""The control API of a real daemon process: auth, endpoints, errors, metrics, OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.daemons import Daemon

pytestmark = pytest.mark.multinode


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    node = Daemon(Path(tmp_path_factory.mktemp("api")) / "home", ACCEL_NODE_P2P_DIAL_TIMEOUT_S="2").start()
    try:
        yield node.wait_ready()
    finally:
        node.kill()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/status"),
        ("GET", "/v1/peers"),
        ("POST", "/v1/peers/connect"),
        ("GET", "/v1/config"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/no/such/path"),
    ],
)
def test_every_endpoint_but_healthz_needs_the_token(daemon: Daemon, method: str, path: str) -> None:
    with httpx.Client(base_url=daemon.url) as client:
        missing = client.request(method, path)
        wrong = client.request(method, path, headers={"Authorization": "Bearer " + "x" * 43})
        not_bearer = client.request(method, path, headers={"Authorization": daemon.token()})
    for response in (missing, wrong, not_bearer):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


def test_healthz_is_open(daemon: Daemon) -> None:
    response = httpx.get(daemon.url + "/healthz")
    assert response.status_code == 200 and response.json() == {"ok": True}


def test_status(daemon: Daemon) -> None:
    body = daemon.api("GET", "/v1/status").json()
    assert body["peer_id"] == daemon.peer_id
    assert body["addrs"] and all(a.endswith("/p2p/" + daemon.peer_id) for a in body["addrs"])
    assert body["version"] == "0.1.0"
    assert body["uptime_s"] > 0
    assert body["connected_peers"] == 0


def test_config_shows_effective_values_without_secrets(daemon: Daemon) -> None:
    config = daemon.api("GET", "/v1/config").json()["config"]
    assert config["p2p"]["dial_timeout_s"] == 2.0  # from the environment override
    assert config["p2p"]["mdns"] is False
    assert config["api"]["host"] == "127.0.0.1"
    assert daemon.token() not in str(config)
    shown = daemon.cli("config", "show", "--json")
    assert shown.returncode == 0 and '"dial_timeout_s": 2.0' in shown.stdout


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"addr": "not-a-multiaddr"}, 400, "invalid multiaddr"),
        ({"addr": "/ip4/127.0.0.1/tcp/1"}, 400, "/p2p/<peer-id>"),
        ({"addr": "/ip4/127.0.0.1/tcp/1/p2p/notapeerid"}, 400, "invalid"),
        ({"addr": "x" * 2000}, 422, ""),
        ({"address": "/ip4/127.0.0.1/tcp/1"}, 422, ""),
        ({}, 422, ""),
    ],
)
def test_connect_rejects_bad_input(daemon: Daemon, body: dict[str, str], status: int, needle: str) -> None:
    response = daemon.api("POST", "/v1/peers/connect", json=body)
    assert response.status_code == status, response.text
    assert needle in str(response.json()["detail"])


def test_connect_rejects_malformed_json(daemon: Daemon) -> None:
    response = daemon.api(
        "POST",
        "/v1/peers/connect",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422


def test_unreachable_peer_is_502(daemon: Daemon) -> None:
    response = daemon.api(
        "POST",
        "/v1/peers/connect",
        json={"addr": "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWEodDWxbEep8zErZ2WVVsoTjryDVEBsXkuwaw5CNWC1Wd"},
    )
    assert response.status_code == 502
    assert "could not connect" in response.json()["detail"]


def test_metrics_are_prometheus_text_with_node_series(daemon: Daemon) -> None:
    daemon.api("GET", "/v1/status")
    response = daemon.api("GET", "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert f'accel_node_info{{peer_id="{daemon.peer_id}",version="0.1.0"}} 1.0' in text
    assert "accel_node_uptime_seconds" in text
    assert "accel_node_connected_peers 0.0" in text
    assert 'accel_node_api_requests_total{method="GET",route="/v1/status",status="200"}' in text
    # Rejected requests are counted too, labelled by route template, not raw path.
    httpx.get(daemon.url + "/no/such/path")
    text = daemon.api("GET", "/metrics").text
    assert 'route="unmatched",status="401"' in text


def test_openapi_documents_endpoints_and_bearer_auth(daemon: Daemon) -> None:
    spec = daemon.api("GET", "/openapi.json").json()
    for path in ("/v1/status", "/v1/peers", "/v1/peers/connect", "/metrics", "/healthz"):
        assert path in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearer": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
