"""Routes about models: publish, fetch (and its progress), list, show, remove, pin; what the library
knows of a model: analysis, precision variants, benchmark sweeps."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from accel_node.api.context import ApiContext
from accel_node.api.routing import route
from accel_node.core import endpoints as E
from accel_node.core.schemas import (
    BenchRequest,
    FetchProgressList,
    FetchProgressView,
    FetchRequest,
    ModelList,
    ModelView,
    PublishRequest,
    VariantRequest,
)
from accel_node.errors import UsageError


def _dims(request: Request) -> dict[str, int]:
    """Symbolic dims from the query string (``?batch=4&seq=256``); values are checked by the core."""
    dims: dict[str, int] = {}
    for name, value in request.query_params.items():
        if not value.isdigit() or len(value) > 9:
            raise UsageError(f"dim {name[:64]!r} must be a positive integer")
        dims[name] = int(value)
    return dims


def model_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["models"])
    models = ctx.core.models

    @route(router, E.MODELS_PUBLISH, response_model=ModelView, status_code=201)
    async def publish(body: PublishRequest) -> ModelView:
        """Add a model directory, sign its manifest and announce it; the CID names the model."""
        return await models.publish(body)

    @route(router, E.MODELS_FETCH, response_model=ModelView)
    async def fetch(body: FetchRequest) -> ModelView:
        """Fetch a model by manifest CID from peers, verify everything, install it (resumable).
        422 with the reason when it is refused (signature, publisher, expiry, rollback, limits...)."""
        return await models.fetch(body.cid)

    @route(router, E.MODELS_FETCHES, response_model=FetchProgressList)
    async def list_fetches() -> FetchProgressList:
        """Fetches in progress on this node."""
        return await models.fetches()

    @route(router, E.MODELS_FETCH_PROGRESS, response_model=FetchProgressView)
    async def show_fetch(cid: str) -> FetchProgressView:
        """Progress of the fetch of ``cid``: running, or one of the last ones finished (404 if none)."""
        return await models.fetch_progress(cid)

    @route(router, E.MODELS, response_model=ModelList)
    async def list_models() -> ModelList:
        """Models held by this node."""
        return await models.list()

    @route(router, E.MODEL, response_model=ModelView)
    async def show(cid: str) -> ModelView:
        """One model with its manifest."""
        return await models.show(cid)

    @route(router, E.MODEL_REMOVE, response_model=ModelView)
    async def remove(cid: str) -> ModelView:
        """Remove a model: its files, pins, unreferenced blocks, sessions, variants and analyses."""
        return await models.remove(cid)

    @route(router, E.MODEL_PIN, response_model=ModelView)
    async def pin(cid: str) -> ModelView:
        """Pin a model so that garbage collection keeps its blocks."""
        return await models.pin(cid)

    @route(router, E.MODEL_ANALYSIS)
    async def analysis(cid: str, request: Request) -> dict[str, Any]:
        """Parameters, FLOPs per operator type (as polynomials in the symbolic dims and evaluated),
        activation memory, operator histogram, I/O signature, opsets. Query parameters set symbolic
        dims, e.g. ``?batch=4&seq=256`` (default: 1, and 128 for sequence-like dims)."""
        return await models.analysis(cid, _dims(request))

    @route(router, E.MODEL_VARIANTS)
    async def variants(cid: str) -> dict[str, Any]:
        """Precision variants built from this model, with their CIDs and measured accuracy deltas."""
        return await models.variants(cid)

    @route(router, E.MODEL_VARIANT_BUILD, status_code=201)
    async def build_variant(cid: str, body: VariantRequest) -> dict[str, Any]:
        """Build a precision variant (int8 dynamic quantisation, fp16), content-address it and measure
        its accuracy delta against the fp32 model on a fixed random batch."""
        return await models.build_variant(cid, body.variant)

    @route(router, E.MODEL_BENCH)
    async def bench(cid: str, body: BenchRequest) -> dict[str, Any]:
        """Sweep batches x threads x variants with in-process ONNX Runtime; every point is stored."""
        return await models.bench(cid, body)

    return router
