"""The control API of a real daemon process: auth, endpoints, errors, metrics, OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from accel_node.client import Client
from accel_node.core import endpoints as E
from accel_node.core.endpoints import Endpoint
from accel_node.errors import ApiError
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
    "endpoint",
    [
        E.STATUS,
        E.PEERS,
        E.PEERS_CONNECT,
        E.CONFIG,
        E.METRICS,
        Endpoint("GET", "/openapi.json"),
        Endpoint("GET", "/docs"),
        Endpoint("GET", "/no/such/path"),
    ],
)
def test_every_endpoint_but_healthz_needs_the_token(daemon: Daemon, endpoint: Endpoint) -> None:
    with Client(daemon.url, None) as client:
        missing = client.transport.send(endpoint, checked=False)
        wrong = client.transport.send(
            endpoint, headers={"Authorization": "Bearer " + "x" * 43}, checked=False
        )
        not_bearer = client.transport.send(endpoint, headers={"Authorization": daemon.token()}, checked=False)
    for response in (missing, wrong, not_bearer):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


def test_healthz_is_open(daemon: Daemon) -> None:
    with Client(daemon.url, None) as client:
        response = client.transport.send(E.HEALTH, checked=False)
        assert client.node.health()
    assert response.status_code == 200 and response.json() == {"ok": True}


def test_status(daemon: Daemon) -> None:
    status = daemon.api.node.status()
    assert status.peer_id == daemon.peer_id
    assert status.addrs and all(a.endswith("/p2p/" + daemon.peer_id) for a in status.addrs)
    assert status.version == "0.1.0"
    assert status.uptime_s > 0
    assert status.connected_peers == 0


def test_config_shows_effective_values_without_secrets(daemon: Daemon) -> None:
    config = daemon.api.node.config().config
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
    response = daemon.api.transport.send(E.PEERS_CONNECT, body=body, checked=False)
    assert response.status_code == status, response.text
    assert needle in str(response.json()["detail"])


def test_connect_rejects_malformed_json(daemon: Daemon) -> None:
    with pytest.raises(ApiError) as refused:
        daemon.api.transport.send(
            E.PEERS_CONNECT, content=b"{not json", headers={"content-type": "application/json"}
        )
    assert refused.value.http_status == 422


def test_unreachable_peer_is_502(daemon: Daemon) -> None:
    with pytest.raises(ApiError) as refused:
        daemon.api.peers.connect(
            "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWEodDWxbEep8zErZ2WVVsoTjryDVEBsXkuwaw5CNWC1Wd"
        )
    assert refused.value.http_status == 502
    assert "could not connect" in str(refused.value)


def test_metrics_are_prometheus_text_with_node_series(daemon: Daemon) -> None:
    daemon.api.node.status()
    response = daemon.api.transport.send(E.METRICS)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert f'accel_node_info{{peer_id="{daemon.peer_id}",version="0.1.0"}} 1.0' in text
    assert "accel_node_uptime_seconds" in text
    assert "accel_node_connected_peers 0.0" in text
    assert f'accel_node_api_requests_total{{method="GET",route="{E.STATUS.path}",status="200"}}' in text
    # Rejected requests are counted too, labelled by route template, not raw path.
    with Client(daemon.url, None) as anonymous:
        anonymous.transport.send(Endpoint("GET", "/no/such/path"), checked=False)
    text = daemon.api.node.metrics_text().decode()
    assert 'route="unmatched",status="401"' in text


def test_openapi_documents_endpoints_and_bearer_auth(daemon: Daemon) -> None:
    spec = daemon.api.transport.json(Endpoint("GET", "/openapi.json"))
    for endpoint in (E.STATUS, E.PEERS, E.PEERS_CONNECT, E.METRICS, E.HEALTH):
        assert endpoint.path in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearer": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
