"""Sharded inference across real daemons (separate processes): plan, serve, route, survive a kill -9."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from accel_node.core.schemas import InferOptions
from accel_node.errors import ApiError
from tests.support.daemons import Daemon
from tests.support.modelzoo import build_transformer

pytestmark = pytest.mark.multinode


def cli_json(node: Daemon, *args: str) -> Any:
    result = node.cli(*args, "--json", timeout=180)
    assert result.returncode == 0, (args, result.stderr)
    return json.loads(result.stdout)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def connect_all(nodes: list[Daemon]) -> None:
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            a.api.peers.connect(b.addr)


def share_model(owner: Daemon, others: list[Daemon], model_dir: Path) -> str:
    public_key = owner.cli("keys", "new", "acme").stdout.strip()
    cid = str(cli_json(owner, "models", "publish", str(model_dir), "--key", "acme")["cid"])
    for node in others:
        assert node.cli("trust", "add", public_key, "--name", "acme").returncode == 0
        cli_json(node, "models", "fetch", cid)
    return cid


def stage_peers(node: Daemon, plan: str) -> list[list[str]]:
    listing = node.api.shards.list()
    found = next(p for p in listing["plans"] if p["plan"] == plan)
    return [s.get("peers", []) for s in found["stages"]]


def infer(node: Daemon, cid: str, inputs: dict[str, np.ndarray], **options: Any) -> np.ndarray:
    return node.api.inference.infer(cid, inputs, InferOptions(**options))["hidden"]


def test_sharded_output_equals_local_and_survives_a_killed_replica(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    # a cannot hold the model (its memory budget is below the model's size): auto mode shards.
    a = start_daemon("a", wait=False, ACCEL_NODE_RUNTIME_MEMORY_BUDGET_BYTES=str(1 << 20))
    b, c, d = (start_daemon(n, wait=False, ACCEL_NODE_SHARD_ACCEPT_ASSIGNMENTS="true") for n in "bcd")
    nodes = [a, b, c, d]
    for node in nodes:
        node.wait_ready()
    connect_all(nodes)
    model_path = build_transformer(tmp_path / "tf", layers=4, d_model=128, ff=512)
    assert model_path.stat().st_size > 1 << 20
    cid = share_model(a, [b, c, d], tmp_path / "tf")

    plan = cli_json(
        a, "shard", "plan", cid, "--stages", "3", "--peers", f"{b.peer_id},{c.peer_id},{b.peer_id}"
    )
    plan_cid = plan["plan"]
    assert len(plan["stages"]) == 3 and all(s["cid"].startswith("baf") for s in plan["stages"])
    # Stage 1 has two replicas (c and d); b serves the first and the last stage. b, c and d fetch the
    # signed plan by CID and verify it against their own copy of the model.
    for node, stage in ((b, 0), (c, 1), (d, 1), (b, 2)):
        served = cli_json(node, "shard", "serve", cid, "--stage", str(stage), "--plan", plan_cid)
        assert served["stage_cid"] == plan["stages"][stage]["cid"]
    wait_for(
        "every stage's replicas to be known on a",
        lambda: (
            [sorted(p) for p in stage_peers(a, plan_cid)]
            == [[b.peer_id], sorted([c.peer_id, d.peer_id]), [b.peer_id]]
        ),
    )

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)

    def sample() -> dict[str, np.ndarray]:
        ids = rng.integers(0, 100, (2, 12))
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}

    first = sample()
    (expected,) = session.run(None, first)
    assert np.abs(infer(a, cid, first) - expected).max() <= 1e-4  # auto: sharded (does not fit a)
    assert np.abs(infer(a, cid, first, mode="sharded") - expected).max() <= 1e-4

    # 100 requests stream from 4 clients; one replica of the middle stage is killed -9 meanwhile.
    requests = [sample() for _ in range(100)]
    results: dict[int, np.ndarray] = {}
    errors: list[str] = []

    def client(k: int) -> None:
        for i in range(k, 100, 4):
            try:
                results[i] = infer(a, cid, requests[i], mode="sharded", timeout_s=60)
            except ApiError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    wait_for("some requests to complete", lambda: len(results) >= 10, timeout=120)
    d.stop(signal.SIGKILL)
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert len(results) == 100
    for i, got in results.items():
        (want,) = session.run(None, requests[i])
        assert np.abs(got - want).max() <= 1e-4, i

    listing = a.api.shards.list(lookup=False)
    assert [p["plan"] for p in listing["plans"]] == [plan_cid]

    # With every replica of stage 1 gone, the requester (which holds the model) re-places that
    # stage on itself and answers.
    c.stop(signal.SIGKILL)
    last = sample()
    (want_last,) = session.run(None, last)
    assert np.abs(infer(a, cid, last, mode="sharded", timeout_s=120) - want_last).max() <= 1e-4
    served = a.api.shards.list(lookup=False)["served"]
    assert {"model": cid, "plan": plan_cid, "stage": 1} in served


def test_remembered_stages_are_served_after_a_restart_and_a_removed_model_does_not_stop_the_node(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    node = start_daemon("solo")
    build_transformer(tmp_path / "tf", layers=2)
    public_key = node.cli("keys", "new", "acme").stdout.strip()
    assert public_key.startswith("ed25519:")
    cid = str(cli_json(node, "models", "publish", str(tmp_path / "tf"), "--key", "acme")["cid"])
    plan = cli_json(node, "shard", "plan", cid, "--stages", "1", "--peers", "self", "--assign")
    assert plan["assignments"][0].get("stage_cid") == plan["stages"][0]["cid"]

    node.stop()
    node.start().wait_ready()  # remembered stages are served again in the background
    expected = [{"model": cid, "plan": plan["plan"], "stage": 0}]
    wait_for(
        "the remembered stage to be served again",
        lambda: node.api.shards.list(lookup=False)["served"] == expected,
    )

    node.api.models.remove(cid)
    node.stop()
    node.start().wait_ready()  # the remembered stage cannot be served any more; the node still starts
    assert node.api.shards.list(lookup=False)["served"] == []
