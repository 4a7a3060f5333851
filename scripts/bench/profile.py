"""Check the hardware profiler against independent measurements written here, and its stability.

For each of ``--runs`` rounds (default 3) this runs one quick profile and, right after it, an
independent measurement of the same figures with the same sizes and thread counts:

- GEMM: a plain ``a @ b`` loop timed with ``time.perf_counter`` in a child process started with the
  BLAS thread variables set (1 thread, then all usable CPUs);
- memory copy: ``ctypes.memmove`` between two ``bytearray`` buffers (one thread), and the same over
  per-thread chunks with plain ``threading.Thread`` workers (ctypes releases the GIL), counted as
  2x bytes like the profiler's copy;
- disk read: the same file size evicted and read by GNU ``dd`` (``iflag=nocache count=0``, then
  ``bs=4M``), dd's own timing; plus, for information, an ``O_DIRECT`` read at queue depth 1.

It prints profiler/independent ratios (target 0.9-1.1) and the run-to-run CV of every profile
figure across the rounds (target <= 5%). Triad has no independent counterpart here: it needs
arithmetic, and any numpy formulation would be the profiler's code again.

On a shared machine other processes skew single figures badly (one busy neighbour halves an
all-threads GEMM on 2 CPUs). Every profile measurement records its ``background_load``; the same is
measured around each independent check, each round first waits (``--wait-quiet``) for a quiet
second, and ratios and CVs are computed over the rounds in which both sides ran with at most
``--max-load`` (default 10%) of the CPUs used by others. Every round is in the ``--json`` output.

Usage: python -m scripts.bench.profile [--runs 3] [--max-load 0.1] [--wait-quiet 30] [--json] [--disk-dir DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from accel_node.profile import HardwareProfile, collect_static, run_profile
from accel_node.profile.load import BackgroundLoad
from accel_node.profile.memory import array_size
from accel_node.profile.runner import SETTINGS
from scripts.bench.harness import REPO_ROOT
from scripts.bench.stats import cv

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
RATIO_TARGET = (0.9, 1.1)
CV_TARGET = 0.05
SAMPLES = 7


def _median_of_samples(run_once: Callable[[], float], samples: int = SAMPLES) -> float:
    run_once()  # warm-up
    return statistics.median(run_once() for _ in range(samples))


# --- independent GEMM (child process: the BLAS thread count is fixed when numpy loads) ------------


def gemm_child(n: int, min_s: float) -> None:
    rng = np.random.default_rng(42)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)

    def once() -> float:
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < min_s or calls == 0:
            a @ b
            calls += 1
        return 2 * n**3 * calls / elapsed / 1e9

    print(json.dumps({"gflops": _median_of_samples(once)}))


def independent_gemm(n: int, threads: int, min_s: float) -> float:
    env = {**os.environ, **{var: str(threads) for var in THREAD_VARS}}
    out = subprocess.run(
        [sys.executable, "-m", "scripts.bench.profile", "--gemm-child", str(n), str(min_s)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout)["gflops"])


# --- independent memory copy ----------------------------------------------------------------------


def independent_copy(size: int, threads: int) -> float:
    src = bytearray(b"\x5a") * size  # written, so no page is a shared zero page
    dst = bytearray(b"\x00") * size
    src_addr = ctypes.addressof((ctypes.c_char * size).from_buffer(src))
    dst_addr = ctypes.addressof((ctypes.c_char * size).from_buffer(dst))
    bounds = [size * i // threads for i in range(threads + 1)]

    def part(i: int) -> None:
        ctypes.memmove(dst_addr + bounds[i], src_addr + bounds[i], bounds[i + 1] - bounds[i])

    def once() -> float:
        start = time.perf_counter()
        for _ in range(4):
            if threads == 1:
                part(0)
            else:
                workers = [threading.Thread(target=part, args=(i,)) for i in range(threads)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
        return 4 * 2 * size / (time.perf_counter() - start) / 1e9

    result = _median_of_samples(once)
    assert dst[-1] == 0x5A
    return result


# --- independent disk read --------------------------------------------------------------------------


def _write_file(path: Path, size: int) -> None:
    chunk = 4 * 2**20
    block = os.urandom(chunk)
    with path.open("wb") as f:
        for _ in range(size // chunk):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def independent_disk_read(directory: Path, size: int) -> float | None:
    """MB/s of GNU dd reading a fresh file after ``dd iflag=nocache count=0`` dropped it from the cache.

    dd's own byte count and elapsed time are parsed from its report, so neither the read loop, nor
    the eviction call, nor the timing is the profiler's. None when dd is missing or says nothing.
    """
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = Path(tmp) / "dd.bin"
        _write_file(path, size)
        try:
            subprocess.run(["dd", f"if={path}", "iflag=nocache", "count=0"], capture_output=True, check=True)
            out = subprocess.run(
                ["dd", f"if={path}", "of=/dev/null", "bs=4M"], capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        match = re.search(r"^(\d+) bytes .* copied, ([\d.,]+) s", out.stderr, re.MULTILINE)
        if not match:
            return None
        return int(match.group(1)) / float(match.group(2).replace(",", ".")) / 1e6


def direct_io_read(directory: Path, size: int) -> float | None:
    """MB/s reading with O_DIRECT in 4 MiB synchronous reads (no readahead): the device at queue depth 1.

    Informational only: buffered reads get kernel readahead, so this is expected to be lower.
    """
    chunk = 4 * 2**20
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = Path(tmp) / "direct.bin"
        _write_file(path, size)
        buffer = mmap.mmap(-1, chunk)  # page-aligned, as O_DIRECT requires
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
        except OSError:
            return None
        try:
            start = time.perf_counter()
            total = 0
            while n := os.readv(fd, [buffer]):
                total += n
            elapsed = time.perf_counter() - start
        except OSError:
            return None
        finally:
            os.close(fd)
        return total / elapsed / 1e6


# --- comparison -------------------------------------------------------------------------------------


@dataclass
class Round:
    profile: HardwareProfile
    independent: dict[str, tuple[float, float]]  # name -> (value, background load during it)
    direct_io_mbs: float | None


def wait_quiet(max_load: float, timeout_s: float) -> float:
    """Wait (up to ``timeout_s``) for a 1-second window in which other processes use <= ``max_load``
    of the CPUs; on a shared machine this makes quiet rounds likelier. Returns the last load seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        load = BackgroundLoad()
        time.sleep(1.0)
        share = load.fraction() or 0.0
        if share <= max_load or time.monotonic() >= deadline:
            return share


