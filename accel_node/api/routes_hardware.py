"""Routes about this node's hardware: facts, the measured profile, profiling runs."""

from __future__ import annotations

from fastapi import APIRouter

from accel_node.api.context import ApiContext
from accel_node.api.routing import route
from accel_node.core import endpoints as E
from accel_node.core.schemas import Hardware, ProfileJob, ProfileRequest


def hardware_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["hardware"])
    hardware = ctx.core.hardware

    @route(router, E.HARDWARE, response_model=Hardware)
    async def facts() -> Hardware:
        """Static facts, the measured profile for this hardware (cached per fingerprint) and the
        summary advertised to peers."""
        return await hardware.get()

    @route(router, E.PROFILE_START, response_model=ProfileJob, status_code=202)
    async def start_profile(body: ProfileRequest) -> ProfileJob:
        """Start measuring this node's hardware (replacing the cached profile when done); poll
        ``GET /v1/profile`` for progress. A run already in progress is returned instead."""
        return await hardware.start_profile(body.mode)

    @route(router, E.PROFILE_JOB, response_model=ProfileJob)
    async def profile_job() -> ProfileJob:
        """Progress of the current or last profiling run."""
        return await hardware.profile_job()

    return router
