"""Worker process for numpy GEMM timing: ``python -m accel_node.profile.worker '<json spec>'``.

It exists because numpy's BLAS sizes its thread pool once, when the library loads, from
``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS``; without threadpoolctl (not a
dependency) the only portable way to time a given thread count is a fresh process started with
those variables set. The parent (:mod:`accel_node.profile.blas`) sets them; this module times
``a @ b`` and prints one JSON object on stdout. Only numpy and stdlib-level modules are used here.
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from accel_node.profile import power, stats

# Thread-count getters of the BLAS builds numpy wheels ship (scipy-openblas, with and without the
# 64-bit-integer suffix), of a system OpenBLAS and of MKL.
_THREAD_GETTERS = (
    "scipy_openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "openblas_get_num_threads",
    "MKL_Get_Max_Threads",
)


def blas_threads() -> int | None:
    """The thread count the loaded BLAS library reports, where it can be asked (Linux, OpenBLAS/MKL).

    Confirms that the environment variables took effect, which is the whole point of the worker.
    """
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    libraries = {
        line.split()[-1] for line in maps.splitlines() if "blas" in line.lower() or "mkl" in line.lower()
    }
    for library in sorted(libraries):
        try:
            handle = ctypes.CDLL(library)
        except OSError:
            continue
        for symbol in _THREAD_GETTERS:
            getter = getattr(handle, symbol, None)
            if getter is not None:
                getter.restype = ctypes.c_int
                return int(getter())
    return None


def gemm(spec: dict[str, Any]) -> dict[str, Any]:
    n = int(spec["n"])
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    meter = None
    power_reason = "not requested"
    if spec.get("power"):
        domains, power_reason = power.package_domains()
        meter = power.RaplMeter(domains) if domains else None
    timing = stats.time_calls(
        lambda: np.matmul(a, b, out=c),
        repeats=int(spec["repeats"]),
        min_sample_s=float(spec["min_sample_s"]),
        hook=meter,
    )
    expected = a[:4].astype(np.float64) @ b.astype(np.float64)
    max_rel_err = float(np.max(np.abs(c[:4] - expected)) / np.max(np.abs(expected)))
    return {
        "seconds_per_call": timing.seconds_per_call,
        "calls_per_sample": timing.calls_per_sample,
        "watts": meter.watts if meter is not None else None,
        "power_reason": power_reason,
        "max_rel_err": max_rel_err,
        "blas_threads": blas_threads(),
    }


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    if spec.get("task") != "gemm":
        print(f"unknown task {spec.get('task')!r}", file=sys.stderr)
        return 2
    print(json.dumps(gemm(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