def run_rounds(
    runs: int, disk_dir: Path, *, max_load: float, wait_s: float
) -> tuple[list[Round], dict[str, Any]]:
    static = collect_static()
    settings = SETTINGS["quick"]
    cpus = static.usable_cpus
    n = settings.gemm_n if cpus <= 8 else settings.gemm_n_many_cores
    mem_bytes, _ = array_size(
        static.caches, min_bytes=settings.mem_min_bytes, available_bytes=static.memory_available_bytes
    )
    checks: dict[str, Callable[[], float | None]] = {
        "numpy_gemm_fp32_1t": lambda: independent_gemm(n, 1, settings.min_sample_s),
        "numpy_gemm_fp32_all": lambda: independent_gemm(n, cpus, settings.min_sample_s),
        "mem_copy_1t": lambda: independent_copy(mem_bytes, 1),
        "mem_copy_all": lambda: independent_copy(mem_bytes, cpus),
        "disk_read": lambda: independent_disk_read(disk_dir, settings.disk_bytes),
    }
    rounds = []
    for _ in range(runs):
        wait_quiet(max_load, wait_s)
        profile = run_profile("quick", disk_dir=disk_dir)
        independent: dict[str, tuple[float, float]] = {}
        for name, measure in checks.items():
            wait_quiet(max_load, wait_s / 4)
            load = BackgroundLoad()
            value = measure()
            if value is not None:
                independent[name] = (value, load.fraction() or 0.0)
        rounds.append(Round(profile, independent, direct_io_read(disk_dir, settings.disk_bytes)))
    machine = {"cpu": static.cpu_model, "usable_cpus": cpus, "gemm_n": n, "mem_array_mib": mem_bytes / 2**20}
    return rounds, machine


def analyse(rounds: list[Round], max_load: float) -> dict[str, Any]:
    """Ratios and run-to-run CVs over the rounds in which neither side ran under background load."""
    figures: dict[str, Any] = {}
    for first in rounds[0].profile.measurements:
        taken = [r.profile.measurement(first.name) for r in rounds]
        if not all(m is not None and m.median is not None for m in taken):
            continue
        medians = [float(m.median) for m in taken if m is not None and m.median is not None]
        loads = [m.background_load or 0.0 for m in taken if m is not None]
        independent = [r.independent.get(first.name) for r in rounds]
        quiet = [
            i
            for i in range(len(rounds))
            if loads[i] <= max_load and (independent[i] is None or independent[i][1] <= max_load)  # type: ignore[index]
        ]
        row: dict[str, Any] = {
            "unit": first.unit,
            "profile_medians": medians,
            "profile_background_load": loads,
            "quiet_rounds": quiet,
            "within_run_cv": statistics.median(m.cv for m in taken if m is not None and m.cv is not None),
            "run_to_run_cv_all_rounds": cv(medians),
            "run_to_run_cv": cv([medians[i] for i in quiet]),
            "profile": statistics.median([medians[i] for i in quiet]) if quiet else None,
        }
        row["cv_pass"] = row["run_to_run_cv"] is not None and row["run_to_run_cv"] <= CV_TARGET
        if any(independent):
            row["independent_values"] = [x[0] if x else None for x in independent]
            row["independent_background_load"] = [x[1] if x else None for x in independent]
            quiet_independent = [independent[i][0] for i in quiet if independent[i] is not None]  # type: ignore[index]
            if quiet_independent and row["profile"] is not None:
                row["independent"] = statistics.median(quiet_independent)
                row["ratio"] = row["profile"] / row["independent"]
                row["ratio_pass"] = RATIO_TARGET[0] <= row["ratio"] <= RATIO_TARGET[1]
        figures[first.name] = row
    return figures


