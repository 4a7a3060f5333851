"""Errors of the hardware profiler."""

from __future__ import annotations

from accel_node.errors import AccelNodeError


class ProfileError(AccelNodeError):
    """A measurement that every machine can make failed (e.g. the BLAS worker process died).

    Figures that depend on optional hardware (GPU, RAPL, a writable disk directory) never raise
    this: they come back as a :class:`~accel_node.profile.model.Measurement` with an
    ``unavailable_reason`` instead.
    """

    status = 500
    code = "profile_failed"


class WorkerError(ProfileError):
    """The profiling worker process failed or printed something unexpected."""

    code = "profile_worker_failed"
