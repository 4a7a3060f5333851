"""Routes about this node's hardware: facts, the measured profile, profiling runs."""

from __future__ import annotations

from fastapi import APIRouter

from accel_node.api import schemas
from accel_node.api.context import ApiContext


def hardware_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/hardware", response_model=schemas.Hardware, tags=["hardware"])
    async def hardware() -> schemas.Hardware:
        """Static facts, the measured profile for this hardware (cached per fingerprint) and the
        summary advertised to peers."""
        hw = ctx.hardware
        return schemas.Hardware(
            fingerprint=hw.fingerprint,
            static=hw.static.to_dict() if hw.static else None,
            summary=hw.summary(),
            profile=hw.current.to_dict() if hw.current else None,
            job=hw.job.as_dict() if hw.job else None,
        )

    @router.post("/v1/profile", response_model=schemas.ProfileJob, status_code=202, tags=["hardware"])
    async def start_profile(body: schemas.ProfileRequest) -> schemas.ProfileJob:
        """Start measuring this node's hardware (replacing the cached profile when done); poll
        ``GET /v1/profile`` for progress. A run already in progress is returned instead."""
        return schemas.ProfileJob(job=ctx.hardware.start_profile(body.mode).as_dict())

    @router.get("/v1/profile", response_model=schemas.ProfileJob, tags=["hardware"])
    async def profile_job() -> schemas.ProfileJob:
        """Progress of the current or last profiling run."""
        job = ctx.hardware.job
        return schemas.ProfileJob(job=job.as_dict() if job else None)

    return router
