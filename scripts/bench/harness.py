"""What every benchmark's driver shares: daemons and child processes, logging, the description of
the source and machine a result was measured on, ``KEY=VALUE`` daemon settings and threads.

Daemons come from :mod:`tests.support.daemons`, the harness the multi-node tests use, so a
benchmark's daemon is started, awaited and stopped exactly like a test's.
"""

from __future__ import annotations

import io
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tests.support.daemons import (
    LOOPBACK_ENV,
    REPO_ROOT,
    Cluster,
    Daemon,
    Process,
    node_env,
    process_env,
    wait_all_ready,
)

__all__ = [
    "LOOPBACK_ENV",
    "MIB",
    "REPO_ROOT",
    "Cluster",
    "Daemon",
    "Process",
    "env_pairs",
    "in_threads",
    "log",
    "log_timed",
    "machine_info",
    "node_env",
    "npz",
    "process_env",
    "source_revision",
    "unnpz",
    "wait_all_ready",
]

MIB = 1024 * 1024
STARTED = time.perf_counter()


def log(msg: str, *, elapsed: bool = False) -> None:
    """Progress on stderr (stdout carries the results); ``elapsed`` prefixes the seconds so far."""
    prefix = f"[bench {time.perf_counter() - STARTED:6.1f} s]" if elapsed else "[bench]"
    print(f"{prefix} {msg}", file=sys.stderr, flush=True)


def log_timed(msg: str) -> None:
    """:func:`log` with the seconds since the benchmark started (long benchmarks)."""
    log(msg, elapsed=True)


def source_revision() -> str:
    """The git commit of the benchmarked tree, ``+dirty`` with uncommitted changes to tracked files."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{rev}+dirty" if dirty else rev


def machine_info(**extra: Any) -> dict[str, Any]:
    """CPUs, Python, platform and the 1-minute load average at the start (``extra`` added)."""
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **extra,
        "loadavg_1m_at_start": os.getloadavg()[0],
    }


def env_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (``--daemon-env``) as a mapping."""
    return dict(kv.split("=", 1) for kv in pairs)


def in_threads(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run blocking calls concurrently (one thread each); their results, or the first error raised."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            results[i] = call()
        except BaseException as exc:  # report it in the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def npz(**arrays: np.ndarray[Any, Any]) -> bytes:
    """Arrays as an ``.npz`` request body."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def unnpz(raw: bytes) -> dict[str, np.ndarray[Any, Any]]:
    with np.load(io.BytesIO(raw), allow_pickle=False) as found:
        return {k: found[k] for k in found.files}
