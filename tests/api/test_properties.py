"""Property-based testing of the whole control API from its own OpenAPI description
(schemathesis + hypothesis) against a real daemon in its own process.

For every operation, generated requests (valid and invalid ones) must never get a 5xx answer,
and every answer must match the schema the API publishes for its status (errors included: the
``ErrorResponse`` body). The budget is bounded (examples per operation) so that CI stays fast.

Left out of generation, each for a reason that has nothing to do with robustness:
``POST /v1/profile`` (a valid request starts minutes of CPU-heavy profiling), ``POST
/v1/peers/connect`` (a generated address must never make the daemon dial anything but loopback;
the conformance suite covers its refusals), ``POST /v1/api-token/rotate`` (a valid request replaces
the token this run authenticates with; tests/api/test_scopes.py covers it) and ``GET /metrics``
(Prometheus text, not JSON).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from accel_node.client import Client
from accel_node.core import endpoints as E
from accel_node.core.endpoints import Endpoint
from tests.support.daemons import Daemon

pytestmark = pytest.mark.multinode

EXAMPLES_PER_OPERATION = 8
SKIPPED = {(e.method, e.path) for e in (E.PROFILE_START, E.PEERS_CONNECT, E.METRICS, E.API_TOKEN_ROTATE)}
OPENAPI = Endpoint("GET", "/openapi.json")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    started = Daemon(tmp_path_factory.mktemp("props") / "node").start().wait_ready()
    yield started
    started.kill()


def _openapi(daemon: Daemon) -> dict[str, Any]:
    answer: dict[str, Any] = daemon.api.transport.json(OPENAPI)
    return answer


def _operations(daemon: Daemon) -> list[Any]:
    raw = _openapi(daemon)
    schema = schemathesis.openapi.from_dict(raw)
    operations = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) not in SKIPPED:
            operations.append(operation)
    return operations


def test_no_generated_request_gets_a_server_error_or_an_undocumented_body(daemon: Daemon) -> None:
    operations = _operations(daemon)
    assert len(operations) >= 30
    headers = {"Authorization": f"Bearer {daemon.token()}"}
    strategy = st.one_of(
        [op.as_strategy(generation_mode=mode) for op in operations for mode in schemathesis.GenerationMode]
    )
    checked: set[str] = set()

    @settings(
        max_examples=EXAMPLES_PER_OPERATION * len(operations),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(case=strategy)
    def property_holds(case: Any) -> None:
        response = case.call(base_url=daemon.url, headers=headers, timeout=60)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        checked.add(f"{case.method} {case.path}")

    property_holds()
    assert len(checked) >= len(operations) // 2, sorted(checked)
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()


def test_the_schema_documents_the_error_body(daemon: Daemon) -> None:
    raw = _openapi(daemon)
    error = raw["components"]["schemas"]["ErrorResponse"]
    assert set(error["required"]) >= {"error", "detail"}
    for path, item in raw["paths"].items():
        for method, operation in item.items():
            default = operation["responses"]["default"]["content"]["application/json"]["schema"]
            assert default == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path)


def test_unknown_paths_and_methods_answer_the_error_body(daemon: Daemon) -> None:
    with Client(daemon.url, None) as anonymous:
        for endpoint, client, status, code in [
            (Endpoint("GET", "/v1/nope"), daemon.api, 404, "not_found"),  # no such endpoint, on purpose
            (Endpoint("PUT", E.STATUS.path), daemon.api, 405, "method_not_allowed"),
            (E.STATUS, anonymous, 401, "unauthorized"),
        ]:
            response = client.transport.send(endpoint, checked=False)
            assert response.status_code == status
            body = response.json()
            assert body["error"]["code"] == code and body["detail"] == body["error"]["message"]
