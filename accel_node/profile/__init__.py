"""Hardware self-profiler: what this machine is (static facts) and what it can do (measured figures).

Every figure is measured on the spot -- there are no tables of chip FLOPS -- and carries its
samples, median, coefficient of variation and a one-line ``method``; a figure that cannot be
measured here (no GPU, no RAPL, unwritable disk directory) carries an ``unavailable_reason``.

Where things live:
- ``model``: ``StaticFacts``, ``Measurement``, ``HardwareProfile`` (to_dict/from_dict/summary),
  ``fingerprint``.
- ``static``: ``collect_static`` (CPU, ISA flags, caches, memory, OS, GPUs, ORT providers, versions).
- ``runner``: ``run_profile`` -- the ordered steps and the sizes of the ``quick``/``full`` modes.
- ``blas`` + ``worker``: numpy GEMM in a worker process per BLAS thread count (+ RAPL power).
- ``ort_gemm``: fp32 ``MatMul`` and int8 ``MatMulInteger`` models through ONNX Runtime.
- ``memory``: STREAM-style copy/triad bandwidth, one thread and all threads.
- ``disk``: read throughput of the node home's disk with page-cache eviction.
- ``gpu``: torch/CUDA copy and matmul figures, NVML power (lazy imports; optional).
- ``load``: how busy other processes kept the CPUs during each step (``background_load``).
- ``power``: RAPL package energy counters. ``stats``: median, CV, sample timing.
- ``fields``: strict JSON readers for ``from_dict``. ``errors``: ``ProfileError``.
"""

from typing import TYPE_CHECKING, Any

from accel_node.profile.errors import ProfileError
from accel_node.profile.model import (
    CacheInfo,
    GpuInfo,
    HardwareProfile,
    Measurement,
    Mode,
    StaticFacts,
    fingerprint,
)

# ``runner`` and ``static`` import numpy and ONNX Runtime; the daemon itself only needs the data
# model (it profiles in a worker process, see ``__main__``), so those are loaded on first use.
if TYPE_CHECKING:
    from accel_node.profile.runner import STEP_NAMES, run_profile
    from accel_node.profile.static import collect_static


def __getattr__(name: str) -> Any:
    if name in ("STEP_NAMES", "run_profile"):
        from accel_node.profile import runner

        return getattr(runner, name)
    if name == "collect_static":
        from accel_node.profile.static import collect_static

        return collect_static
    raise AttributeError(name)


__all__ = [
    "STEP_NAMES",
    "CacheInfo",
    "GpuInfo",
    "HardwareProfile",
    "Measurement",
    "Mode",
    "ProfileError",
    "StaticFacts",
    "collect_static",
    "fingerprint",
    "run_profile",
]
