"""GPU facts and figures through torch (CUDA) and NVML, both optional.

torch and pynvml are imported lazily with :func:`importlib.import_module`: the profiler must import
and run on machines without them, and going through importlib keeps the modules typed as ``Any``
whether or not they (and their stubs) are installed, so ``mypy --strict`` gives the same answer
everywhere. Without torch or without a CUDA device every GPU figure comes back unavailable, with
the reason.

Timing uses CUDA events recorded on the current stream around ``calls`` back-to-back launches, so
host-side launch overhead overlaps with device work and the figure is device throughput.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable
from typing import Any

from accel_node.profile import stats
from accel_node.profile.model import GpuInfo, Measurement

MATMUL_DTYPES = ("fp32", "fp16", "bf16")


def load_torch_cuda() -> tuple[Any | None, str]:
    """``(torch, "")`` when torch imports and sees a CUDA device, else ``(None, reason)``."""
    try:
        torch = importlib.import_module("torch")
    except ImportError as exc:
        return None, f"torch is not installed ({exc})"
    except OSError as exc:  # a torch wheel whose CUDA libraries cannot be loaded
        return None, f"torch failed to import: {exc}"
    if not torch.cuda.is_available():
        return None, f"torch {torch.__version__} sees no CUDA device"
    return torch, ""


def collect_gpus() -> tuple[tuple[GpuInfo, ...], str | None]:
    """The CUDA devices and the torch version (None when torch is not importable)."""
    try:
        torch = importlib.import_module("torch")
    except (ImportError, OSError):
        return (), None
    if not torch.cuda.is_available():
        return (), str(torch.__version__)
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            GpuInfo(
                index=index,
                name=str(props.name),
                memory_bytes=int(props.total_memory),
                compute_capability=f"{props.major}.{props.minor}",
                multiprocessors=int(props.multi_processor_count),
            )
        )
    return tuple(gpus), str(torch.__version__)


def _event_time(torch: Any, fn: Callable[[], object], calls: int) -> float:
    """Seconds per call of ``fn`` over ``calls`` launches, timed with CUDA events."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end)) / 1e3 / calls


class _NvmlEnergy:
    """Board energy counter of one GPU through NVML (Volta and newer), as a per-sample watt meter."""

    def __init__(self, nvml: Any, handle: Any) -> None:
        self.nvml = nvml
        self.handle = handle
        self.watts: list[float] = []
        self._start_mj = 0

    def read_mj(self) -> int:
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def begin(self) -> None:
        self._start_mj = self.read_mj()

    def end(self, seconds: float) -> None:
        self.watts.append((self.read_mj() - self._start_mj) / 1e3 / seconds)


def _nvml_meter(torch: Any, index: int) -> tuple[_NvmlEnergy | None, str]:
    """An energy meter for CUDA device ``index``, matched to its NVML handle by PCI bus id.

    CUDA and NVML may number devices differently (``CUDA_VISIBLE_DEVICES``, ordering), so the
    handle is looked up by PCI address, not by index.
    """
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError as exc:
        return None, f"pynvml is not installed ({exc})"
    try:
        nvml.nvmlInit()
        props = torch.cuda.get_device_properties(index)
        bus_id = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
        meter = _NvmlEnergy(nvml, nvml.nvmlDeviceGetHandleByPciBusId(bus_id))
        meter.read_mj()
    except Exception as exc:  # NVMLError and attribute errors on old torch/driver combinations
        return None, f"NVML energy counter not readable: {type(exc).__name__}: {exc}"
    return meter, ""


def _timed(
    torch: Any,
    fn: Callable[[], object],
    *,
    repeats: int,
    min_sample_s: float,
    hook: stats.SampleHook | None = None,
) -> list[float]:
    fn()  # warm-up: cuBLAS handle, kernel selection, allocator
    torch.cuda.synchronize()
    calls = max(1, math.ceil(min_sample_s / max(_event_time(torch, fn, 1), 1e-7)))
    seconds = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        if hook is not None:
            hook.begin()
        host_start = time.perf_counter()
        per_call = _event_time(torch, fn, calls)
        if hook is not None:  # the energy counter is read on the host: divide by host wall time
            hook.end(time.perf_counter() - host_start)
        seconds.append(per_call)
    return seconds


