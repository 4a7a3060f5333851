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
from accel_node.profile.runner import STEP_NAMES, run_profile
from accel_node.profile.static import collect_static

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
