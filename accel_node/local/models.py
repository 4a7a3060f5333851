"""The models domain in process: publish, fetch, list, remove, and what the library knows of a model
(analysis, precision variants, benchmark sweeps)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accel_node.config import Config
from accel_node.core.schemas import (
    BenchRequest,
    FetchProgressList,
    FetchProgressView,
    ModelList,
    ModelView,
    PublishRequest,
)
from accel_node.errors import NotFoundError, UsageError
from accel_node.models.service import ModelService, normal_cid
from accel_node.runtime.library import ModelLibrary
from accel_node.runtime.service import InferenceService

MAX_DIMS = 16
MAX_DIM_VALUE = 1 << 20


class LocalModels:
    def __init__(
        self, models: ModelService, library: ModelLibrary, inference: InferenceService, config: Config
    ) -> None:
        self._models = models
        self._library = library
        self._inference = inference
        self._config = config

    async def publish(self, request: PublishRequest) -> ModelView:
        ttl_s = self._config.models.publish_ttl_days * 86400
        view = await self._models.publish(
            Path(request.dir), request.key, name=request.name, version=request.version, ttl_s=ttl_s
        )
        return ModelView(**view)

    async def fetch(self, cid: str) -> ModelView:
        return ModelView(**await self._models.fetch(cid))

    async def fetches(self) -> FetchProgressList:
        return FetchProgressList(fetches=[FetchProgressView(**p) for p in self._models.fetches.running()])

    async def fetch_progress(self, cid: str) -> FetchProgressView:
        progress = self._models.fetches.get(normal_cid(cid))
        if progress is None:
            raise NotFoundError(f"no fetch of {cid[:100]} is running or recently finished on this node")
        return FetchProgressView(**progress)

    async def list(self) -> ModelList:
        return ModelList(models=[ModelView(**m) for m in await self._models.list()])

    async def show(self, cid: str) -> ModelView:
        return ModelView(**await self._models.show(cid))

    async def remove(self, cid: str) -> ModelView:
        """Remove a model: its files, pins, unreferenced blocks, sessions, variants and analyses."""
        view = await self.show(cid)
        await self._library.forget(view.cid)
        await self._inference.forget(view.cid)
        return ModelView(**await self._models.remove(view.cid))

    async def pin(self, cid: str) -> ModelView:
        return ModelView(**await self._models.pin(cid))

    async def analysis(self, cid: str, dims: Mapping[str, int] | None = None) -> dict[str, Any]:
        values = dict(dims or {})
        if len(values) > MAX_DIMS:
            raise UsageError(f"at most {MAX_DIMS} dims can be set")
        for name, value in values.items():
            if len(name) > 64 or not 0 < value <= MAX_DIM_VALUE:
                raise UsageError(f"dim {name[:64]!r} must be a positive integer up to {MAX_DIM_VALUE}")
        return await self._library.analysis(cid, values)

    async def variants(self, cid: str) -> dict[str, Any]:
        return {"variants": await self._library.variants(cid)}

    async def build_variant(self, cid: str, variant: str) -> dict[str, Any]:
        return await self._library.build_variant(cid, variant)

    async def bench(self, cid: str, request: BenchRequest) -> dict[str, Any]:
        points = await self._library.bench(
            cid,
            batches=request.batches,
            threads=request.threads,
            variants=request.variants,
            repeats=request.repeats,
            seq_len=request.seq_len,
        )
        return {"cid": cid, "points": points}
