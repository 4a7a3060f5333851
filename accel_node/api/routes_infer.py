"""Routes about serving: inference, stored measurements, runtime statistics.

``POST /v1/infer/{cid}`` takes the raw body as it comes (no pydantic parsing: tensors can be
large): ``application/json`` for small tensors, ``application/x-npz`` / ``application/x-npy`` for
large ones (codecs in :mod:`accel_node.runtime.codecs`, never pickle; media types negotiated in
:mod:`accel_node.api.media`). The answer has the format the
``Accept`` header asks for, else the request's own. A client that goes away cancels its request.
Where the request runs (locally or sharded) is the core's decision
(:meth:`accel_node.local.inference.LocalInference.infer`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import trio
from fastapi import APIRouter, Query, Request, Response

from accel_node.api.context import ApiContext
from accel_node.api.media import decode_request, encode_response, media_type, response_media_type
from accel_node.api.routing import route
from accel_node.core import endpoints as E
from accel_node.core.schemas import InferOptions
from accel_node.errors import AccelNodeError
from accel_node.runtime.errors import PayloadTooLarge

LARGE_BODY = 256 * 1024  # decode bodies above this size off the event loop


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
    failure: AccelNodeError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, request, nursery.cancel_scope)
        try:  # caught in the body: a nursery would wrap it in an ExceptionGroup
            outputs = await compute()
        except AccelNodeError as exc:
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
    router = APIRouter(tags=["inference"])
    inference = ctx.core.inference
    settings = inference.service.settings

    @route(
        router,
        E.INFER,
        responses={
            200: {"content": {"application/json": {}, "application/x-npz": {}, "application/x-npy": {}}},
            400: {"description": "inputs do not match the model's signature (the message names the input)"},
            404: {"description": "no such model (or variant) on this node"},
            409: {"description": "the model's files are not verified"},
            413: {"description": "body too large"},
            415: {"description": "unsupported content type"},
            429: {"description": "queue full; retry after Retry-After seconds"},
            503: {"description": "sharded: no peer serves a stage"},
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
        options = InferOptions(variant=variant, threads=threads, timeout_s=timeout_s, mode=mode, plan=plan)
        body = await _read_body(request, settings.max_body_bytes)
        ref = await inference.model(cid, variant)
        content_type = request.headers.get("content-type")

        def decode() -> dict[str, Any]:
            return decode_request(body, content_type, ref.signature, settings.limits)

        inputs = await trio.to_thread.run_sync(decode) if len(body) > LARGE_BODY else decode()
        outputs = await _unless_disconnected(request, lambda: inference.infer(cid, inputs, options))
        if outputs is None:  # the client went away; nobody reads this
            return Response(status_code=499)
        kind = response_media_type(request.headers.get("accept"), media_type(content_type), len(outputs))
        return Response(encode_response(outputs, kind), media_type=kind)

    @route(router, E.MEASUREMENTS, tags=["models"])
    async def measurements(
        cid: Annotated[str | None, Query(max_length=256)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> dict[str, Any]:
        """Stored measurements (benchmarks and sampled live requests), newest first."""
        return await inference.measurements(cid, limit=limit)

    @route(router, E.RUNTIME)
    async def runtime_stats() -> dict[str, Any]:
        """Cached sessions, memory used vs budget, and each batcher's queue and batch statistics."""
        return await inference.runtime()

    return router
