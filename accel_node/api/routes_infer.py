"""Routes about serving: inference, model analysis, precision variants, benchmarks, measurements.

``POST /v1/infer/{cid}`` takes the raw body as it comes (no pydantic parsing: tensors can be
large): ``application/json`` for small tensors, ``application/x-npz`` / ``application/x-npy`` for
large ones (see :mod:`accel_node.runtime.tensors`; never pickle). The answer has the format the
``Accept`` header asks for, else the request's own. A client that goes away cancels its request.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import trio
from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from accel_node.api.context import ApiContext
from accel_node.api.media import decode_request, encode_response, media_type, response_media_type
from accel_node.runtime.errors import PayloadTooLarge, RuntimeFailure
from accel_node.shard.errors import ShardError

LARGE_BODY = 256 * 1024  # decode bodies above this size off the event loop
MAX_DIMS = 16


class VariantRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variant: str = Field(max_length=16, description="int8 (dynamic quantisation) or fp16")


class BenchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batches: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default=[1, 2, 4, 8], min_length=1, max_length=16
    )
    threads: list[Annotated[int, Field(ge=0, le=256)]] = Field(
        default=[0], min_length=1, max_length=8, description="intra-op threads; 0 = one per physical core"
    )
    variants: list[str] = Field(default=["fp32"], min_length=1, max_length=3)
    repeats: int = Field(default=20, ge=1, le=1000)
    seq_len: int = Field(default=128, ge=1, le=65536, description="value of dynamic non-batch dims")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _unless_disconnected(
    request: Request, compute: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any] | None:
    """``compute()``, cancelled (None) if the client goes away first."""
    outputs: dict[str, Any] | None = None
    failure: RuntimeFailure | ShardError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, request, nursery.cancel_scope)
        try:  # caught in the body: a nursery would wrap it in an ExceptionGroup
            outputs = await compute()
        except (RuntimeFailure, ShardError) as exc:
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return outputs


async def _cancel_on_disconnect(request: Request, scope: trio.CancelScope) -> None:
    """The body has been read: the next ASGI message can only be the client going away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def infer_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter()
    inference = ctx.inference
    library = ctx.library

    @router.post(
        "/v1/infer/{cid}",
        tags=["inference"],
        responses={
            200: {"content": {"application/json": {}, "application/x-npz": {}, "application/x-npy": {}}},
            400: {"description": "inputs do not match the model's signature (the message names the input)"},
            404: {"description": "no such model (or variant) on this node"},
            409: {"description": "the model's files are not verified"},
            413: {"description": "body too large"},
            415: {"description": "unsupported content type"},
            429: {"description": "queue full; retry after Retry-After seconds"},
            504: {"description": "not done within the timeout"},
        },
    )
    async def infer(
        cid: str,
        request: Request,
        *,
        variant: Annotated[str, Query(max_length=16)] = "fp32",
        threads: Annotated[int | None, Query(ge=0, le=256)] = None,
        timeout_s: Annotated[float | None, Query(gt=0, le=3600)] = None,
        mode: Annotated[
            Literal["auto", "local", "sharded"],
            Query(description="auto: locally when the model fits this node's memory budget, else sharded"),
        ] = "auto",
        plan: Annotated[str | None, Query(max_length=256, description="Shard plan CID (sharded)")] = None,
    ) -> Response:
        """Run the model on the request's tensors (JSON, .npz or .npy body); dynamic batching merges
        concurrent requests. Sharded: through the stages of a plan served by peers."""
        settings = inference.settings
        body = await _read_body(request, settings.max_body_bytes)
        ref = await inference.model(cid, variant)
        content_type = request.headers.get("content-type")

        def decode() -> dict[str, Any]:
            return decode_request(body, content_type, ref.signature, settings.limits)

        inputs = await trio.to_thread.run_sync(decode) if len(body) > LARGE_BODY else decode()
        sharded = mode == "sharded" or plan is not None
        if mode == "auto" and not sharded:
            # A stat of a local file: microseconds, cheaper than a thread hop on every request.
            sharded = os.stat(ref.path).st_size > settings.memory_budget_bytes
        if sharded and variant != "fp32":
            raise HTTPException(400, "sharded inference runs the fp32 model; drop the variant")

        async def compute() -> dict[str, Any]:
            if sharded:
                timeout = timeout_s or settings.request_timeout_s
                return await ctx.shards.infer(cid, inputs, plan_cid=plan, timeout_s=timeout)
            return await inference.infer(cid, inputs, variant=variant, threads=threads, timeout_s=timeout_s)

        outputs = await _unless_disconnected(request, compute)
        if outputs is None:  # the client went away; nobody reads this
            return Response(status_code=499)
        kind = response_media_type(request.headers.get("accept"), media_type(content_type), len(outputs))
        return Response(encode_response(outputs, kind), media_type=kind)

    @router.get("/v1/models/{cid}/analysis", tags=["models"])
    async def analysis(cid: str, request: Request) -> dict[str, Any]:
        """Parameters, FLOPs per operator type (as polynomials in the symbolic dims and evaluated),
        activation memory, operator histogram, I/O signature, opsets. Query parameters set symbolic
        dims, e.g. ``?batch=4&seq=256`` (default: 1, and 128 for sequence-like dims)."""
        dims: dict[str, int] = {}
        for name, value in request.query_params.items():
            if (
                len(dims) >= MAX_DIMS
                or len(name) > 64
                or not value.isdigit()
                or not 0 < int(value) <= 1 << 20
            ):
                raise HTTPException(
                    400, f"dim {name[:64]!r} must be a positive integer (at most {MAX_DIMS} dims)"
                )
            dims[name] = int(value)
        return await library.analysis(cid, dims)

    @router.get("/v1/models/{cid}/variants", tags=["models"])
    async def variants(cid: str) -> dict[str, Any]:
        """Precision variants built from this model, with their CIDs and measured accuracy deltas."""
        return {"variants": await library.variants(cid)}

    @router.post("/v1/models/{cid}/variants", tags=["models"], status_code=201)
    async def build_variant(cid: str, body: VariantRequest) -> dict[str, Any]:
        """Build a precision variant (int8 dynamic quantisation, fp16), content-address it and measure
        its accuracy delta against the fp32 model on a fixed random batch."""
        return await library.build_variant(cid, body.variant)

    @router.post("/v1/models/{cid}/bench", tags=["models"])
    async def bench(cid: str, body: BenchRequest) -> dict[str, Any]:
        """Sweep batches x threads x variants with in-process ONNX Runtime; every point is stored."""
        points = await library.bench(
            cid,
            batches=body.batches,
            threads=body.threads,
            variants=body.variants,
            repeats=body.repeats,
            seq_len=body.seq_len,
        )
        return {"cid": cid, "points": points}

    @router.get("/v1/measurements", tags=["models"])
    async def measurements(
        cid: Annotated[str | None, Query(max_length=256)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> dict[str, Any]:
        """Stored measurements (benchmarks and sampled live requests), newest first."""
        rows = await ctx.store.call(ctx.store.sync.list_measurements, cid, limit=limit)
        return {"measurements": rows}

    @router.get("/v1/runtime", tags=["inference"])
    async def runtime_stats() -> dict[str, Any]:
        """Cached sessions, memory used vs budget, and each batcher's queue and batch statistics."""
        return inference.stats()

    return router
