"""Serving through a real daemon's API: outputs equal ONNX Runtime's, batching keeps results apart,
every refusal has its status, variants, analysis, benchmarks and measurements are recorded."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from accel_node.core import endpoints as E
from accel_node.core.schemas import InferOptions
from accel_node.errors import ApiError, DaemonTimeoutError
from tests.support.daemons import Daemon
from tests.support.modelzoo import build_mlp, build_transformer

pytestmark = pytest.mark.multinode


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def build_slow(directory: Path) -> Path:
    """y = mean over rows of (tile(x) @ W)^5: ~10 GFLOP per input row, so tens of ms per request."""
    directory.mkdir(parents=True, exist_ok=True)
    weight = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32) / 32
    nodes = [helper.make_node("Tile", ["x", "reps"], ["t0"])]
    for i in range(5):
        nodes.append(helper.make_node("MatMul", [f"t{i}", "w"], [f"t{i + 1}"]))
    nodes.append(helper.make_node("ReduceMean", ["t5", "axes"], ["y"], keepdims=0))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1024])],
        [
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(np.array([1, 1024, 1], dtype=np.int64), "reps"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    path = directory / "slow.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def publish(node: Daemon, directory: Path) -> str:
    result = node.cli("models", "publish", str(directory), "--key", "me", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["cid"])


def infer(node: Daemon, cid: str, body: bytes, content_type: str, **params: Any) -> httpx.Response:
    return node.api.transport.send(
        E.INFER,
        path={"cid": cid},
        query=params,
        content=body,
        headers={"Content-Type": content_type},
        checked=False,
    )


@pytest.fixture
def node(start_daemon: Callable[..., Daemon]) -> Daemon:
    return with_key(start_daemon("server"))


def with_key(daemon: Daemon) -> Daemon:
    assert daemon.cli("keys", "new", "me").returncode == 0
    return daemon


def test_outputs_equal_ort_and_refusals(node: Daemon, tmp_path: Path) -> None:
    model_path = build_mlp(tmp_path / "mlp")
    cid = publish(node, tmp_path / "mlp")
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    (expected,) = session.run(None, {"x": x})

    as_json = infer(node, cid, json.dumps({"inputs": {"x": x.tolist()}}).encode(), "application/json")
    assert as_json.status_code == 200, as_json.text
    out = as_json.json()["outputs"]["y"]
    assert np.array_equal(np.array(out["data"], dtype=np.float32).reshape(out["shape"]), expected)

    as_npz = infer(node, cid, npz(x=x), "application/x-npz")
    assert as_npz.headers["content-type"] == "application/x-npz"
    assert np.array_equal(np.load(io.BytesIO(as_npz.content))["y"], expected)

    # The CLI: .npy in, .npy out.
    (tmp_path / "x.npy").write_bytes(npy(x))
    ran = node.cli("infer", cid, "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"))
    assert ran.returncode == 0, ran.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), expected)

    # Refusals: each with its status and a message naming the problem.
    wrong_name = infer(node, cid, npz(z=x), "application/x-npz")
    assert wrong_name.status_code == 400 and "x" in wrong_name.json()["detail"]
    wrong_dtype = infer(node, cid, npz(x=x.astype(np.float64)), "application/x-npz")
    assert wrong_dtype.status_code == 400 and wrong_dtype.json()["input"] == "x"
    assert wrong_dtype.json()["error"] == {
        "code": "invalid_input",
        "message": wrong_dtype.json()["detail"],
        "input": "x",
    }
    wrong_shape = infer(node, cid, npz(x=x[:, :10]), "application/x-npz")
    assert wrong_shape.status_code == 400 and wrong_shape.json()["input"] == "x"
    assert infer(node, cid, b"{not json", "application/json").status_code == 400
    assert infer(node, cid, b"garbage", "application/x-npz").status_code == 400
    assert infer(node, cid, b"x", "text/plain").status_code == 415
    unknown = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert infer(node, unknown, npz(x=x), "application/x-npz").status_code == 404
    assert infer(node, cid, npz(x=x), "application/x-npz", variant="int8").status_code == 404  # not built

    # Analysis figures for the zoo MLP (64 -> 128 -> 10).
    analysis = node.api.models.analysis(cid, {"batch": 4})
    assert analysis["parameters"]["count"] == 64 * 128 + 128 + 128 * 10 + 10
    assert analysis["flops"]["by_op"]["Gemm"] == 4 * (2 * 64 * 128 + 128 + 2 * 128 * 10 + 10)

    # A model file changed on disk after it was verified is refused, not loaded.
    installed = Path(node.api.models.show(cid).path) / "mlp.onnx"
    installed.write_bytes(installed.read_bytes()[:-1] + b"\0")
    node.stop()
    node.start().wait_ready()
    assert infer(node, cid, npz(x=x), "application/x-npz").status_code == 409


def test_concurrent_clients_get_their_own_rows_with_batching(node: Daemon, tmp_path: Path) -> None:
    model_path = build_transformer(tmp_path / "tf", layers=1)
    cid = publish(node, tmp_path / "tf")
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    results: dict[int, np.ndarray] = {}
    inputs = {
        i: {"input_ids": rng.integers(0, 100, (1, 16)), "attention_mask": np.ones((1, 16), dtype=np.int64)}
        for i in range(64)
    }

    def client(i: int) -> None:
        response = infer(node, cid, npz(**inputs[i]), "application/x-npz")
        assert response.status_code == 200, response.text
        results[i] = np.load(io.BytesIO(response.content))["hidden"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 64
    for i, got in results.items():
        (expected,) = session.run(None, inputs[i])
        np.testing.assert_allclose(got, expected, atol=1e-5)  # merged batches: same maths, other kernels
    stats = node.api.inference.runtime()
    (batcher,) = stats["batchers"].values()
    assert max(int(size) for size in batcher["batch_sizes"]) > 1, batcher  # requests were really merged
    assert batcher["completed"] == 64 and batcher["batches"] < 64
    metrics = node.api.node.metrics_text().decode()
    assert "accel_node_inference_latency_seconds_count" in metrics
    assert "accel_node_inference_batch_size_bucket" in metrics


def test_queue_full_timeouts_variants_and_bench(start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    node = with_key(
        start_daemon("small-queue", ACCEL_NODE_RUNTIME_MAX_QUEUE="4", ACCEL_NODE_RUNTIME_MAX_BATCH="1")
    )
    build_slow(tmp_path / "slow")
    cid = publish(node, tmp_path / "slow")
    x = np.ones((1, 1, 1024), dtype=np.float32)
    assert infer(node, cid, npz(x=x), "application/x-npz").status_code == 200  # warm: session loaded

    late = infer(node, cid, npz(x=x), "application/x-npz", timeout_s=0.001)
    assert late.status_code == 504

    # A client that goes away while its request waits in the queue cancels it.
    def stats() -> dict[str, Any]:
        (batcher,) = node.api.inference.runtime()["batchers"].values()
        return dict(batcher)

    before = stats()["cancelled"]
    busy = [threading.Thread(target=infer, args=(node, cid, npz(x=x), "application/x-npz")) for _ in range(3)]
    for t in busy:
        t.start()
    deadline = time.monotonic() + 10
    while stats()["queue_depth"] < 1 and time.monotonic() < deadline:  # one runs, others wait
        time.sleep(0.005)
    with node.client() as gone, pytest.raises(DaemonTimeoutError):  # the client gives up and goes away
        options = InferOptions(timeout_s=30)
        gone.transport.send(
            E.INFER,
            path={"cid": cid},
            query={"timeout_s": options.timeout_s},
            content=npz(x=x),
            headers={"Content-Type": "application/x-npz"},
            timeout_s=0.05,
        )
    for t in busy:
        t.join()
    deadline = time.monotonic() + 10
    while stats()["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stats()["cancelled"] == before + 1

    statuses: list[httpx.Response] = []

    def client() -> None:
        statuses.append(infer(node, cid, npz(x=x), "application/x-npz"))

    threads = [threading.Thread(target=client) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in statuses)
    assert 200 in codes and 429 in codes, codes
    assert set(codes) <= {200, 429}
    assert all(int(r.headers["retry-after"]) >= 1 for r in statuses if r.status_code == 429)

    # int8 variant: content-addressed, accuracy measured and stored; served within that tolerance.
    built = node.api.transport.send(E.MODEL_VARIANT_BUILD, path={"cid": cid}, body={"variant": "int8"})
    assert built.status_code == 201, built.text
    variant = built.json()
    assert variant["parent"] == cid and variant["cid"].startswith("baf") and variant["cid"] != cid
    x2 = np.random.default_rng(3).standard_normal((2, 1, 1024)).astype(np.float32)
    fp32 = np.load(io.BytesIO(infer(node, cid, npz(x=x2), "application/x-npz").content))["y"]
    int8 = infer(node, cid, npz(x=x2), "application/x-npz", variant="int8")
    assert int8.status_code == 200, int8.text
    diff = np.abs(np.load(io.BytesIO(int8.content))["y"] - fp32)
    assert 0 < diff.max() <= 10 * variant["accuracy"]["max_abs"]  # really quantised, and close

    bench = node.cli("bench", cid, "--batches", "1,2", "--repeats", "3", "--variants", "fp32,int8", "--json",
                     timeout=300)  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    points = json.loads(bench.stdout)["points"]
    assert {(p["variant"], p["batch"]) for p in points} == {
        ("fp32", 1),
        ("fp32", 2),
        ("int8", 1),
        ("int8", 2),
    }
    assert all(p["throughput_items_s"] > 0 and p["latency_ms_p50"] > 0 for p in points)
    stored = node.api.inference.measurements(cid)["measurements"]
    bench_rows = [m for m in stored if m["source"] == "bench"]
    assert len(bench_rows) == 4 and all(m["fingerprint"] for m in bench_rows)

    # Removing the model drops its variants, sessions and derived data too.
    variant_file = node.home / "variants" / f"{variant['cid']}.onnx"
    assert variant_file.exists()
    node.api.models.remove(cid)
    assert not variant_file.exists()
    assert infer(node, cid, npz(x=x), "application/x-npz").status_code == 404
    with pytest.raises(ApiError) as gone_variants:
        node.api.models.variants(cid)
    assert gone_variants.value.http_status == 404
