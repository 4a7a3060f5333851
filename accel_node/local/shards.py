"""The shards domain in process: plans, the stages this node serves, and who serves what."""

from __future__ import annotations

from typing import Any

from accel_node.core.schemas import PlanRequest, ServeRequest
from accel_node.shard.service import ShardService


class LocalShards:
    def __init__(self, shards: ShardService) -> None:
        self._shards = shards

    async def plan(self, request: PlanRequest) -> dict[str, Any]:
        return await self._shards.plan(
            request.cid, stages=request.stages, peers=request.peers, assign_stages=request.assign
        )

    async def serve(self, request: ServeRequest) -> dict[str, Any]:
        plan_cid = request.plan or await self._shards.latest_plan(request.cid)
        return await self._shards.serve(request.cid, request.stage, plan_cid)

    async def unserve(self, plan: str, stage: int) -> dict[str, Any]:
        return {"stopped": await self._shards.unserve(plan, stage)}

    async def list(self, *, cid: str | None = None, lookup: bool = True) -> dict[str, Any]:
        return await self._shards.listing(model_cid=cid, lookup=lookup)
