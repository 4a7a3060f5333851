"""The inference runtime on real ONNX Runtime sessions: service, batching, sessions, variants, benchmarks."""

from __future__ import annotations

import importlib
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import trio
from onnx import TensorProto, helper, numpy_helper
from prometheus_client import CollectorRegistry, generate_latest

from accel_node.api.media import decode_request
from accel_node.models.manifest import TensorSpec
from accel_node.models.service import onnx_signature
from accel_node.runtime.codecs import NPZ_TYPE, encode_npz
from accel_node.runtime.errors import (
    InferenceFailed,
    InferenceTimeout,
    InputError,
    ModelNotVerified,
    ModelUnavailable,
    QueueFull,
    VariantError,
)
from accel_node.runtime.measure import bench
from accel_node.runtime.metrics import RuntimeMetrics
from accel_node.runtime.service import InferenceService, RuntimeSettings
from accel_node.runtime.sessions import SessionCache, SessionKey, available_providers
from accel_node.runtime.synthetic import random_inputs
from accel_node.runtime.variants import accuracy_delta, build_variant

ort: Any = importlib.import_module("onnxruntime")  # ships no type information

# -- models built with onnx.helper -----------------------------------------------------------------


def _save(path: Path, nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any]) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def matmul_model(path: Path, *, batch: str | int = "N", n_in: int = 8, n_out: int = 4, seed: int = 0) -> Path:
    """y = x @ W + b with x [batch, n_in]."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((n_in, n_out)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(n_out).astype(np.float32), "B")
    return _save(
        path,
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n_out])],
        [w, b],
    )


def two_input_model(path: Path) -> Path:
    """y = x @ W + b (float), s = sum(float(ids), axis 1) (from int64), two outputs."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "B")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    return _save(
        path,
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["y"]),
            helper.make_node("Cast", ["ids"], ["idsf"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["idsf", "axes"], ["s"], keepdims=1),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "L"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 1]),
        ],
        [w, b, axes],
    )


def column_sum_model(path: Path) -> Path:
    """A dynamic first dim that is not a batch axis: y = sum over axis 0 of x [N, 4] -> [4]."""
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    return _save(
        path,
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [axes],
    )


