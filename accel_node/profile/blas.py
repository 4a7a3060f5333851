"""numpy fp32 GEMM throughput at a chosen BLAS thread count, timed in a worker process.

See :mod:`accel_node.profile.worker` for why a process: the BLAS thread count can only be set
before the library loads. The same mechanism is used for the all-threads figure, so that the
daemon's own environment (e.g. an inherited ``OMP_NUM_THREADS=1``) cannot change it. CPU package
power (RAPL) is sampled inside the worker around each timed sample of the all-threads run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from accel_node.profile.errors import ProfileError
from accel_node.profile.model import Measurement, Scope

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory that holds accel_node/


def run_worker(spec: dict[str, object], *, threads: int, timeout_s: float) -> dict[str, object]:
    """Run the GEMM worker with every BLAS thread variable set to ``threads``; its JSON reply."""
    env = dict(os.environ)
    env.update({var: str(threads) for var in THREAD_VARS})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "accel_node.profile.worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ProfileError(f"GEMM worker did not finish within {timeout_s:.0f} s") from exc
    if result.returncode != 0:
        raise ProfileError(f"GEMM worker failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
    try:
        reply: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise ProfileError(f"GEMM worker printed no JSON: {result.stdout[-500:]!r}") from exc
    return reply


def _floats(reply: dict[str, object], key: str) -> list[float]:
    values = reply.get(key)
    if not isinstance(values, list) or not all(isinstance(v, float | int) for v in values):
        raise ProfileError(f"GEMM worker reply has no list of numbers under {key!r}")
    return [float(v) for v in values]


def numpy_gemm(
    n: int,
    *,
    scope: Scope,
    threads: int,
    repeats: int,
    min_sample_s: float,
    blas: str,
    measure_power: bool = False,
) -> list[Measurement]:
    """``numpy_gemm_fp32_{1t,all}`` in GFLOP/s, plus ``cpu_package_power`` when ``measure_power``."""
    spec = {"task": "gemm", "n": n, "repeats": repeats, "min_sample_s": min_sample_s, "power": measure_power}
    reply = run_worker(spec, threads=threads, timeout_s=120 + 10 * repeats * max(min_sample_s, 1.0))
    seconds = _floats(reply, "seconds_per_call")
    error = reply.get("max_rel_err")
    if not isinstance(error, float) or error > 1e-3:
        raise ProfileError(f"numpy GEMM result is wrong (relative error {error})")
    reported = reply.get("blas_threads")
    method = (
        f"numpy {np.__version__} ({blas}) float32 np.matmul {n}x{n} @ {n}x{n} into a preallocated output, "
        f"in a worker process started with {'/'.join(THREAD_VARS)}={threads} "
        f"(BLAS reports {reported if isinstance(reported, int) else 'unknown'} threads); "
        f"2n^3 flop per call; {reply['calls_per_sample']} calls per sample"
    )
    name = f"numpy_gemm_fp32_{scope}"
    if isinstance(reported, int) and reported != threads:
        if scope == "1t":
            reason = f"BLAS ignored the thread setting: asked for 1 thread, it runs {reported}"
            return [Measurement.unavailable(name, "GFLOP/s", method, threads, reason)]
        threads = reported  # e.g. an OpenBLAS built with a lower thread cap than this machine's CPUs
    out = [
        Measurement.from_samples(name, "GFLOP/s", method, threads, [2.0 * n**3 / s / 1e9 for s in seconds])
    ]
    if measure_power:
        power_method = (
            "RAPL package energy_uj (summed over packages, wrap-corrected) "
            f"around each timed sample of {name}"
        )
        if reply.get("watts"):
            watts = _floats(reply, "watts")
            out.append(Measurement.from_samples("cpu_package_power", "W", power_method, threads, watts))
        else:
            reason = str(reply.get("power_reason") or "no samples")
            out.append(Measurement.unavailable("cpu_package_power", "W", power_method, threads, reason))
    return out
