"""The node's knowledge of its own hardware: static facts, the cached profile, profiling jobs.

Profiles are cached in the store per hardware fingerprint. At start the service asks a worker
process for the static facts and fingerprint and looks up the profile for that fingerprint; when
there is none (new machine, new GPU, new ONNX Runtime...) it profiles by itself (``[profile]
auto``), so a changed machine is re-measured and an unchanged one is not.

All measuring happens in a worker process (``python -m accel_node.profile``): the daemon never
loads numpy BLAS threads or ONNX Runtime for it, never holds the measurement buffers, and its event
loop never competes with the measurements for the GIL. One job at a time, with progress readable
while it runs; stopping the daemon kills the worker.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil
import trio
from trio_typing import TaskStatus

from accel_node.profile import HardwareProfile, Mode, StaticFacts
from accel_node.profile.errors import WorkerError
from accel_node.store import AsyncStore
from p2p.tasks import FailureHook, OwnedTasks

log = logging.getLogger(__name__)

MAX_WORKER_LINE_BYTES = 4 * 1024 * 1024


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


async def run_worker(args: list[str], on_line: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run ``python -m accel_node.profile ARGS``; pass progress lines on, return the last line."""
    last: dict[str, Any] = {}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "accel_node.profile", *args], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert process.stdout is not None
    buffer = b""
    try:
        while chunk := await process.stdout.receive_some(65536):
            buffer += chunk
            if len(buffer) > MAX_WORKER_LINE_BYTES:
                raise WorkerError("profiling worker printed an oversize line")
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise WorkerError("profiling worker printed a non-object line")
                on_line(message)
                last = message
        await process.wait()
    finally:
        if process.returncode is None:  # cancelled or failed: do not leave a worker behind
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        await process.stdout.aclose()
    if "error" in last:
        raise WorkerError(str(last["error"]))
    if process.returncode != 0:
        raise WorkerError(f"profiling worker exited with status {process.returncode}")
    return last


@dataclass
class HardwareService:
    """Owns the static facts, the current profile and profiling jobs.

    While :meth:`run` runs it owns the profiling task (one at a time, started by
    :meth:`start_profile`); a failure outside the run's own error handling is logged and passed to
    ``on_failure``.
    """

    store: AsyncStore
    disk_dir: Path
    auto: Literal["quick", "full", "off"]
    static: StaticFacts | None = None
    fingerprint: str = ""
    current: HardwareProfile | None = None
    job: ProfileJob | None = None
    on_profile: list[Callable[[HardwareProfile], None]] = field(default_factory=list)
    on_failure: FailureHook | None = None
    _lock: trio.Lock = field(default_factory=trio.Lock)
    _tasks: OwnedTasks = field(init=False)

    def __post_init__(self) -> None:
        self._tasks = OwnedTasks("hardware", on_failure=self.on_failure)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._tasks.open():
            task_status.started()  # facts arrive shortly; the summary copes without them
            await self._load_static()
            if self.current is None and self.auto != "off":
                self.start_profile(self.auto)
            await trio.sleep_forever()

    async def _load_static(self) -> None:
        try:
            result = await run_worker(["static"], lambda _line: None)
            self.static = StaticFacts.from_dict(result.get("static"))
            self.fingerprint = str(result["fingerprint"])
        except (WorkerError, ValueError, KeyError) as exc:
            log.error("reading hardware facts failed", extra={"error": str(exc)})
            return
        cached = await self.store.latest_profile(self.fingerprint)
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

    def start_profile(self, mode: Mode) -> ProfileJob:
        """Start a profiling run in the background (or return the one already running)."""
        if self.job is not None and self.job.running:
            return self.job
        if not self._tasks.running:
            raise RuntimeError("hardware service is not running")
        self.job = ProfileJob(mode=mode, started_at=time.time())
        self._tasks.spawn("profile", self._profile, self.job)
        return self.job

    async def _profile(self, job: ProfileJob) -> None:
        def progress(line: dict[str, Any]) -> None:
            step = line.get("progress")
            if isinstance(step, list) and len(step) == 3:
                job.step, job.index, job.count = str(step[0]), int(step[1]), int(step[2])

        async with self._lock:
            log.info("profiling hardware", extra={"mode": job.mode})
            try:
                result = await run_worker(
                    ["run", "--mode", job.mode, "--disk-dir", str(self.disk_dir)], progress
                )
                profile = HardwareProfile.from_dict(result.get("profile"))
            except (WorkerError, ValueError) as exc:  # a failing run must not take the node down
                log.error("profiling failed", extra={"error": str(exc)})
                job.error = str(exc)
            else:
                await self.store.save_profile(
                    profile.fingerprint,
                    profile.mode,
                    profile.created_at,
                    profile.to_dict(),
                )
                self.current = profile
                self.static = profile.static
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
            "gflops_1t": None,
            "int8_gops": None,
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