def bench(runs: int, disk_dir: Path, max_load: float, wait_s: float) -> dict[str, Any]:
    rounds, machine = run_rounds(runs, disk_dir, max_load=max_load, wait_s=wait_s)
    direct = [r.direct_io_mbs for r in rounds if r.direct_io_mbs is not None]
    return {
        "machine": machine,
        "runs": runs,
        "max_background_load": max_load,
        "quick_profile_seconds": [r.profile.duration_s for r in rounds],
        "targets": {"ratio": RATIO_TARGET, "run_to_run_cv_max": CV_TARGET},
        "figures": analyse(rounds, max_load),
        "disk_read_o_direct_qd1_mbs": statistics.median(direct) if direct else None,
        "load_average": os.getloadavg(),
        "logical_cpus": psutil.cpu_count(),
    }


def _fmt(value: float | None, spec: str, width: int) -> str:
    return format(value, spec) if value is not None else "-".rjust(width)


def print_table(result: dict[str, Any]) -> None:
    machine = result["machine"]
    print(
        f"{machine['cpu']}, {machine['usable_cpus']} CPUs; GEMM n={machine['gemm_n']}, "
        f"{machine['mem_array_mib']:.0f} MiB arrays; {result['runs']} quick profiles took "
        + ", ".join(f"{s:.1f}" for s in result["quick_profile_seconds"])
        + f" s; load average {', '.join(f'{x:.2f}' for x in result['load_average'])}"
    )
    header = (
        f"{'figure':20} {'unit':7} {'profile':>8} {'indep.':>8} {'ratio':>5} {'0.9-1.1':>7} "
        f"{'run CV':>6} {'<=5%':>4} {'quiet':>5} {'CV all':>6} {'in-run':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, row in result["figures"].items():
        ratio_ok = ("pass" if row["ratio_pass"] else "FAIL") if "ratio" in row else "-"
        cv_ok = ("pass" if row["cv_pass"] else "FAIL") if row["run_to_run_cv"] is not None else "-"
        print(
            f"{name:20} {row['unit']:7} {_fmt(row['profile'], '8.1f', 8)} "
            f"{_fmt(row.get('independent'), '8.1f', 8)} "
            f"{_fmt(row.get('ratio'), '5.2f', 5)} {ratio_ok:>7} {_fmt(row['run_to_run_cv'], '6.1%', 6)} "
            f"{cv_ok:>4} {len(row['quiet_rounds']):>2}/{result['runs']:<2} "
            f"{_fmt(row['run_to_run_cv_all_rounds'], '6.1%', 6)} {row['within_run_cv']:6.1%}"
        )
    direct = result["disk_read_o_direct_qd1_mbs"]
    if direct is not None:
        print(f"disk read, O_DIRECT 4 MiB synchronous reads (no readahead; informational): {direct:.0f} MB/s")
    print(
        f"profile, ratio and run CV use the 'quiet' rounds only: those in which other processes used at most "
        f"{result['max_background_load']:.0%} of the CPUs during the profile step and the independent check; "
        "'CV all' is over every round, 'in-run' is the median within-profile CV"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--max-load",
        type=float,
        default=0.1,
        help="drop rounds with more background CPU load than this (0-1)",
    )
    parser.add_argument(
        "--wait-quiet", type=float, default=30.0, help="seconds to wait for a quiet machine before each round"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--disk-dir", type=Path, default=None, help="directory for the disk probe (default: a temp dir)"
    )
    parser.add_argument("--gemm-child", nargs=2, metavar=("N", "MIN_S"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gemm_child:
        gemm_child(int(args.gemm_child[0]), float(args.gemm_child[1]))
        return
    with tempfile.TemporaryDirectory(prefix="bench-profile-", dir=args.disk_dir) as tmp:
        result = bench(args.runs, Path(tmp), args.max_load, args.wait_quiet)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
