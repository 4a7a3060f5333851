"""``run_profile``: the ordered list of steps that make a profile, and the sizes of each mode.

The API is synchronous and CPU-bound by design; the daemon calls it in a worker thread. Steps run
one after another (never in parallel: they would disturb each other's timings).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from accel_node.profile import blas, disk, gpu, memory, ort_gemm
from accel_node.profile.load import BackgroundLoad
from accel_node.profile.model import (
    MODES,
    HardwareProfile,
    Measurement,
    Mode,
    Scope,
    StaticFacts,
    fingerprint,
)
from accel_node.profile.static import collect_static

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Settings:
    """Sizes and repeat counts of one mode."""

    repeats: int
    min_sample_s: float  # a timed sample repeats the operation until it lasts at least this long
    gemm_n: int  # CPU GEMM size (numpy and ORT); 2n^3 flop per call
    gemm_n_many_cores: int  # used instead when there are more than 8 usable CPUs, to keep them all busy
    # Bytes per array (and >= 4x the last-level cache). The same in both modes on purpose: the copy
    # figure depends on the size through the C library's memmove (see accel_node.profile.memory).
    mem_min_bytes: int
    disk_bytes: int
    gpu_matmul_n: int
    gpu_copy_bytes: int


SETTINGS: dict[Mode, Settings] = {
    "quick": Settings(
        repeats=5,
        min_sample_s=0.1,
        gemm_n=1024,
        gemm_n_many_cores=2048,
        mem_min_bytes=256 * 2**20,
        disk_bytes=256 * 2**20,
        gpu_matmul_n=4096,
        gpu_copy_bytes=256 * 2**20,
    ),
    "full": Settings(
        repeats=10,
        min_sample_s=0.25,
        gemm_n=2048,
        gemm_n_many_cores=4096,
        mem_min_bytes=256 * 2**20,
        disk_bytes=2**30,
        gpu_matmul_n=8192,
        gpu_copy_bytes=2**30,
    ),
}

STEP_NAMES: tuple[str, ...] = (
    "static facts",
    "numpy GEMM, 1 thread",
    "numpy GEMM, all threads + CPU power",
    "ONNX Runtime fp32 GEMM",
    "ONNX Runtime int8 GEMM",
    "memory bandwidth, 1 thread",
    "memory bandwidth, all threads",
    "disk read",
    "GPU",
)


def _steps(settings: Settings, static: StaticFacts, disk_dir: Path) -> list[Callable[[], list[Measurement]]]:
    """The measuring steps (everything after static facts), in ``STEP_NAMES`` order."""
    s = settings
    r, t = s.repeats, s.min_sample_s
    cpus = static.usable_cpus
    n = s.gemm_n if cpus <= 8 else s.gemm_n_many_cores
    scopes: list[tuple[Scope, int]] = [("1t", 1), ("all", cpus)]
    array_bytes, note = memory.array_size(
        static.caches, min_bytes=s.mem_min_bytes, available_bytes=static.memory_available_bytes
    )

    def ort_step(kind: ort_gemm.GemmKind) -> list[Measurement]:
        return [
            ort_gemm.ort_gemm(
                kind, n, scope=scope, threads=k, repeats=r, min_sample_s=t, isa_flags=static.isa_flags
            )
            for scope, k in scopes
        ]

    def mem_step(scope: Scope, threads: int) -> list[Measurement]:
        return memory.memory_bandwidth(
            scope=scope, threads=threads, array_bytes=array_bytes, size_note=note, repeats=r, min_sample_s=t
        )

    return [
        lambda: blas.numpy_gemm(n, scope="1t", threads=1, repeats=r, min_sample_s=t, blas=static.blas),
        lambda: blas.numpy_gemm(
            n, scope="all", threads=cpus, repeats=r, min_sample_s=t, blas=static.blas, measure_power=True
        ),
        lambda: ort_step("fp32"),
        lambda: ort_step("int8"),
        lambda: mem_step("1t", 1),
        lambda: mem_step("all", cpus),
        lambda: [disk.disk_read(disk_dir, size=s.disk_bytes, repeats=r)],
        lambda: gpu.gpu_measurements(
            matmul_n=s.gpu_matmul_n, copy_bytes=s.gpu_copy_bytes, repeats=r, min_sample_s=t
        ),
    ]


def run_profile(mode: Mode = "quick", *, disk_dir: Path, progress: Progress | None = None) -> HardwareProfile:
    """Measure this machine. ``progress(step_name, step_index, step_count)`` is called before each
    step, with ``step_index`` counting from 0 (so it equals the number of steps already done).

    Takes ~10 s (quick) on a 2-core machine; ``full`` (larger sizes, 10 repeats) ~55 s.
    Raises :class:`~accel_node.profile.errors.ProfileError` only when a figure every machine can
    measure fails; missing optional hardware gives unavailable measurements instead.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    created_at = time.time()
    start = time.perf_counter()
    count = len(STEP_NAMES)
    if progress is not None:
        progress(STEP_NAMES[0], 0, count)
    static = collect_static()
    measurements: list[Measurement] = []
    for index, step in enumerate(_steps(SETTINGS[mode], static, Path(disk_dir)), start=1):
        if progress is not None:
            progress(STEP_NAMES[index], index, count)
        load = BackgroundLoad()
        taken = step()
        share = load.fraction()
        measurements += [dataclasses.replace(m, background_load=share) for m in taken]
    return HardwareProfile(
        fingerprint=fingerprint(static),
        mode=mode,
        created_at=created_at,
        duration_s=time.perf_counter() - start,
        static=static,
        measurements=tuple(measurements),
    )
