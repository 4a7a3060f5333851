"""Routes about models: publish, fetch (and its progress), list, show, remove, pin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from accel_node.api.context import ApiContext
from accel_node.models.errors import ModelError
from accel_node.models.service import ModelNotFoundError, normal_cid


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: str = Field(max_length=4096, description="Directory on the daemon's machine holding one .onnx model")
    key: str = Field(max_length=64, description="Name of this node's publisher key to sign with")
    name: str | None = Field(default=None, max_length=128)
    version: int | None = Field(default=None, ge=0)


class FetchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cid: str = Field(max_length=256)


class ModelView(BaseModel):
    cid: str
    name: str
    version: int
    publisher: str
    size: int
    local: bool = Field(description="Published by this node (rather than fetched)")
    pinned: bool
    path: str = Field(description="Directory holding the verified files")
    installed_at: float
    manifest: dict[str, Any]


class ModelList(BaseModel):
    models: list[ModelView]


class FetchProgressView(BaseModel):
    cid: str = Field(description="The model's manifest CID (CIDv1, base32)")
    phase: str = Field(description="providers, manifest, blocks, verifying, installing, then done or failed")
    running: bool
    blocks_done: int = Field(description="Blocks fetched and stored by this fetch")
    bytes_done: int = Field(description="File bytes held so far (those present before the fetch included)")
    bytes_total: int | None = Field(description="Sum of the manifest's file sizes; null until it is known")
    files: int
    started_at: float
    finished_at: float | None
    error: str | None


class FetchProgressList(BaseModel):
    fetches: list[FetchProgressView]


def model_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["models"])
    models = ctx.models

    async def guarded(call: Any) -> ModelView:
        try:
            return ModelView(**await call)
        except ModelNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except ModelError as exc:
            raise HTTPException(422, str(exc)) from exc

    @router.post("/v1/models/publish", response_model=ModelView, status_code=201)
    async def publish(body: PublishRequest) -> ModelView:
        """Add a model directory, sign its manifest and announce it; the CID names the model."""
        ttl_s = ctx.config.models.publish_ttl_days * 86400
        return await guarded(
            models.publish(Path(body.dir), body.key, name=body.name, version=body.version, ttl_s=ttl_s)
        )

    @router.post("/v1/models/fetch", response_model=ModelView)
    async def fetch(body: FetchRequest) -> ModelView:
        """Fetch a model by manifest CID from peers, verify everything, install it (resumable).
        422 with the reason when it is refused (signature, publisher, expiry, rollback, limits...)."""
        return await guarded(models.fetch(body.cid))

    @router.get("/v1/models/fetches", response_model=FetchProgressList)
    async def list_fetches() -> FetchProgressList:
        """Fetches in progress on this node."""
        return FetchProgressList(fetches=[FetchProgressView(**p) for p in models.fetches.running()])

    @router.get("/v1/models/fetches/{cid}", response_model=FetchProgressView)
    async def show_fetch(cid: str) -> FetchProgressView:
        """Progress of the fetch of ``cid``: running, or one of the last ones finished (404 if none)."""
        try:
            progress = models.fetches.get(normal_cid(cid))
        except ModelError as exc:
            raise HTTPException(422, str(exc)) from exc
        if progress is None:
            raise HTTPException(404, f"no fetch of {cid} is running or recently finished on this node")
        return FetchProgressView(**progress)

    @router.get("/v1/models", response_model=ModelList)
    async def list_models() -> ModelList:
        """Models held by this node."""
        return ModelList(models=[ModelView(**m) for m in await models.list()])

    @router.get("/v1/models/{cid}", response_model=ModelView)
    async def show(cid: str) -> ModelView:
        """One model with its manifest."""
        return await guarded(models.show(cid))

    @router.delete("/v1/models/{cid}", response_model=ModelView)
    async def remove(cid: str) -> ModelView:
        """Remove a model: its files, pins, unreferenced blocks, sessions, variants and analyses."""
        view = await guarded(models.show(cid))
        await ctx.library.forget(view.cid)
        await ctx.inference.forget(view.cid)
        return await guarded(models.remove(view.cid))

    @router.post("/v1/models/{cid}/pin", response_model=ModelView)
    async def pin(cid: str) -> ModelView:
        """Pin a model so that garbage collection keeps its blocks."""
        return await guarded(models.pin(cid))

    return router
