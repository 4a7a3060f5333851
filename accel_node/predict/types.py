"""The values every predictor shares: what runs (:class:`Workload`), where (:class:`HardwareFeatures`),
what was measured (:class:`Sample`) and what is predicted (:class:`Prediction`).

A workload is built from per-node costs (:func:`accel_node.models.analysis.node_costs`), so a whole
model and one stage of a sharded model are described the same way. The features of a measurement
are stored with it (``measurements.features`` and ``measurements.hardware``), so training never
needs the model file or the profile it was measured with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from accel_node.models.analysis.flops import KINDS, kind_of

if TYPE_CHECKING:
    from accel_node.capability import HardwareSummary
    from accel_node.models.analysis import NodeCost
    from accel_node.profile import HardwareProfile
    from accel_node.store import MeasurementRow

VARIANTS = ("fp32", "fp16", "int8")
MAX_OP_TYPES = 512  # distinct operator types one workload may name (a decoded import is bounded)


def _finite(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: expected a finite number >= 0, got {value!r}")
    return float(value)


def _opt(value: object, where: str) -> float | None:
    return None if value is None else _finite(value, where)


@dataclass(frozen=True)
class OpLoad:
    """What the nodes of one operator type do at a workload's shapes."""

    count: int
    flops: float
    param_bytes: int
    output_bytes: int


@dataclass(frozen=True)
class Workload:
    """One model (or stage) at one configuration: its cost per operator type and how it is run.

    ``ops`` are the ONNX operator types of the fp32 graph even for a precision variant (the variant
    is a configuration of the same computation, and a prediction must not need the variant built).
    ``family`` labels the kind of model (mlp, cnn, transformer, ...) when known: evaluation holds
    families out to measure how a predictor generalises; no predictor feature depends on it.
    """

    batch: int
    threads: int
    variant: str
    dims: Mapping[str, int]
    ops: Mapping[str, OpLoad]
    input_bytes: int = 0
    family: str | None = None

    @property
    def flops(self) -> float:
        return sum(op.flops for op in self.ops.values())

    @property
    def param_bytes(self) -> int:
        return sum(op.param_bytes for op in self.ops.values())

    @property
    def activation_bytes(self) -> int:
        return sum(op.output_bytes for op in self.ops.values())

    @property
    def node_count(self) -> int:
        return sum(op.count for op in self.ops.values())

    def flops_by_kind(self) -> dict[str, float]:
        kinds = dict.fromkeys(KINDS, 0.0)
        for name, op in self.ops.items():
            kinds[kind_of(name)] += op.flops
        return kinds

    @classmethod
    def from_costs(
        cls,
        costs: Iterable[NodeCost],
        *,
        batch: int,
        threads: int,
        variant: str = "fp32",
        dims: Mapping[str, int] | None = None,
        input_bytes: int = 0,
        family: str | None = None,
    ) -> Workload:
        totals: dict[str, list[float]] = {}
        for cost in costs:
            entry = totals.setdefault(cost.op_type, [0, 0.0, 0, 0])
            entry[0] += 1
            entry[1] += cost.flops
            entry[2] += cost.param_bytes
            entry[3] += cost.output_bytes
        ops = {
            name: OpLoad(int(c), float(f), int(p), int(o)) for name, (c, f, p, o) in sorted(totals.items())
        }
        return cls(batch, threads, variant, dict(dims or {}), ops, input_bytes, family)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "threads": self.threads,
            "variant": self.variant,
            "dims": dict(self.dims),
            "ops": {name: asdict(op) for name, op in self.ops.items()},
            "input_bytes": self.input_bytes,
            "family": self.family,
        }

    @classmethod
    def from_dict(cls, data: object) -> Workload:
        """Strict decoding (stored rows, imports); ``ValueError`` on anything malformed."""
        if not isinstance(data, dict):
            raise ValueError("workload: expected an object")
        try:
            batch, threads, variant = data["batch"], data["threads"], data["variant"]
            dims, ops = data["dims"], data["ops"]
        except KeyError as exc:
            raise ValueError(f"workload: missing {exc}") from None
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (batch, threads)):
            raise ValueError("workload: batch and threads must be integers >= 0")
        if variant not in VARIANTS:
            raise ValueError(f"workload: unknown variant {variant!r}")
        integers = isinstance(dims, dict) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in dims.values()
        )
        if not integers:
            raise ValueError("workload: dims must map names to integers")
        if not isinstance(ops, dict) or len(ops) > MAX_OP_TYPES:
            raise ValueError(f"workload: ops must be an object of at most {MAX_OP_TYPES} operator types")
        decoded = {}
        for name, op in ops.items():
            if not isinstance(op, dict) or set(op) != {"count", "flops", "param_bytes", "output_bytes"}:
                raise ValueError(f"workload: malformed op {name!r}")
            decoded[str(name)] = OpLoad(
                int(_finite(op["count"], name)),
                _finite(op["flops"], name),
                int(_finite(op["param_bytes"], name)),
                int(_finite(op["output_bytes"], name)),
            )
        family = data.get("family")
        return cls(
            batch,
            threads,
            variant,
            {str(k): v for k, v in dims.items()},
            decoded,
            int(_finite(data.get("input_bytes", 0), "input_bytes")),
            family if isinstance(family, str) else None,
        )


