"""Routes about sharded inference: plans, the stages this node serves, and who serves what."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from accel_node.api.context import ApiContext


class PlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cid: str = Field(max_length=256, description="Model CID (the model must be held by this node)")
    stages: int = Field(ge=1, le=64)
    peers: list[str] | None = Field(
        default=None,
        max_length=64,
        description="Peer ids to plan for, in stage order ('self' = this node); default: this node and the "
        "connected peers with the highest measured throughput",
    )
    assign: bool = Field(
        default=False,
        description="Ask each placed peer to serve its stage now (peers need [shard] accept_assignments)",
    )


class ServeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cid: str = Field(max_length=256, description="Model CID (held and verified by this node)")
    stage: int = Field(ge=0, le=1024)
    plan: str | None = Field(default=None, max_length=256, description="Plan CID; default: the newest plan")


class UnserveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: str = Field(max_length=256)
    stage: int = Field(ge=0, le=1024)


def shard_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["shards"])
    shards = ctx.shards

    @router.post("/v1/shards/plan", status_code=201)
    async def plan(body: PlanRequest) -> dict[str, Any]:
        """Partition a model into stages balanced to the peers' measured throughput, sign the plan
        and publish it as content (its CID names it)."""
        return await shards.plan(body.cid, stages=body.stages, peers=body.peers, assign_stages=body.assign)

    @router.post("/v1/shards/serve")
    async def serve(body: ServeRequest) -> dict[str, Any]:
        """Serve one stage of a plan: the plan is fetched and verified against the local model by
        re-partitioning, the stage loaded and announced (DHT and capability record)."""
        plan_cid = body.plan or await shards.latest_plan(body.cid)
        return await shards.serve(body.cid, body.stage, plan_cid)

    @router.post("/v1/shards/unserve")
    async def unserve(body: UnserveRequest) -> dict[str, Any]:
        """Stop serving a stage."""
        return {"stopped": await shards.unserve(body.plan, body.stage)}

    @router.get("/v1/shards")
    async def listing(
        cid: Annotated[str | None, Query(max_length=256, description="Only plans of this model")] = None,
        lookup: Annotated[bool, Query(description="Look up the peers serving each stage")] = True,
    ) -> dict[str, Any]:
        """Plans known here with their stages, stage CIDs and the peers serving each; stages served here."""
        return await shards.listing(model_cid=cid, lookup=lookup)

    return router
