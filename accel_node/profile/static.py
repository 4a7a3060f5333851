"""Static facts: what the machine is, read from the OS and the installed libraries (nothing timed)."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import numpy as np
import psutil

from accel_node.profile import gpu
from accel_node.profile.model import CacheInfo, StaticFacts
from accel_node.profile.ort_gemm import load_onnxruntime

# ISA features that matter for ML kernels. /proc/cpuinfo lists a hundred flags, most of which
# (security mitigations, virtualisation) do not change a figure; keeping only these makes the
# fingerprint stable across kernel updates that add unrelated flags.
_ISA_PATTERN = re.compile(
    r"^(sse\d?(_\d)?|ssse3|sse4a|fma4?|f16c|avx.*|amx.*|.*vnni.*|.*bf16.*|"
    r"neon|asimd.*|sve.*|sme(\d.*|[bfi].*)?|fphp|i8mm|.*dotprod.*|fp16)$"
)

_SIZE_SUFFIX = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor block of /proc/cpuinfo as key -> value (empty when not on Linux)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _cpu_model(info: dict[str, str]) -> str:
    for key in ("model name", "Model Name", "Processor", "cpu model", "Hardware"):
        if info.get(key):
            return info[key]
    if "CPU implementer" in info:  # ARM without a model name: name it by implementer/part codes
        return f"ARM implementer {info['CPU implementer']} part {info.get('CPU part', '?')}"
    return platform.processor() or platform.machine() or "unknown"


def isa_flags(info: dict[str, str]) -> tuple[str, ...]:
    """ML-relevant ISA features from the ``flags`` (x86) or ``Features`` (ARM) line, sorted."""
    words = (info.get("flags") or info.get("Features") or "").split()
    return tuple(sorted({w for w in words if _ISA_PATTERN.match(w)}))


def _parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)B?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"cache size {text!r}")
    return int(match.group(1)) * _SIZE_SUFFIX[match.group(2).upper()]


def collect_caches(root: Path = Path("/sys/devices/system/cpu")) -> tuple[CacheInfo, ...]:
    """Cache levels from sysfs, with the number of distinct instances of each across all CPUs.

    The instance count matters for memory-bandwidth sizing: a many-core CPU has one L3 per core
    complex, and arrays must exceed the sum of them all, not just cpu0's share.
    """
    seen: dict[tuple[int, str, int], set[str]] = {}
    for index in sorted(root.glob("cpu[0-9]*/cache/index[0-9]*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = _parse_size((index / "size").read_text())
            shared = (
                (index / "shared_cpu_list").read_text().strip()
                if (index / "shared_cpu_list").exists()
                else ""
            )
        except (OSError, ValueError):
            continue
        seen.setdefault((level, kind, size), set()).add(shared or index.parent.parent.name)
    return tuple(
        CacheInfo(level=level, type=kind, size_bytes=size, instances=len(owners))
        for (level, kind, size), owners in sorted(seen.items())
    )


def _blas_name() -> str:
    """The BLAS numpy was built against (e.g. ``scipy-openblas 0.3.29``), as numpy reports it."""
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name', 'unknown')} {blas.get('version', '')}".strip()
    except Exception:  # numpy's config layout is not a stable API
        return "unknown"


def usable_cpus() -> int:
    """CPUs this process may run on: the affinity mask where the OS has one, else all of them."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def collect_static() -> StaticFacts:
    """Read the static facts of this machine (~10 ms without torch; importing torch adds ~1-2 s)."""
    info = _cpuinfo()
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    memory = psutil.virtual_memory()
    ort = load_onnxruntime()
    gpus, torch_version = gpu.collect_gpus()
    return StaticFacts(
        cpu_model=_cpu_model(info),
        machine=platform.machine(),
        physical_cores=physical,
        logical_cores=logical,
        usable_cpus=usable_cpus(),
        isa_flags=isa_flags(info),
        caches=collect_caches(),
        memory_total_bytes=int(memory.total),
        memory_available_bytes=int(memory.available),
        os=platform.platform(),
        python_version=platform.python_version(),
        gpus=gpus,
        ort_providers=tuple(ort.get_available_providers()),
        onnxruntime_version=str(ort.__version__),
        numpy_version=np.__version__,
        blas=_blas_name(),
        torch_version=torch_version,
    )
