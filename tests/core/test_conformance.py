"""One conformance suite for the core API, run against both implementations: the in-process one
(:class:`accel_node.local.LocalApi` of a node running in this test's trio loop) and the HTTP client
(:class:`accel_node.client.AsyncClient` talking to a real daemon in its own process).

The same cases must give the same answers, and every refusal the same status and code.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from accel_node import __version__
from accel_node.client import AsyncClient
from accel_node.core import endpoints as E
from accel_node.core.contract import CoreApi
from accel_node.core.schemas import InferOptions, PlanRequest, PolicyPut, PolicyRule, PublishRequest
from accel_node.errors import AccelNodeError, ApiError
from tests.support.daemons import Daemon
from tests.support.inprocess import in_process_node
from tests.support.modelzoo import Zoo, zoo  # noqa: F401

pytestmark = pytest.mark.multinode

UNKNOWN_CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"  # sha256 of "hello world"
UNKNOWN_PEER = "12D3KooWGRUVh9QXFz4nqkMJbyHqnYFHkmSz1Bs5rUoWHk9fGMLh"


@contextmanager
def refused(code: str, status: int) -> Iterator[None]:
    """The block must fail with ``code`` and ``status``, in process or over HTTP alike."""
    try:
        yield
    except ApiError as exc:
        assert (exc.error_code, exc.http_status) == (code, status), exc
    except AccelNodeError as exc:
        assert (exc.code, exc.status) == (code, status), exc
    else:
        pytest.fail(f"expected {code} ({status})")


@asynccontextmanager
async def local_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CoreApi]:
    """A node running in this test's trio loop, and its in-process core API."""
    async with in_process_node(tmp_path / "local", monkeypatch) as (_, node):
        assert node.core is not None
        yield node.core


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon in its own process for the module (the cases do not get in each other's way)."""
    started = Daemon(tmp_path_factory.mktemp("conformance") / "remote").start().wait_ready()
    yield started
    started.kill()


@pytest.fixture(params=["local", "http"])
async def core(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[CoreApi]:
    """The core API, in process (a node in this test's trio loop) or over HTTP (the daemon)."""
    if request.param == "local":
        async with local_core(tmp_path, monkeypatch) as api:
            yield api
    else:
        daemon: Daemon = request.getfixturevalue("daemon")
        async with AsyncClient(daemon.url, daemon.token()) as client:
            yield client


def _model_dir(zoo: Zoo, tmp_path: Path) -> Path:  # noqa: F811
    directory = tmp_path / "mlp-model"
    directory.mkdir()
    shutil.copy(zoo.mlp(), directory / "model.onnx")
    return directory


async def test_node_status_and_config(core: CoreApi) -> None:
    status = await core.node.status()
    assert status.version == __version__
    assert status.peer_id.startswith("12D3KooW") and status.addrs
    config = (await core.node.config()).config
    assert config["api"]["host"] == "127.0.0.1" and "token" not in str(config).lower()


async def test_keys_and_trust(core: CoreApi) -> None:
    own = await core.keys.new_key("conformance")
    assert own.own and own.public_key.startswith("ed25519:")
    assert "conformance" in [k.name for k in (await core.keys.own_keys()).keys]
    other = "ed25519:" + "A" * 43  # 32 zero bytes in base64url
    trusted = await core.keys.trust(other, "friend")
    assert not trusted.own
    names = {k.name: k.own for k in (await core.keys.trusted()).keys}
    assert names["conformance"] is True and names["friend"] is False
    assert (await core.keys.untrust("friend")).key_id == trusted.key_id
    with refused("publisher_key_not_found", 404):
        await core.keys.untrust("friend")
    with refused("invalid_publisher_key", 400):
        await core.keys.untrust("conformance")  # own keys stay trusted
    with refused("invalid_publisher_key", 400):
        await core.keys.trust("ed25519:short", "broken")


async def test_model_refusals(core: CoreApi) -> None:
    with refused("invalid_cid", 422):
        await core.models.show("not-a-cid")
    with refused("invalid_cid", 422):
        await core.models.analysis("not-a-cid")
    with refused("model_not_found", 404):
        await core.models.show(UNKNOWN_CID)
    with refused("not_found", 404):
        await core.models.fetch_progress(UNKNOWN_CID)
    with refused("model_unavailable", 404):
        await core.inference.infer(UNKNOWN_CID, {"x": np.zeros((1, 64), np.float32)})
    with refused("bad_request", 400):
        await core.models.analysis(UNKNOWN_CID, {"seq": 0})


async def test_publish_infer_remove(core: CoreApi, zoo: Zoo, tmp_path: Path) -> None:  # noqa: F811
    await core.keys.new_key("pub")
    model = await core.models.publish(PublishRequest(dir=str(_model_dir(zoo, tmp_path)), key="pub"))
    assert [m.cid for m in (await core.models.list()).models] == [model.cid]
    assert (await core.models.show(model.cid)).cid == model.cid
    analysis = await core.models.analysis(model.cid, {"batch": 2})
    assert analysis["parameters"]["count"] == 64 * 128 + 128 + 128 * 10 + 10

    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    session = ort.InferenceSession(str(zoo.mlp()), providers=["CPUExecutionProvider"])
    expected: Any = session.run(None, {"x": x})[0]
    outputs = await core.inference.infer(model.cid, {"x": x}, InferOptions(mode="local"))
    (name,) = outputs
    np.testing.assert_allclose(outputs[name], expected, rtol=1e-5, atol=1e-6)
    loads = (await core.audit.tail(kind="model-load")).records
    assert loads and loads[-1].details["cid"] == model.cid  # the runtime's load is audited
    with refused("invalid_input", 400):
        await core.inference.infer(model.cid, {"nope": x})
    stats = await core.inference.runtime()
    assert any(key.startswith(model.cid) for key in stats["batchers"])

    listing = await core.shards.list(cid=model.cid, lookup=False)
    assert listing["plans"] == []
    with refused("partition_failed", 422):
        await core.shards.plan(PlanRequest(cid=model.cid, stages=64, peers=["self"] * 64))

    removed = await core.models.remove(model.cid)
    assert removed.cid == model.cid
    assert (await core.models.list()).models == []
    with refused("model_not_found", 404):
        await core.models.show(model.cid)


async def test_peers_and_hardware(core: CoreApi) -> None:
    assert (await core.peers.list()).peers == []
    with refused("invalid_peer_id", 400):
        await core.peers.get("not-a-peer")
    with refused("conflict", 409):
        await core.peers.perf(UNKNOWN_PEER)
    with refused("invalid_address", 400):
        await core.peers.connect("/ip4/127.0.0.1/tcp/1")
    hardware = await core.hardware.get()
    assert hardware.summary["cores"] >= 1 and hardware.summary["profiled"] is False
    assert (await core.hardware.profile_job()).job is None  # profiling is off in tests
    with refused("invalid_request", 422):
        await core.hardware.start_profile("slow")


async def test_audit_log_and_token_rotation(core: CoreApi) -> None:
    await core.keys.trust("ed25519:" + "B" * 43, "audited")
    rotated = await core.node.rotate_token("read")
    assert rotated.scope == "read" and rotated.path.endswith("api.read.token")
    tail = await core.audit.tail(limit=5)
    assert [r.kind for r in tail.records][-2:] == ["trust-change", "api-token-rotated"]
    assert tail.records[-2].details["name"] == "audited" and tail.head_seq == tail.records[-1].seq
    first = tail.records[-2].seq
    assert [r.seq for r in (await core.audit.tail(after=first - 1, limit=1)).records] == [first]
    assert {r.kind for r in (await core.audit.tail(kind="trust-change")).records} == {"trust-change"}
    verified = await core.audit.verify()
    assert verified.ok and verified.head_seq >= tail.head_seq and verified.bad_seq is None
    await core.keys.untrust("audited")
    with refused("invalid_request", 422):
        await core.audit.tail(limit=0)
    with refused("invalid_request", 422):
        await core.node.rotate_token("root")


async def test_policy_round_trip(core: CoreApi) -> None:
    view = await core.policy.get()
    status = await core.node.status()
    assert view.mode == "open" and view.peer_id == status.peer_id and view.issuer_key.startswith("ed25519:")
    assert view.membership is None and view.tokens_presented == 0
    rules = [
        PolicyRule(subject=UNKNOWN_PEER, action="compute", effect="allow"),
        PolicyRule(subject="role:any", action="assign", effect="deny"),
    ]
    changed = await core.policy.put(PolicyPut(rules=rules, revoke=["ab" * 16]))
    assert {(r.subject, r.action, r.effect) for r in changed.rules} == {
        (UNKNOWN_PEER, "compute", "allow"),
        ("role:any", "assign", "deny"),
    }
    assert changed.revoked == ["ab" * 16]
    assert (await core.policy.put(PolicyPut())).rules == changed.rules  # nothing given: nothing changes
    assert (await core.policy.put(PolicyPut(rules=[]))).rules == []
    changes = (await core.audit.tail(kind="policy-change")).records
    assert len(changes) >= 3 and changes[-1].details["rules"] == 0  # every change is on the record
    with refused("invalid_policy", 400):
        await core.policy.put(
            PolicyPut(rules=[PolicyRule(subject="role:admin", action="compute", effect="allow")])
        )
    with refused("invalid_policy", 400):
        await core.policy.put(PolicyPut(revoke=["not-a-token-id"]))
    with refused("invalid_membership", 400):
        await core.policy.put(PolicyPut(membership="accelmembers1:AAAA"))


async def test_the_app_serves_exactly_the_endpoints_of_the_core(daemon: Daemon) -> None:
    async with AsyncClient(daemon.url, daemon.token()) as client:
        schema = (await client.http.get("/openapi.json")).json()
    served = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    assert served == {(e.method, e.path) for e in E.ALL}
