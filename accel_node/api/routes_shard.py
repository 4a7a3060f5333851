"""Routes about sharded inference: plans, the stages this node serves, and who serves what."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from accel_node.api.context import ApiContext
from accel_node.api.routing import route
from accel_node.core import endpoints as E
from accel_node.core.schemas import PlanRequest, ServeRequest, UnserveRequest


def shard_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["shards"])
    shards = ctx.core.shards

    @route(router, E.SHARDS_PLAN, status_code=201)
    async def plan(body: PlanRequest) -> dict[str, Any]:
        """Partition a model into stages balanced to the peers' measured throughput, sign the plan
        and publish it as content (its CID names it)."""
        return await shards.plan(body)

    @route(router, E.SHARDS_SERVE)
    async def serve(body: ServeRequest) -> dict[str, Any]:
        """Serve one stage of a plan: the plan is fetched and verified against the local model by
        re-partitioning, the stage loaded and announced (DHT and capability record)."""
        return await shards.serve(body)

    @route(router, E.SHARDS_UNSERVE)
    async def unserve(body: UnserveRequest) -> dict[str, Any]:
        """Stop serving a stage."""
        return await shards.unserve(body.plan, body.stage)

    @route(router, E.SHARDS)
    async def listing(
        cid: Annotated[str | None, Query(max_length=256, description="Only plans of this model")] = None,
        lookup: Annotated[bool, Query(description="Look up the peers serving each stage")] = True,
    ) -> dict[str, Any]:
        """Plans known here with their stages, stage CIDs and the peers serving each; stages served here."""
        return await shards.list(cid=cid, lookup=lookup)

    return router