def _copy_bandwidth(torch: Any, copy_bytes: int, *, repeats: int, min_sample_s: float) -> list[float]:
    src = torch.empty(copy_bytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    seconds = _timed(torch, lambda: dst.copy_(src), repeats=repeats, min_sample_s=min_sample_s)
    return [2 * copy_bytes / s / 1e9 for s in seconds]


def _matmul_tflops(
    torch: Any, dtype: Any, n: int, *, repeats: int, min_sample_s: float, hook: stats.SampleHook | None
) -> list[float]:
    a = torch.randn(n, n, device="cuda").to(dtype)
    b = torch.randn(n, n, device="cuda").to(dtype)
    out = torch.empty_like(a)
    seconds = _timed(
        torch, lambda: torch.matmul(a, b, out=out), repeats=repeats, min_sample_s=min_sample_s, hook=hook
    )
    return [2 * n**3 / s / 1e12 for s in seconds]


def _names(prefix: str) -> list[tuple[str, str]]:
    return [
        (prefix + "d2d_copy", "GB/s"),
        *[(f"{prefix}matmul_{d}", "TFLOP/s") for d in MATMUL_DTYPES],
        (prefix + "power", "W"),
    ]


def _device_measurements(
    torch: Any, index: int, *, matmul_n: int, copy_bytes: int, repeats: int, min_sample_s: float
) -> list[Measurement]:
    prefix = f"gpu{index}_"
    out: list[Measurement] = []
    copy_method = (
        f"torch {copy_bytes / 2**20:.0f} MiB device-to-device Tensor.copy_, counted as 2x bytes "
        "(read + write), CUDA-event timed"
    )
    out.append(
        Measurement.from_samples(
            prefix + "d2d_copy",
            "GB/s",
            copy_method,
            0,
            _copy_bandwidth(torch, copy_bytes, repeats=repeats, min_sample_s=min_sample_s),
        )
    )
    meter, power_reason = _nvml_meter(torch, index)
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    matmul_backend = torch.backends.cuda.matmul
    previous_tf32 = matmul_backend.allow_tf32
    matmul_backend.allow_tf32 = False  # "fp32" means IEEE fp32, not TF32 tensor cores
    try:
        for label in MATMUL_DTYPES:
            name = f"{prefix}matmul_{label}"
            method = (
                f"torch.matmul {matmul_n}x{matmul_n} {label} into a preallocated output (TF32 off), "
                "2n^3 flop per call, CUDA-event timed"
            )
            if label == "bf16" and not torch.cuda.is_bf16_supported():
                out.append(Measurement.unavailable(name, "TFLOP/s", method, 0, "device has no bf16 support"))
                continue
            hook = meter if label == "fp16" else None
            tflops = _matmul_tflops(
                torch, dtypes[label], matmul_n, hook=hook, repeats=repeats, min_sample_s=min_sample_s
            )
            out.append(Measurement.from_samples(name, "TFLOP/s", method, 0, tflops))
    finally:
        matmul_backend.allow_tf32 = previous_tf32
    power_method = f"NVML board energy counter around each timed sample of {prefix}matmul_fp16"
    if meter is not None:
        meter.nvml.nvmlShutdown()
    if meter is not None and meter.watts:
        out.append(Measurement.from_samples(prefix + "power", "W", power_method, 0, meter.watts))
    else:
        reason = power_reason or "no samples"
        out.append(Measurement.unavailable(prefix + "power", "W", power_method, 0, reason))
    return out


def gpu_measurements(
    *, matmul_n: int, copy_bytes: int, repeats: int, min_sample_s: float
) -> list[Measurement]:
    """Copy bandwidth, matmul throughput per dtype and board power of every CUDA device.

    Without torch or CUDA: one unavailable ``gpu_*`` entry per figure, carrying the reason. A
    device that fails mid-measurement (out of memory because a model is loaded, a driver error)
    gets unavailable ``gpu{i}_*`` entries with the error instead of failing the whole profile.
    """
    torch, reason = load_torch_cuda()
    if torch is None:
        return [Measurement.unavailable(n, u, "torch CUDA measurement", 0, reason) for n, u in _names("gpu_")]
    out: list[Measurement] = []
    for index in range(torch.cuda.device_count()):
        try:
            with torch.cuda.device(index):
                out += _device_measurements(
                    torch,
                    index,
                    matmul_n=matmul_n,
                    copy_bytes=copy_bytes,
                    repeats=repeats,
                    min_sample_s=min_sample_s,
                )
        except Exception as exc:  # torch raises RuntimeError subclasses (OutOfMemoryError, CUDA errors)
            error = f"{type(exc).__name__}: {exc}"
            out += [
                Measurement.unavailable(n, u, "torch CUDA measurement", 0, error)
                for n, u in _names(f"gpu{index}_")
            ]
        finally:
            torch.cuda.empty_cache()
    return out
