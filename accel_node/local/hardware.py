"""The hardware domain in process: facts, the measured profile, profiling runs."""

from __future__ import annotations

from pydantic import ValidationError

from accel_node.core.schemas import Hardware, ProfileJob, ProfileRequest
from accel_node.errors import InvalidRequestError
from accel_node.hardware import HardwareService


class LocalHardware:
    def __init__(self, hardware: HardwareService) -> None:
        self._hw = hardware

    async def get(self) -> Hardware:
        hw = self._hw
        return Hardware(
            fingerprint=hw.fingerprint,
            static=hw.static.to_dict() if hw.static else None,
            summary=hw.summary(),
            profile=hw.current.to_dict() if hw.current else None,
            job=hw.job.as_dict() if hw.job else None,
        )

    async def start_profile(self, mode: str = "quick") -> ProfileJob:
        """Start a profiling run (a run in progress is returned instead)."""
        try:
            request = ProfileRequest.model_validate({"mode": mode})
        except ValidationError as exc:
            raise InvalidRequestError(
                f"invalid request: mode: {mode[:20]!r} is not 'quick' or 'full'"
            ) from exc
        return ProfileJob(job=self._hw.start_profile(request.mode).as_dict())

    async def profile_job(self) -> ProfileJob:
        job = self._hw.job
        return ProfileJob(job=job.as_dict() if job else None)
