"""The profile's data model: static facts, measurements, the profile itself and its fingerprint.

Everything here is a frozen dataclass with a JSON-safe ``to_dict`` and a strict ``from_dict``
(profiles are read back from SQLite, so a malformed row must fail loudly with ``ValueError``
rather than produce a half-filled object).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from accel_node.profile import stats
from accel_node.profile.fields import Fields, as_float

Mode = Literal["quick", "full"]
Scope = Literal["1t", "all"]  # measurement-name suffix: one thread, or all usable CPUs
MODES: tuple[Mode, ...] = ("quick", "full")
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Measurement:
    """One measured figure: the per-sample values and how they were obtained.

    ``threads`` is the number of CPU threads the measurement used (0 where CPU threads are not
    the point, e.g. GPU figures). When the figure could not be measured on this machine,
    ``unavailable_reason`` says why and ``median``/``cv`` are None and ``samples`` is empty.
    ``background_load`` is the share of the machine's CPU capacity that other processes used while
    the figure was measured (see :mod:`accel_node.profile.load`); None when not known.
    """

    name: str
    unit: str
    method: str
    threads: int
    repeats: int
    median: float | None
    cv: float | None
    samples: tuple[float, ...]
    unavailable_reason: str | None = None
    background_load: float | None = None

    def __post_init__(self) -> None:
        if self.background_load is not None and not 0.0 <= self.background_load <= 1.0:
            raise ValueError(f"measurement {self.name}: background_load must be within [0, 1]")
        if not self.name or not self.unit or not self.method:
            raise ValueError("measurement: name, unit and method must be non-empty")
        if self.threads < 0 or self.repeats < 0:
            raise ValueError(f"measurement {self.name}: threads and repeats must be >= 0")
        if self.unavailable_reason is not None:
            if self.median is not None or self.cv is not None or self.samples or self.repeats:
                raise ValueError(f"measurement {self.name}: unavailable but has figures")
            return
        if self.median is None or self.cv is None:
            raise ValueError(f"measurement {self.name}: available but median or cv is missing")
        if len(self.samples) != self.repeats or self.repeats < 1:
            raise ValueError(
                f"measurement {self.name}: {len(self.samples)} samples for {self.repeats} repeats"
            )
        if not stats.all_finite_positive(self.samples):
            raise ValueError(f"measurement {self.name}: samples must be finite and positive")
        if not math.isclose(self.median, stats.median(self.samples), rel_tol=1e-9):
            raise ValueError(f"measurement {self.name}: median does not match the samples")
        if not math.isclose(self.cv, stats.cv(self.samples), rel_tol=1e-6, abs_tol=1e-12):
            raise ValueError(f"measurement {self.name}: cv does not match the samples")

    @classmethod
    def from_samples(
        cls, name: str, unit: str, method: str, threads: int, samples: list[float]
    ) -> Measurement:
        return cls(
            name=name,
            unit=unit,
            method=method,
            threads=threads,
            repeats=len(samples),
            median=stats.median(samples),
            cv=stats.cv(samples),
            samples=tuple(samples),
        )

    @classmethod
    def unavailable(cls, name: str, unit: str, method: str, threads: int, reason: str) -> Measurement:
        return cls(name, unit, method, threads, 0, None, None, (), reason or "unknown reason")

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "method": self.method,
            "threads": self.threads,
            "repeats": self.repeats,
            "median": self.median,
            "cv": self.cv,
            "samples": list(self.samples),
            "unavailable_reason": self.unavailable_reason,
            "background_load": self.background_load,
        }

    @classmethod
    def from_dict(cls, data: object) -> Measurement:
        f = Fields(data, "measurement", set(cls.__dataclass_fields__))
        samples = tuple(as_float(s, "measurement.samples[]") for s in f.items("samples"))
        return cls(
            name=f.text("name"),
            unit=f.text("unit"),
            method=f.text("method"),
            threads=f.integer("threads"),
            repeats=f.integer("repeats"),
            median=f.opt_number("median"),
            cv=f.opt_number("cv"),
            samples=samples,
            unavailable_reason=f.opt_text("unavailable_reason"),
            background_load=f.opt_number("background_load"),
        )


@dataclass(frozen=True)
class CacheInfo:
    """One CPU cache level as the kernel reports it; ``instances`` counts distinct copies machine-wide."""

    level: int
    type: str
    size_bytes: int
    instances: int

    @classmethod
    def from_dict(cls, data: object) -> CacheInfo:
        f = Fields(data, "cache", set(cls.__dataclass_fields__))
        return cls(f.integer("level"), f.text("type"), f.integer("size_bytes"), f.integer("instances", 1))


@dataclass(frozen=True)
class GpuInfo:
    """A CUDA device as torch reports it."""

    index: int
    name: str
    memory_bytes: int
    compute_capability: str
    multiprocessors: int

    @classmethod
    def from_dict(cls, data: object) -> GpuInfo:
        f = Fields(data, "gpu", set(cls.__dataclass_fields__))
        return cls(
            f.integer("index"),
            f.text("name"),
            f.integer("memory_bytes"),
            f.text("compute_capability"),
            f.integer("multiprocessors"),
        )


@dataclass(frozen=True)
class StaticFacts:
    """What the machine and its software stack are, read (not measured) at profile time."""

    cpu_model: str
    machine: str
    physical_cores: int
    logical_cores: int
    usable_cpus: int  # CPUs this process may run on (affinity); "all threads" means this many
    isa_flags: tuple[str, ...]
    caches: tuple[CacheInfo, ...]
    memory_total_bytes: int
    memory_available_bytes: int
    os: str
    python_version: str
    gpus: tuple[GpuInfo, ...]
    ort_providers: tuple[str, ...]
    onnxruntime_version: str
    numpy_version: str
    blas: str
    torch_version: str | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            if key in ("caches", "gpus"):
                value = [dataclasses.asdict(item) for item in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: object) -> StaticFacts:
        f = Fields(data, "static", set(cls.__dataclass_fields__))
        return cls(
            cpu_model=f.text("cpu_model"),
            machine=f.text("machine"),
            physical_cores=f.integer("physical_cores", 1),
            logical_cores=f.integer("logical_cores", 1),
            usable_cpus=f.integer("usable_cpus", 1),
            isa_flags=f.texts("isa_flags"),
            caches=tuple(CacheInfo.from_dict(c) for c in f.items("caches")),
            memory_total_bytes=f.integer("memory_total_bytes", 1),
            memory_available_bytes=f.integer("memory_available_bytes"),
            os=f.text("os"),
            python_version=f.text("python_version"),
            gpus=tuple(GpuInfo.from_dict(g) for g in f.items("gpus")),
            ort_providers=f.texts("ort_providers"),
            onnxruntime_version=f.text("onnxruntime_version"),
            numpy_version=f.text("numpy_version"),
            blas=f.text("blas"),
            torch_version=f.opt_text("torch_version"),
        )


def fingerprint(static: StaticFacts) -> str:
    """A hex sha256 over the facts the measured figures depend on.

    Two machines (or one machine before and after an upgrade) with the same fingerprint should
    measure the same figures within noise, so a stored profile can be reused while the fingerprint
    is unchanged. Volatile facts (available memory, OS patch level) are left out; total memory is
    rounded to GiB because the kernel's reservations make the exact byte count drift. The torch
    version only counts when there are GPUs, whose figures it affects.
    """
    facts = {
        "cpu_model": static.cpu_model,
        "machine": static.machine,
        "physical_cores": static.physical_cores,
        "logical_cores": static.logical_cores,
        "usable_cpus": static.usable_cpus,
        "isa_flags": sorted(static.isa_flags),
        "memory_gib": round(static.memory_total_bytes / 2**30),
        "gpus": [[g.name, g.memory_bytes, g.compute_capability] for g in static.gpus],
        "torch_version": static.torch_version if static.gpus else None,
        "onnxruntime_version": static.onnxruntime_version,
        "ort_providers": sorted(static.ort_providers),
        "numpy_version": static.numpy_version,
    }
    canonical = json.dumps(facts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# Measurements whose medians feed summary(); names are defined by the measuring modules.
PEAK_GEMM_NAMES = ("numpy_gemm_fp32_all", "ort_gemm_fp32_all")
GEMM_1T_NAMES = ("numpy_gemm_fp32_1t", "ort_gemm_fp32_1t")
INT8_NAME = "ort_gemm_int8_all"
MEM_BW_NAMES = ("mem_triad_all", "mem_copy_all")


@dataclass(frozen=True)
class HardwareProfile:
    """A complete profile: static facts plus every measurement, in the order they were taken."""

    fingerprint: str
    mode: Mode
    created_at: float  # unix time when the profile started
    duration_s: float
    static: StaticFacts
    measurements: tuple[Measurement, ...]

    def __post_init__(self) -> None:
        names = [m.name for m in self.measurements]
        if len(set(names)) != len(names):
            raise ValueError("profile: duplicate measurement names")
        if self.mode not in MODES:
            raise ValueError(f"profile: unknown mode {self.mode!r}")

    def measurement(self, name: str) -> Measurement | None:
        """The measurement called ``name``, or None when the profile has none by that name."""
        return next((m for m in self.measurements if m.name == name), None)

    def _median(self, name: str) -> float | None:
        m = self.measurement(name)
        return m.median if m is not None else None

    def summary(self) -> dict[str, Any]:
        """The handful of figures a peer needs to place work; GB here means 1e9 bytes."""
        peaks = [v for v in map(self._median, PEAK_GEMM_NAMES) if v is not None]
        singles = [v for v in map(self._median, GEMM_1T_NAMES) if v is not None]
        bandwidth = next((v for v in map(self._median, MEM_BW_NAMES) if v is not None), None)
        gpus = []
        for gpu in self.static.gpus:
            prefix = f"gpu{gpu.index}_"
            gpus.append(
                {
                    "name": gpu.name,
                    "memory_gb": gpu.memory_bytes / 1e9,
                    "compute_capability": gpu.compute_capability,
                    "fp32_tflops": self._median(prefix + "matmul_fp32"),
                    "fp16_tflops": self._median(prefix + "matmul_fp16"),
                    "bf16_tflops": self._median(prefix + "matmul_bf16"),
                    "mem_bw_gbs": self._median(prefix + "d2d_copy"),
                }
            )
        return {
            "peak_gflops": max(peaks) if peaks else None,
            "gflops_1t": max(singles) if singles else None,
            "int8_gops": self._median(INT8_NAME),
            "mem_bw_gbs": bandwidth,
            "mem_total_gb": self.static.memory_total_bytes / 1e9,
            "cpu": self.static.cpu_model,
            "cores": self.static.physical_cores,
            "gpus": gpus,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "fingerprint": self.fingerprint,
            "mode": self.mode,
            "created_at": self.created_at,
            "duration_s": self.duration_s,
            "static": self.static.to_dict(),
            "measurements": [m.to_dict() for m in self.measurements],
        }

    @classmethod
    def from_dict(cls, data: object) -> HardwareProfile:
        """Rebuild a profile from :meth:`to_dict` output; ``ValueError`` on anything malformed."""
        f = Fields(data, "profile", set(cls.__dataclass_fields__) | {"schema"})
        if f.integer("schema") != SCHEMA_VERSION:
            raise ValueError(f"profile: schema {f.data['schema']} is not {SCHEMA_VERSION}")
        mode = f.text("mode")
        if mode not in MODES:
            raise ValueError(f"profile.mode: expected one of {MODES}, got {mode!r}")
        static = StaticFacts.from_dict(f.data["static"])
        digest = f.text("fingerprint")
        if digest != fingerprint(static):
            raise ValueError("profile.fingerprint does not match the profile's static facts")
        created_at = f.number("created_at")
        duration_s = f.number("duration_s")
        if created_at <= 0 or duration_s < 0:
            raise ValueError("profile: created_at must be > 0 and duration_s >= 0")
        return cls(
            fingerprint=digest,
            mode=mode,
            created_at=created_at,
            duration_s=duration_s,
            static=static,
            measurements=tuple(Measurement.from_dict(m) for m in f.items("measurements")),
        )
