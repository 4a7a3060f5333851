"""The serving benchmark's in-process breakdown: CPU and wall time per call of each serving layer
(ORT run, thread hop, ``InferenceService.infer``, the ASGI app for ``/v1/infer`` and ``/healthz``)
in this process, without an HTTP server, so the server's share can be told from the rest."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from accel_node.core import endpoints as E
from accel_node.models.manifest import TensorSpec
from accel_node.runtime.sessions import create_session
from accel_node.runtime.validation import Arrays
from scripts.bench.serving_load import Workload
from scripts.bench.stats import median


def breakdown(
    wl: Workload,
    signature: tuple[TensorSpec, ...],
    feeds: Arrays,
    body: bytes,
    content_type: str,
    settings: dict[str, Any],
    *,
    seconds: float,
    rounds: int,
) -> dict[str, dict[str, float]]:
    """CPU and wall time per call of each serving layer, in this process, without an HTTP server."""
    import trio
    from fastapi import FastAPI

    from accel_node.api.middleware import AuthMetricsMiddleware
    from accel_node.api.routes_infer import infer_routes
    from accel_node.core.schemas import Health
    from accel_node.home import ApiTokens
    from accel_node.local.inference import LocalInference
    from accel_node.metrics import NodeMetrics
    from accel_node.runtime.service import InferenceService, RuntimeSettings

    runtime = RuntimeSettings(**settings)
    results: dict[str, list[tuple[float, float]]] = {}

    async def main() -> None:
        service = InferenceService(runtime, resolve=lambda cid: (wl.path, signature))
        # infer_routes reads ctx.core.inference only; a local request never touches shards or the store.
        core: Any = type("Core", (), {"inference": LocalInference(service, shards=None, store=None)})()  # type: ignore[arg-type]
        ctx: Any = type("Ctx", (), {"core": core})()
        app = FastAPI()

        @app.get("/healthz", response_model=Health)  # as routes_node's
        async def healthz() -> Any:
            return Health(ok=True)

        app.include_router(infer_routes(ctx))
        tokens = ApiTokens({"admin": "t"})
        app.add_middleware(
            AuthMetricsMiddleware, tokens=tokens, metrics=NodeMetrics(), open_paths=("/healthz",)
        )
        session = create_session(
            wl.path,
            intra_op_threads=runtime.intra_op_threads,
            inter_op_threads=runtime.inter_op_threads,
            graph_optimization=runtime.graph_optimization,
        )

        async def asgi(method: str, path: str, headers: list[tuple[bytes, bytes]], data: bytes) -> None:
            received = False

            async def receive() -> dict[str, Any]:
                nonlocal received
                if not received:
                    received = True
                    return {"type": "http.request", "body": data, "more_body": False}
                await trio.sleep_forever()
                raise AssertionError("unreachable")

            status: list[int] = []

            async def send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status.append(message["status"])

            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
            }  # fmt: skip
            await app(scope, receive, send)
            if status != [200]:
                raise RuntimeError(f"in-process {method} {path} answered {status}")

        infer_headers = [
            (b"authorization", b"Bearer t"),
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ]

        async def ort_run() -> None:
            session.run(None, feeds)

        async def hop() -> None:
            await trio.to_thread.run_sync(lambda: None)

        async def service_infer() -> None:
            await service.infer("bench", dict(feeds))

        layers: dict[str, Callable[[], Awaitable[None]]] = {
            "ort_run": ort_run,
            "thread_hop": hop,
            "service_infer": service_infer,
            "asgi_infer": lambda: asgi(E.INFER.method, E.INFER.url(cid="bench"), infer_headers, body),
            "asgi_healthz": lambda: asgi("GET", "/healthz", [], b""),
        }
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            for _ in range(rounds):
                for name, call in layers.items():
                    for _ in range(20):
                        await call()
                    n = 0
                    w0, c0 = time.perf_counter(), time.process_time()
                    while n < 50 or time.perf_counter() - w0 < seconds:
                        await call()
                        n += 1
                    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                    results.setdefault(name, []).append((cpu / n * 1e3, wall / n * 1e3))
            nursery.cancel_scope.cancel()

    trio.run(main)
    return {
        name: {"cpu_ms": median([c for c, _ in v]), "wall_ms": median([w for _, w in v])}
        for name, v in results.items()
    }
