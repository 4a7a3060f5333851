"""The inference domain in process: where a request runs (locally or through a shard plan),
stored measurements, runtime statistics."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from accel_node.core.schemas import InferOptions
from accel_node.runtime.errors import InputError
from accel_node.runtime.service import InferenceService, ModelRef
from accel_node.shard.service import ShardService
from accel_node.store import AsyncStore

Arrays = dict[str, np.ndarray[Any, Any]]


class LocalInference:
    def __init__(self, inference: InferenceService, shards: ShardService, store: AsyncStore) -> None:
        self._inference = inference
        self._shards = shards
        self._store = store

    @property
    def service(self) -> InferenceService:
        """The runtime service itself (its settings bound request bodies in the API)."""
        return self._inference

    async def model(self, cid: str, variant: str = "fp32") -> ModelRef:
        """The servable file and I/O signature of ``cid``'s ``variant`` (for decoding request bodies)."""
        return await self._inference.model(cid, variant)

    async def infer(self, cid: str, inputs: Mapping[str, Any], options: InferOptions | None = None) -> Arrays:
        """Outputs for ``inputs``: locally, or through a shard plan's peers when asked to (``mode``
        sharded, or a ``plan``) or, in ``auto`` mode, when the model file exceeds the memory budget."""
        opts = options or InferOptions()
        settings = self._inference.settings
        ref = await self._inference.model(cid, opts.variant)
        sharded = opts.mode == "sharded" or opts.plan is not None
        if opts.mode == "auto" and not sharded:
            # A stat of a local file: microseconds, cheaper than a thread hop on every request.
            sharded = os.stat(ref.path).st_size > settings.memory_budget_bytes
        if sharded:
            if opts.variant != "fp32":
                raise InputError("sharded inference runs the fp32 model; drop the variant")
            timeout = opts.timeout_s or settings.request_timeout_s
            return await self._shards.infer(cid, dict(inputs), plan_cid=opts.plan, timeout_s=timeout)
        return await self._inference.infer(
            cid, dict(inputs), variant=opts.variant, threads=opts.threads, timeout_s=opts.timeout_s
        )

    async def measurements(self, cid: str | None = None, *, limit: int = 1000) -> dict[str, Any]:
        rows = await self._store.list_measurements(cid, limit=limit)
        return {"measurements": [row.as_dict() for row in rows]}

    async def runtime(self) -> dict[str, Any]:
        return self._inference.stats()