def celu_model(path: Path) -> Path:
    """Celu has no float16 form in ONNX: its fp16 variant cannot run anywhere."""
    return _save(
        path,
        [helper.make_node("Celu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [],
    )


def direct(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Plain ONNX Runtime, same options as the service under test (1 intra-op thread, all opts)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


class Registry:
    """The node's side of the service hooks: verified models, unverified ones, built variants."""

    def __init__(self) -> None:
        self.models: dict[str, Path] = {}
        self.unverified: set[str] = set()
        self.variants: dict[tuple[str, str], Path] = {}
        self.records: list[dict[str, Any]] = []
        self.resolves = 0

    def add(self, cid: str, path: Path) -> str:
        self.models[cid] = path
        return cid

    def resolve(self, cid: str) -> tuple[Path, tuple[TensorSpec, ...]]:
        self.resolves += 1
        if cid in self.unverified:
            raise ModelNotVerified(f"model {cid} is not verified")
        if cid not in self.models:
            raise ModelUnavailable(f"no model {cid}")
        return self.models[cid], onnx_signature(self.models[cid])[0]

    async def variant_path(self, cid: str, variant: str) -> Path | None:
        await trio.lowlevel.checkpoint()
        return self.variants.get((cid, variant))

    async def record(self, measurement: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()
        self.records.append(measurement)


SETTINGS = RuntimeSettings(intra_op_threads=1, max_batch=16, max_wait_ms=20, sample_rate=1.0)


@asynccontextmanager
async def serving(registry: Registry, settings: RuntimeSettings = SETTINGS,
                  metrics: RuntimeMetrics | None = None) -> AsyncIterator[InferenceService]:  # fmt: skip
    service = InferenceService(
        settings,
        resolve=registry.resolve,
        variant_path=registry.variant_path,
        record=registry.record,
        metrics=metrics,
        providers=["CPUExecutionProvider"],
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        yield service
        nursery.cancel_scope.cancel()


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll state that the runtime changes from its own tasks (it has no events for tests)."""
    with trio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.001)


def depth(service: InferenceService, cid: str, variant: str = "fp32") -> int:
    stats = service.stats()["batchers"].get(f"{cid}/{variant}")
    return int(stats["queue_depth"]) if stats else 0


@pytest.fixture(scope="module")
def zoo_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.support.modelzoo import build_cnn, build_transformer

    directory = tmp_path_factory.mktemp("runtime-zoo")
    return {"cnn": build_cnn(directory), "transformer": build_transformer(directory)}


# -- the service ------------------------------------------------------------------------------------


async def test_outputs_equal_direct_ort_exactly(tmp_path: Path) -> None:
    registry = Registry()
    mm = registry.add("mm", matmul_model(tmp_path / "mm.onnx"))
    two = registry.add("two", two_input_model(tmp_path / "two.onnx"))
    rng = np.random.default_rng(5)
    async with serving(registry) as service:
        x = rng.standard_normal((3, 8)).astype(np.float32)
        out = await service.infer(mm, {"x": x})
        assert set(out) == {"y"}
        np.testing.assert_array_equal(out["y"], direct(tmp_path / "mm.onnx", {"x": x})["y"])

        feeds: dict[str, np.ndarray] = {
            "x": rng.standard_normal((2, 8)).astype(np.float32),
            "ids": np.arange(10).reshape(2, 5),
        }
        out = await service.infer(two, feeds)
        expected = direct(tmp_path / "two.onnx", feeds)
        for name in ("y", "s"):
            np.testing.assert_array_equal(out[name], expected[name])
        assert out["s"].tolist() == [[10.0], [35.0]]

        # The API's path: a request body decoded against the signature the service resolved.
        ref = await service.model(mm)
        body = b'{"inputs": {"x": [[1, 2, 3, 4, 5, 6, 7, 8]]}}'
        out = await service.infer(
            mm, decode_request(body, "application/json", ref.signature, SETTINGS.limits)
        )
        x1 = np.arange(1, 9, dtype=np.float32).reshape(1, 8)
        np.testing.assert_array_equal(out["y"], direct(tmp_path / "mm.onnx", {"x": x1})["y"])
        two_ref = await service.model(two)
        npz = encode_npz(feeds)
        out = await service.infer(two, decode_request(npz, NPZ_TYPE, two_ref.signature, SETTINGS.limits))
        np.testing.assert_array_equal(out["y"], expected["y"])
    assert registry.resolves <= 2  # positive resolutions are cached (resolve_cache_s)


async def test_refusals_map_to_their_status(tmp_path: Path) -> None:
    registry = Registry()
    mm = registry.add("mm", matmul_model(tmp_path / "mm.onnx"))
    registry.add("unverified", tmp_path / "mm.onnx")
    registry.unverified.add("unverified")
    x = np.zeros((1, 8), np.float32)
    async with serving(registry) as service:
        with pytest.raises(ModelUnavailable) as missing:
            await service.infer("nope", {"x": x})
        assert missing.value.status == 404
        with pytest.raises(ModelNotVerified) as unverified:
            await service.infer("unverified", {"x": x})
        assert unverified.value.status == 409
        with pytest.raises(ModelUnavailable, match="'int8' variant"):
            await service.infer(mm, {"x": x}, variant="int8")
        with pytest.raises(InputError, match="'x' has size 7 on axis 1") as bad:
            await service.infer(mm, {"x": np.zeros((1, 7), np.float32)})
        assert bad.value.status == 400 and bad.value.input_name == "x"
        with pytest.raises(InputError, match="threads"):
            await service.infer(mm, {"x": x}, threads=-1)
    with pytest.raises(ValueError, match="graph_optimization"):
        RuntimeSettings(graph_optimization="max")
    with pytest.raises(ValueError, match="sample_rate"):
        RuntimeSettings(sample_rate=2.0)
    idle = InferenceService(SETTINGS, resolve=registry.resolve)
    with pytest.raises(InferenceFailed, match="not running"):
        await idle.infer(mm, {"x": x})


@pytest.mark.parametrize("max_wait_ms", [0.0, 20.0])
async def test_64_concurrent_clients_get_their_own_rows(tmp_path: Path, max_wait_ms: float) -> None:
    registry = Registry()
    settings = RuntimeSettings(intra_op_threads=1, max_batch=16, max_wait_ms=max_wait_ms, sample_rate=1.0)
    path = matmul_model(tmp_path / "mm.onnx")
    mm = registry.add("mm", path)
    rng = np.random.default_rng(11)
    requests = [rng.standard_normal((1 + i % 3, 8)).astype(np.float32) + i for i in range(64)]
    results: dict[int, dict[str, np.ndarray]] = {}
    async with serving(registry, settings) as service:

        async def client(i: int) -> None:
            results[i] = await service.infer(mm, {"x": requests[i]})

        async with trio.open_nursery() as nursery:
            for i in range(64):
                nursery.start_soon(client, i)
        stats = service.stats()["batchers"]["mm/fp32"]
        await wait_for(lambda: len(registry.records) == stats["batches"])  # sample_rate 1: every batch
    for i, x in enumerate(requests):
        assert results[i]["y"].shape == (x.shape[0], 4)
        np.testing.assert_allclose(results[i]["y"], direct(path, {"x": x})["y"], rtol=1e-6, atol=1e-5)
    assert stats["completed"] == 64 and stats["rows"] == sum(len(x) for x in requests)
    assert max(stats["batch_sizes"]) > 1 and stats["batches"] < 64
    assert max(stats["batch_sizes"]) <= 16  # max_batch rows
    assert registry.records and all(r["source"] == "live" and r["cid"] == "mm" for r in registry.records)
    assert {"batch", "threads", "latency_ms", "throughput_items_s", "peak_rss_bytes"} <= set(
        registry.records[0]
    )


async def test_transformer_requests_group_by_sequence_length(zoo_models: dict[str, Path]) -> None:
    registry = Registry()
    path = zoo_models["transformer"]
    tf = registry.add("tf", path)
    feeds = [random_inputs(onnx_signature(path)[0], batch=1 + i % 2, seq_len=5 + 2 * (i % 3), seed=i)
             for i in range(18)]  # fmt: skip
    results: dict[int, dict[str, np.ndarray]] = {}
    async with serving(registry) as service:

        async def client(i: int) -> None:
            results[i] = await service.infer(tf, feeds[i])

        async with trio.open_nursery() as nursery:
            for i in range(len(feeds)):
                nursery.start_soon(client, i)
        stats = service.stats()["batchers"]["tf/fp32"]
        await wait_for(lambda: len(registry.records) == stats["batches"])
    for i, f in enumerate(feeds):
        np.testing.assert_allclose(results[i]["hidden"], direct(path, f)["hidden"], rtol=1e-4, atol=1e-4)
    assert max(stats["batch_sizes"]) > 2  # merged across clients, within one sequence length
    assert {r["seq_len"] for r in registry.records} == {5, 7, 9}
    assert sum(r["batch"] for r in registry.records) == sum(len(f["input_ids"]) for f in feeds)


async def test_queue_full_answers_with_retry_after(tmp_path: Path) -> None:
    registry = Registry()
    mm = registry.add("mm", matmul_model(tmp_path / "mm.onnx"))
    settings = RuntimeSettings(intra_op_threads=1, max_queue=2, max_wait_ms=0)
    x = np.ones((1, 8), np.float32)
    done: list[np.ndarray] = []
    async with serving(registry, settings) as service:
        await service.infer(mm, {"x": x})  # warm: batcher and session exist
        await service.limiter.acquire()  # every worker busy: requests stay queued

        async def client() -> None:
            done.append((await service.infer(mm, {"x": x}))["y"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client)
            nursery.start_soon(client)
            await wait_for(lambda: depth(service, mm) == 2)
            with pytest.raises(QueueFull) as full:
                await service.infer(mm, {"x": x})
            assert full.value.status == 429 and 0 < full.value.retry_after_s < 60
            service.limiter.release()
    assert len(done) == 2


async def test_timeouts_are_honoured(tmp_path: Path) -> None:
    registry = Registry()
    mm = registry.add("mm", matmul_model(tmp_path / "mm.onnx"))
    x = np.ones((1, 8), np.float32)
    settings = RuntimeSettings(intra_op_threads=1, max_wait_ms=0, request_timeout_s=0.2)
    async with serving(registry, settings) as service:
        await service.infer(mm, {"x": x})
        await service.limiter.acquire()
        with pytest.raises(InferenceTimeout) as explicit:
            await service.infer(mm, {"x": x}, timeout_s=0.05)
        assert explicit.value.status == 504
        started = trio.current_time()
        with pytest.raises(InferenceTimeout):
            await service.infer(mm, {"x": x})  # the configured request_timeout_s
        assert 0.2 <= trio.current_time() - started < 2
        assert depth(service, mm) == 0  # timed-out requests left the queue
        service.limiter.release()
        out = await service.infer(mm, {"x": x})
        np.testing.assert_array_equal(out["y"], direct(tmp_path / "mm.onnx", {"x": x})["y"])
        assert service.stats()["batchers"]["mm/fp32"]["timed_out"] == 2


async def test_timeout_while_running_leaves_the_batcher_working(tmp_path: Path) -> None:
    registry = Registry()
    slow = registry.add("slow", matmul_model(tmp_path / "slow.onnx", n_in=1024, n_out=1024))
    settings = RuntimeSettings(intra_op_threads=1, max_wait_ms=0)
    big = np.ones((4096, 1024), np.float32)  # ~8.6 GFLOP: ~0.2 s on one thread, 4x the timeout
    async with serving(registry, settings) as service:
        started = trio.current_time()
        with pytest.raises(InferenceTimeout):
            await service.infer(slow, {"x": big}, timeout_s=0.05)
        assert trio.current_time() - started < 0.15  # answered without waiting for the run
        assert service.stats()["batchers"]["slow/fp32"]["queue_depth"] == 0
        small = np.ones((1, 1024), np.float32)
        out = await service.infer(slow, {"x": small})
        np.testing.assert_array_equal(out["y"], direct(tmp_path / "slow.onnx", {"x": small})["y"])
        stats = service.stats()["batchers"]["slow/fp32"]
        assert stats["timed_out"] == 1 and stats["completed"] == 2  # the abandoned run still finished


async def test_cancelled_request_is_dropped_and_never_blocks_others(tmp_path: Path) -> None:
    registry = Registry()
    mm = registry.add("mm", matmul_model(tmp_path / "mm.onnx"))
    settings = RuntimeSettings(intra_op_threads=1, max_wait_ms=0)
    x = np.full((1, 8), 2.0, np.float32)
    got: list[np.ndarray] = []
    async with serving(registry, settings) as service:
        await service.infer(mm, {"x": x})
        await service.limiter.acquire()
        async with trio.open_nursery() as nursery:
            gone = trio.CancelScope()

            async def goes_away() -> None:
                with gone:
                    await service.infer(mm, {"x": np.zeros((1, 8), np.float32)})

            async def stays() -> None:
                got.append((await service.infer(mm, {"x": x}))["y"])

            nursery.start_soon(goes_away)
            await wait_for(lambda: depth(service, mm) == 1)
            nursery.start_soon(stays)
            await wait_for(lambda: depth(service, mm) == 2)
            gone.cancel()  # the oldest request, the one the scheduler is waiting on
            await wait_for(lambda: depth(service, mm) == 1)
            service.limiter.release()
        stats = service.stats()["batchers"]["mm/fp32"]
    np.testing.assert_array_equal(got[0], direct(tmp_path / "mm.onnx", {"x": x})["y"])
    assert stats["cancelled"] == 1 and stats["completed"] == 2


async def test_forget_fails_waiting_requests_at_once(tmp_path: Path) -> None:
    registry = Registry()
    mm = registry.add("mm", matmul_model(tmp_path / "mm.onnx"))
    settings = RuntimeSettings(intra_op_threads=1, max_wait_ms=0)
    x = np.ones((1, 8), np.float32)
    failures: list[Exception] = []
    async with serving(registry, settings) as service:
        await service.infer(mm, {"x": x})
        await service.limiter.acquire()

        async def client() -> None:
            try:
                await service.infer(mm, {"x": x})
            except InferenceFailed as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client)
            nursery.start_soon(client)
            await wait_for(lambda: depth(service, mm) == 2)
            with trio.fail_after(1):  # the model is removed: its waiting requests fail now
                await service.forget(mm)
                await wait_for(lambda: len(failures) == 2)
        assert all("stopped" in str(f) for f in failures)
        service.limiter.release()
        out = await service.infer(mm, {"x": x})  # a fresh batcher serves it again
        np.testing.assert_array_equal(out["y"], direct(tmp_path / "mm.onnx", {"x": x})["y"])


async def test_models_without_a_batch_axis_run_alone(tmp_path: Path) -> None:
    registry = Registry()
    static = registry.add("static", matmul_model(tmp_path / "static.onnx", batch=2))
    colsum = registry.add("colsum", column_sum_model(tmp_path / "colsum.onnx"))
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((2, 8)).astype(np.float32) for _ in range(8)]
    cs = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(8)]
    out_static: dict[int, np.ndarray] = {}
    out_col: dict[int, np.ndarray] = {}
    async with serving(registry) as service:

        async def client(i: int) -> None:
            out_static[i] = (await service.infer(static, {"x": xs[i]}))["y"]
            out_col[i] = (await service.infer(colsum, {"x": cs[i]}))["y"]

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(client, i)
        stats = service.stats()["batchers"]
    for i in range(8):
        np.testing.assert_array_equal(out_static[i], direct(tmp_path / "static.onnx", {"x": xs[i]})["y"])
        np.testing.assert_allclose(out_col[i], cs[i].sum(axis=0), rtol=1e-6)
    assert not stats["static/fp32"]["batchable"] and stats["static/fp32"]["batches"] == 8
    # colsum looked batchable (dynamic first dim) until a merged run's outputs said otherwise
    assert not stats["colsum/fp32"]["batchable"] and stats["colsum/fp32"]["completed"] == 8


async def test_metrics_on_the_node_registry(tmp_path: Path) -> None:
    registry = Registry()
    mm = registry.add("mm", matmul_model(tmp_path / "mm.onnx"))
    prom = CollectorRegistry()
    metrics = RuntimeMetrics(prom)
    async with serving(registry, metrics=metrics) as service:
        for rows in (1, 2, 3):
            await service.infer(mm, {"x": np.ones((rows, 8), np.float32)})
        with pytest.raises(InputError):
            await service.infer(mm, {"x": np.ones((1, 8), np.float64)})
        for cid in ("bafy-made-up-1", "bafy-made-up-2"):
            with pytest.raises(ModelUnavailable):
                await service.infer(cid, {"x": np.ones((1, 8), np.float32)})
        text = generate_latest(prom).decode()
        assert 'accel_node_inference_items_total{cid="mm",variant="fp32"} 6.0' in text
        assert 'accel_node_inference_batch_size_count{cid="mm",variant="fp32"} 3.0' in text
        assert 'accel_node_inference_latency_seconds_count{cid="mm",variant="fp32"} 3.0' in text
        assert 'accel_node_inference_queue_depth{cid="mm",variant="fp32"} 0.0' in text
        assert 'accel_node_inference_failures_total{cid="mm",reason="InputError",variant="fp32"} 1.0' in text
        assert (
            'accel_node_inference_failures_total{cid="-",reason="ModelUnavailable",variant="-"} 2.0' in text
        )
        assert "made-up" not in text  # label values never come from unknown, client-chosen CIDs
        session_bytes = re.search(r"^accel_node_inference_session_bytes (\S+)$", text, re.M)
        assert session_bytes and float(session_bytes.group(1)) >= (tmp_path / "mm.onnx").stat().st_size
        await service.forget(mm)
        assert 'cid="mm"' not in generate_latest(prom).decode()
        assert len(service.sessions) == 0
        await service.infer(mm, {"x": np.ones((1, 8), np.float32)})  # served again after forget


# -- sessions ---------------------------------------------------------------------------------------


def key(variant: str, threads: int = 1) -> SessionKey:
    return SessionKey("big", variant, threads, 0, "all")


async def test_session_cache_evicts_by_budget_lru(tmp_path: Path) -> None:
    path = matmul_model(tmp_path / "big.onnx", n_in=512, n_out=1024)  # 2 MiB of weights
    size = path.stat().st_size
    cache = SessionCache(int(1.5 * size), providers=["CPUExecutionProvider"])
    a = await cache.get(key("a"), path)
    assert a.estimated_bytes >= size and a.file_bytes == size
    await cache.get(key("b"), path)  # two never fit 1.5 files: a goes
    assert key("a") not in cache and key("b") in cache and cache.evictions == 1

    cache = SessionCache(1 << 40, providers=["CPUExecutionProvider"])
    for name in ("a", "b", "c"):
        await cache.get(key(name), path)
    await cache.get(key("a"), path)  # a is now the most recently used
    assert [e.key.variant for e in cache.entries()] == ["b", "c", "a"]
    cache.resize(cache.used_bytes - 1)
    assert key("b") not in cache and key("a") in cache and key("c") in cache
    assert cache.loads == 3


async def test_session_cache_loads_a_key_once(tmp_path: Path) -> None:
    path = matmul_model(tmp_path / "mm.onnx")
    cache = SessionCache(1 << 30, providers=["CPUExecutionProvider"])
    got = []

    async def get() -> None:
        got.append(await cache.get(key("x"), path))

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(get)
    assert cache.loads == 1 and all(g is got[0] for g in got)
    with pytest.raises(ModelUnavailable):
        await cache.get(key("missing"), tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(InferenceFailed, match=r"cannot load bad\.onnx"):
        await cache.get(key("bad"), tmp_path / "bad.onnx")
    assert available_providers()[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in available_providers()) == (
        "CUDAExecutionProvider" in ort.get_available_providers()
    )


# -- variants and benchmarks ------------------------------------------------------------------------


async def test_int8_and_fp16_variants_served_with_measured_delta(
    tmp_path: Path, zoo_models: dict[str, Path]
) -> None:
    registry = Registry()
    for model in ("cnn", "transformer"):
        parent = zoo_models[model]
        signature = onnx_signature(parent)[0]
        registry.add(model, parent)
        feeds = random_inputs(signature, batch=2, seq_len=16, seed=0)  # accuracy_delta's batch
        deltas = {}
        for variant, bound in (("int8", 0.1), ("fp16", 0.01)):
            data = await trio.to_thread.run_sync(build_variant, parent, variant, signature)
            path = tmp_path / f"{model}.{variant}.onnx"
            path.write_bytes(data)
            registry.variants[(model, variant)] = path
            deltas[variant] = accuracy_delta(parent, path, signature, seed=0)
            assert 0 < deltas[variant]["rel_l2"] < bound, (model, variant, deltas[variant])
            assert deltas[variant]["max_abs"] >= deltas[variant]["mean_abs"] > 0
        async with serving(registry) as service:
            fp32 = await service.infer(model, feeds)
            for variant, delta in deltas.items():
                out = await service.infer(model, feeds, variant=variant)
                name = next(iter(out))
                own = direct(registry.variants[(model, variant)], feeds)[name]
                np.testing.assert_allclose(out[name], own, rtol=1e-5, atol=1e-5)
                # what serving the variant gives is what the stored delta says
                assert np.isclose(
                    np.abs(out[name] - fp32[name]).max(), delta["max_abs"], rtol=1e-3, atol=1e-5
                )
            # live samples are recorded after the answers are delivered
            await wait_for(lambda: {r["variant"] for r in registry.records} == {"fp32", "int8", "fp16"})


def test_fp16_variant_that_does_not_run_is_refused(tmp_path: Path) -> None:
    path = celu_model(tmp_path / "celu.onnx")
    with pytest.raises(VariantError, match="does not run on CPUExecutionProvider"):
        build_variant(path, "fp16", onnx_signature(path)[0])
    with pytest.raises(VariantError, match="unknown variant"):
        build_variant(path, "int4", onnx_signature(path)[0])


def test_bench_sweeps_variants_batches_threads(tmp_path: Path, zoo_models: dict[str, Path]) -> None:
    parent = zoo_models["transformer"]
    signature = onnx_signature(parent)[0]
    int8 = tmp_path / "tf.int8.onnx"
    int8.write_bytes(build_variant(parent, "int8", signature))
    seen: list[dict[str, Any]] = []
    records = bench(parent, signature, batches=(1, 4), threads=(1,), variants={"fp32": parent, "int8": int8},
                    repeats=5, warmup=1, seq_len=16, on_record=seen.append)  # fmt: skip
    assert records == seen and len(records) == 4
    assert [(r["variant"], r["batch"]) for r in records] == [
        ("fp32", 1),
        ("fp32", 4),
        ("int8", 1),
        ("int8", 4),
    ]
    for r in records:
        assert r["threads"] == 1 and r["seq_len"] == 16 and r["repeats"] == 5
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p90"]
        # throughput is items over wall time, consistent with the per-run latencies
        assert 0.5 < r["throughput_items_s"] * r["latency_ms_mean"] / 1000 / r["batch"] < 1.5
        assert r["peak_rss_bytes"] > 10 << 20 and r["providers"][-1] == "CPUExecutionProvider"
    static = matmul_model(tmp_path / "static.onnx", batch=3)
    records = bench(static, onnx_signature(static)[0], batches=(1, 8), threads=(0,), repeats=2, warmup=0)
    assert [r["batch"] for r in records] == [3] and records[0]["seq_len"] is None
    assert records[0]["threads"] >= 1
