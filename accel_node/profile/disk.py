"""Sequential read throughput of the disk that holds a directory (the node home: models load from it).

A file is written and fsync'ed, then before each timed read its pages are dropped from the page
cache with ``posix_fadvise(POSIX_FADV_DONTNEED)``: a file just written sits in RAM, and reading it
back without eviction measures memory copies (~10 GB/s), not the disk (~1 GB/s). Whether eviction
really happened is checked with ``mincore(2)`` and reported in ``method``; on a RAM-backed file
system (tmpfs) nothing can be evicted and the figure is, honestly, RAM speed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from accel_node.profile import stats
from accel_node.profile.model import Measurement

CHUNK = 4 * 2**20
NAME = "disk_read"
UNIT = "MB/s"


def _write_file(path: Path, size: int) -> None:
    """``size`` bytes of incompressible data (a random block whose first bytes vary per chunk)."""
    block = bytearray(np.random.default_rng().integers(0, 256, CHUNK, dtype=np.uint8).tobytes())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for i in range(size // CHUNK):
            block[:8] = i.to_bytes(8, "little")
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)


def _evict(fd: int) -> bool:
    if not hasattr(os, "posix_fadvise"):
        return False
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    return True


def resident_fraction(fd: int, size: int) -> float | None:
    """Fraction of the file's pages in the page cache (``mincore``), None where it cannot be asked."""
    name = ctypes.util.find_library("c")
    if name is None or not hasattr(mmap, "PROT_READ"):
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        return None
    try:
        pages = -(-size // mmap.PAGESIZE)
        vec = ctypes.create_string_buffer(pages)
        if libc.mincore(addr, size, vec) != 0:
            return None
        return sum(b & 1 for b in vec.raw) / pages
    finally:
        libc.munmap(addr, size)


def _read_all(fd: int, buffer: memoryview) -> int:
    total = 0
    while n := os.readv(fd, [buffer]):
        total += n
    return total


def disk_read(directory: Path, *, size: int, repeats: int) -> Measurement:
    """Read throughput (MB/s, 1e6 bytes) of a ``size``-byte file in ``directory``, read ``repeats`` times."""
    size = max(CHUNK, size // CHUNK * CHUNK)
    method = (
        f"write+fsync a {size / 2**20:.0f} MiB file in {directory}, then read it {repeats}x with os.readv "
        "into one 4 MiB buffer (no warm-up: every read is meant to be cold)"
    )
    try:
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        return Measurement.unavailable(NAME, UNIT, method, 1, f"cannot use {directory}: {exc}")
    if free < 2 * size:
        return Measurement.unavailable(
            NAME, UNIT, method, 1, f"only {free / 2**20:.0f} MiB free in {directory}"
        )
    samples: list[float] = []
    residency: list[float] = []
    evicted = False
    try:
        with tempfile.TemporaryDirectory(prefix=".accel-profile-", dir=directory) as tmp:
            path = Path(tmp) / "read-probe.bin"
            _write_file(path, size)
            buffer = memoryview(bytearray(CHUNK))
            for _ in range(repeats):
                fd = os.open(path, os.O_RDONLY)
                try:
                    evicted = _evict(fd)
                    fraction = resident_fraction(fd, size)
                    if fraction is not None:
                        residency.append(fraction)
                    start = time.perf_counter()
                    read = _read_all(fd, buffer)
                    elapsed = time.perf_counter() - start
                finally:
                    os.close(fd)
                if read != size:
                    return Measurement.unavailable(NAME, UNIT, method, 1, f"read {read} of {size} bytes back")
                samples.append(size / elapsed / 1e6)
    except OSError as exc:
        return Measurement.unavailable(NAME, UNIT, method, 1, f"{type(exc).__name__}: {exc}")
    if not evicted:
        method += "; no page-cache eviction (posix_fadvise unavailable): may measure RAM, not disk"
    else:
        method += "; page cache evicted before each read with posix_fadvise(DONTNEED)"
        if residency:
            method += f" (max {max(residency):.0%} of pages still cached after eviction, per mincore)"
            if max(residency) > 0.5:
                method += "; eviction did not take effect (RAM-backed file system?): this is page-cache speed"
    return (
        Measurement.from_samples(NAME, UNIT, method, 1, samples)
        if stats.all_finite_positive(samples)
        else (Measurement.unavailable(NAME, UNIT, method, 1, "read timings were not positive"))
    )