@dataclass(frozen=True)
class HardwareFeatures:
    """The measured figures of a machine that predictors use (None: not measured)."""

    cores: int
    gflops_all: float | None = None  # fp32 GEMM, all threads
    gflops_1t: float | None = None  # fp32 GEMM, one thread
    int8_gops: float | None = None  # int8 GEMM, all threads
    mem_bw_gbs: float | None = None  # memory bandwidth, all threads
    memory_total_bytes: int | None = None
    memory_available_bytes: int | None = None
    gpu_count: int = 0
    gpu_fp32_tflops: float | None = None
    fingerprint: str | None = None  # the profile's fingerprint, or None for a peer's record

    @classmethod
    def from_profile(
        cls, profile: HardwareProfile, *, available_bytes: int | None = None
    ) -> HardwareFeatures:
        summary = profile.summary()
        gpus = summary["gpus"]
        return cls(
            cores=profile.static.physical_cores,
            gflops_all=summary["peak_gflops"],
            gflops_1t=summary["gflops_1t"],
            int8_gops=summary["int8_gops"],
            mem_bw_gbs=summary["mem_bw_gbs"],
            memory_total_bytes=profile.static.memory_total_bytes,
            memory_available_bytes=available_bytes,
            gpu_count=len(gpus),
            gpu_fp32_tflops=max((g["fp32_tflops"] or 0.0 for g in gpus), default=None) or None,
            fingerprint=profile.fingerprint,
        )

    @classmethod
    def from_summary(cls, hw: HardwareSummary) -> HardwareFeatures:
        """From a peer's verified capability record (its claimed, bounded figures)."""
        return cls(
            cores=hw.cores,
            gflops_all=hw.peak_gflops,
            gflops_1t=hw.gflops_1t,
            int8_gops=hw.int8_gops,
            mem_bw_gbs=hw.mem_bw_gbs,
            memory_total_bytes=int(hw.mem_total_gb * 1e9),
            memory_available_bytes=int(hw.mem_free_gb * 1e9),
            gpu_count=len(hw.gpus),
            gpu_fp32_tflops=max((g.fp32_tflops or 0.0 for g in hw.gpus), default=None) or None,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> HardwareFeatures:
        if not isinstance(data, dict):
            raise ValueError("hardware: expected an object")
        cores = data.get("cores")
        if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
            raise ValueError("hardware: cores must be an integer >= 1")
        gpus = data.get("gpu_count", 0)
        if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0:
            raise ValueError("hardware: gpu_count must be an integer >= 0")
        total, available = data.get("memory_total_bytes"), data.get("memory_available_bytes")
        fingerprint = data.get("fingerprint")
        return cls(
            cores=cores,
            gflops_all=_opt(data.get("gflops_all"), "gflops_all"),
            gflops_1t=_opt(data.get("gflops_1t"), "gflops_1t"),
            int8_gops=_opt(data.get("int8_gops"), "int8_gops"),
            mem_bw_gbs=_opt(data.get("mem_bw_gbs"), "mem_bw_gbs"),
            memory_total_bytes=None if total is None else int(_finite(total, "memory_total_bytes")),
            memory_available_bytes=None
            if available is None
            else int(_finite(available, "memory_available_bytes")),
            gpu_count=gpus,
            gpu_fp32_tflops=_opt(data.get("gpu_fp32_tflops"), "gpu_fp32_tflops"),
            fingerprint=fingerprint if isinstance(fingerprint, str) else None,
        )


@dataclass(frozen=True)
class Sample:
    """One measurement as a training example."""

    workload: Workload
    hardware: HardwareFeatures
    latency_ms: float  # median of the point's runs
    throughput: float  # items per second
    peak_rss_bytes: int | None
    op_times: Mapping[str, float] | None = None  # ORT profiler: operator type -> mean ms per run
    source: str = "bench"
    id: int = 0

    @classmethod
    def from_row(cls, row: MeasurementRow) -> Sample | None:
        """The sample a stored measurement makes, or None when it lacks the features to learn from
        (rows recorded before the predictor existed, or with malformed features)."""
        if row.features is None or row.hardware is None or not row.latency_ms > 0:
            return None
        try:
            workload = Workload.from_dict(row.features)
            hardware = HardwareFeatures.from_dict(row.hardware)
        except ValueError:
            return None
        op_times = None
        if isinstance(row.op_times, dict):
            op_times = {str(k): float(v) for k, v in row.op_times.items() if isinstance(v, int | float)}
        return cls(
            workload,
            hardware,
            row.latency_ms,
            row.throughput,
            row.peak_rss_bytes,
            op_times,
            row.source,
            row.id,
        )


@dataclass(frozen=True)
class Quantiles:
    """The 5th, 50th and 95th percentiles of a predicted quantity (never crossing)."""

    p5: float
    p50: float
    p95: float

    def __post_init__(self) -> None:
        if not self.p5 <= self.p50 <= self.p95:
            raise ValueError(f"quantiles cross: {self.p5} / {self.p50} / {self.p95}; use Quantiles.of")

    @classmethod
    def of(cls, a: float, b: float, c: float) -> Quantiles:
        """Three estimates sorted into quantiles (a quantile regressor's outputs can cross)."""
        low, mid, high = sorted((a, b, c))
        return cls(low, mid, high)

    def to_dict(self) -> dict[str, float]:
        return {"p5": self.p5, "p50": self.p50, "p95": self.p95}


@dataclass(frozen=True)
class Prediction:
    """How a workload would run on a machine, and who said so."""

    latency_ms: Quantiles
    throughput: Quantiles  # items per second
    peak_memory_bytes: Quantiles
    predictor: str  # xgboost | kernel | roofline
    version: int | None  # the stored predictor version; None for the roofline baseline
    trained_on: int  # measurements the predictor learnt from
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms.to_dict(),
            "throughput": self.throughput.to_dict(),
            "peak_memory_bytes": self.peak_memory_bytes.to_dict(),
            "predictor": self.predictor,
            "version": self.version,
            "trained_on": self.trained_on,
            "notes": list(self.notes),
        }


class Estimator(Protocol):
    """A fitted predictor. Each kind's module has ``fit(samples) -> Estimator`` and
    ``from_dict(data) -> Estimator``; ``to_dict`` is JSON (exports and the store; never pickle)."""

    kind: str
    trained_on: int

    def predict(self, workload: Workload, hardware: HardwareFeatures) -> Prediction: ...
    def to_dict(self) -> dict[str, Any]: ...


class Predictor(Protocol):
    """The node's prediction service as other subsystems use it (accel_node.predict.service)."""

    def predict_workload(self, workload: Workload, hardware: HardwareFeatures) -> Prediction:
        """The best available estimator's answer (roofline when nothing is trained): cheap, sync."""
        ...

    def local_hardware(self) -> HardwareFeatures | None:
        """This node's hardware features (None until it is profiled)."""
        ...


def samples_from_rows(rows: Iterable[MeasurementRow]) -> list[Sample]:
    """The usable samples among stored rows."""
    return [sample for sample in map(Sample.from_row, rows) if sample is not None]
