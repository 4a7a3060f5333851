"""The node's knowledge of its own hardware: static facts, the cached profile, profiling jobs.

Profiles are cached in the store per hardware fingerprint. At start the service looks up the
profile for the current fingerprint; when there is none (new machine, new GPU, new ONNX Runtime...)
it profiles by itself (``[profile] auto``), so a changed machine is re-measured and an unchanged one
is not. Profiling is CPU-bound and runs on a worker thread, never on the event loop; one job at a
time, with progress readable while it runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil
import trio
from trio_typing import TaskStatus

from accel_node.profile import HardwareProfile, Mode, StaticFacts, collect_static, fingerprint, run_profile
from accel_node.store import AsyncStore

log = logging.getLogger(__name__)


@dataclass
class ProfileJob:
    """State of the current or last profiling run, as the API reports it."""

    mode: Mode
    started_at: float
    running: bool = True
    step: str = ""
    index: int = 0
    count: int = 0
    finished_at: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HardwareService:
    """Owns the static facts, the current profile and profiling jobs."""

    store: AsyncStore
    disk_dir: Path
    auto: Literal["quick", "full", "off"]
    static: StaticFacts | None = None
    fingerprint: str = ""
    current: HardwareProfile | None = None
    job: ProfileJob | None = None
    on_profile: list[Callable[[HardwareProfile], None]] = field(default_factory=list)
    _lock: trio.Lock = field(default_factory=trio.Lock)
    _nursery: trio.Nursery | None = None

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.static = await trio.to_thread.run_sync(collect_static)
        self.fingerprint = fingerprint(self.static)
        cached = await self.store.call(self.store.sync.latest_profile, self.fingerprint)
        if cached is not None:
            try:
                self.current = HardwareProfile.from_dict(cached)
            except ValueError as exc:
                log.warning("ignoring malformed cached profile", extra={"error": str(exc)})
        log.info(
            "hardware",
            extra={
                "fingerprint": self.fingerprint[:16],
                "cached_profile": self.current is not None,
                "cpu": self.static.cpu_model,
            },
        )
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            if self.current is None and self.auto != "off":
                self.start_profile(self.auto)
            await trio.sleep_forever()

    def start_profile(self, mode: Mode) -> ProfileJob:
        """Start a profiling run in the background (or return the one already running)."""
        if self.job is not None and self.job.running:
            return self.job
        if self._nursery is None:
            raise RuntimeError("hardware service is not running")
        self.job = ProfileJob(mode=mode, started_at=time.time())
        self._nursery.start_soon(self._profile, self.job)
        return self.job

    async def _profile(self, job: ProfileJob) -> None:
        def progress(step: str, index: int, count: int) -> None:
            # Called on the worker thread; plain attribute writes are atomic under the GIL.
            job.step, job.index, job.count = step, index, count

        async with self._lock:
            log.info("profiling hardware", extra={"mode": job.mode})
            try:
                profile = await trio.to_thread.run_sync(
                    lambda: run_profile(job.mode, disk_dir=self.disk_dir, progress=progress)
                )
            except Exception as exc:  # a failing measurement must not take the node down
                log.exception("profiling failed")
                job.error = f"{type(exc).__name__}: {exc}"
            else:
                await self.store.call(
                    self.store.sync.save_profile,
                    profile.fingerprint,
                    profile.mode,
                    profile.created_at,
                    profile.to_dict(),
                )
                self.current = profile
                self.fingerprint = profile.fingerprint
                log.info(
                    "profile stored", extra={"mode": job.mode, "duration_s": round(profile.duration_s, 1)}
                )
                for callback in self.on_profile:
                    callback(profile)
            finally:
                job.running = False
                job.finished_at = time.time()

    def summary(self) -> dict[str, Any]:
        """What peers see of this node's hardware: measured figures (or None) plus live memory."""
        mem = psutil.virtual_memory()
        base: dict[str, Any] = {
            "peak_gflops": None,
            "mem_bw_gbs": None,
            "mem_total_gb": mem.total / 1e9,
            "cpu": self.static.cpu_model if self.static else "",
            "cores": self.static.physical_cores if self.static else psutil.cpu_count(logical=False) or 1,
            "gpus": [],
        }
        if self.current is not None:
            base.update(self.current.summary())
        base["mem_free_gb"] = mem.available / 1e9
        base["profiled"] = self.current is not None
        return base
