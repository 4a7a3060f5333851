"""Main-memory bandwidth, STREAM-style: copy and triad over arrays far larger than the caches.

- copy: ``np.copyto(b, a)``; counted as 2 x array bytes (read a, write b). numpy hands a
  contiguous copy to the C library's memmove, whose algorithm depends on the size: measured on a
  2-CPU EPYC VM with glibc 2.36, copies of <= 128 MiB ran at ~17 GB/s and of >= 256 MiB at
  ~27 GB/s (non-temporal stores), with ctypes.memmove showing the same step. So the copy figure
  depends on the per-thread chunk size, which ``method`` states; both modes use the same sizes.
- triad: ``a = b + s*c`` without temporaries, as two numpy passes: ``np.multiply(c, s, out=a)``
  then ``np.add(a, b, out=a)``. That moves 5 x array bytes (pass 1 reads c and writes a, pass 2
  reads a and b and writes a), and that is what is counted -- not STREAM's 3 x, which assumes a
  fused loop numpy does not have. Write-allocate traffic is not counted (STREAM's convention).
- Multi-threaded: the arrays are split into one contiguous chunk per thread and each chunk is
  processed by a ``ThreadPoolExecutor`` worker; numpy releases the GIL inside these ufuncs, so the
  threads really run in parallel.

Figures are in GB/s with GB = 1e9 bytes. Arrays are float64 and filled before timing (by the
threads that will stream them) so that page faults are not timed.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from accel_node.profile import stats
from accel_node.profile.errors import ProfileError
from accel_node.profile.model import CacheInfo, Measurement, Scope

TRIAD_SCALAR = 3.0
_ALIGN = 2**16


def last_level_cache_bytes(caches: tuple[CacheInfo, ...]) -> int:
    """Total bytes of the highest cache level across the machine (all its instances)."""
    data = [c for c in caches if c.type in ("Unified", "Data")]
    if not data:
        return 0
    top = max(c.level for c in data)
    return sum(c.size_bytes * c.instances for c in data if c.level == top)


def array_size(caches: tuple[CacheInfo, ...], *, min_bytes: int, available_bytes: int) -> tuple[int, str]:
    """Bytes per array: at least 4x the last-level cache and ``min_bytes``, at most 1/8 of free memory.

    Returns the size and a note for the ``method`` text (which says when the memory cap won).
    """
    llc = last_level_cache_bytes(caches)
    wanted = max(min_bytes, 4 * llc)
    cap = available_bytes // 8  # triad holds three arrays: stay well clear of memory pressure
    size = max(_ALIGN, min(wanted, cap) // _ALIGN * _ALIGN)
    note = (
        f"{size / 2**20:.0f} MiB per array ({size / llc:.1f}x LLC of {llc / 2**20:.0f} MiB)"
        if llc
        else (f"{size / 2**20:.0f} MiB per array (LLC size unknown)")
    )
    if wanted > cap:
        note += ", capped to 1/8 of available memory"
    return size, note


def _chunks(n: int, parts: int) -> list[slice]:
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]


Array = npt.NDArray[np.float64]


def _copy(a: Array, b: Array, c: Array, part: slice) -> None:
    np.copyto(b[part], a[part])


def _triad(a: Array, b: Array, c: Array, part: slice) -> None:
    np.multiply(c[part], TRIAD_SCALAR, out=a[part])
    np.add(a[part], b[part], out=a[part])


Kernel = Callable[[Array, Array, Array, slice], None]
KERNELS: dict[str, tuple[Kernel, int]] = {
    "copy": (_copy, 2),  # kernel, array-sized transfers per call
    "triad": (_triad, 5),
}


def memory_bandwidth(
    *, scope: Scope, threads: int, array_bytes: int, size_note: str, repeats: int, min_sample_s: float
) -> list[Measurement]:
    """``mem_copy_{1t,all}`` and ``mem_triad_{1t,all}`` at the given thread count."""
    n = array_bytes // 8
    a, b, c = np.empty(n), np.empty(n), np.empty(n)
    parts = _chunks(n, threads)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="profile-mem") if threads > 1 else None
    out: list[Measurement] = []
    try:
        _fill(a, b, c, parts=parts, pool=pool)
        for label, (kernel, transfers) in KERNELS.items():
            call = _runner(kernel, a, b, c, parts=parts, pool=pool)
            chunk_mib = array_bytes / threads / 2**20
            how = (
                "single thread"
                if pool is None
                else f"{threads} ThreadPoolExecutor workers, one contiguous {chunk_mib:.0f} MiB chunk each"
            )
            timing = stats.time_calls(call, repeats=repeats, min_sample_s=min_sample_s)
            samples = [r / 1e9 for r in stats.rates(float(transfers * array_bytes), timing)]
            method = f"numpy float64 {label}: {_DESCRIPTION[label]}; {size_note}; {how}; " + (
                f"{timing.calls_per_sample} calls per sample"
            )
            out.append(Measurement.from_samples(f"mem_{label}_{scope}", "GB/s", method, threads, samples))
    finally:
        if pool is not None:
            pool.shutdown()
    _check(a, b)
    return out


_DESCRIPTION = {
    "copy": "np.copyto(b, a), counted 2x array bytes",
    "triad": f"np.multiply(c, {TRIAD_SCALAR}, out=a); np.add(a, b, out=a), counted 5x array bytes",
}


def _fill(a: Array, b: Array, c: Array, *, parts: list[slice], pool: ThreadPoolExecutor | None) -> None:
    """First touch by the threads that will use each chunk, so that on a NUMA machine the pages
    of a chunk tend to land on the memory node of the thread that streams it."""

    def fill(part: slice) -> None:
        a[part], b[part], c[part] = 1.0, 2.0, 0.5

    if pool is None:
        fill(slice(None))
    else:
        list(pool.map(fill, parts))


def _runner(
    kernel: Kernel, a: Array, b: Array, c: Array, *, parts: list[slice], pool: ThreadPoolExecutor | None
) -> Callable[[], None]:
    if pool is None:
        return lambda: kernel(a, b, c, slice(None))

    def call() -> None:
        for future in [pool.submit(kernel, a, b, c, part) for part in parts]:
            future.result()

    return call


def _check(a: Array, b: Array) -> None:
    """After copy (b = a = 1) and triad (a = b + s*c), every element is known; a chunking bug shows."""
    if not (np.all(b == 1.0) and np.all(a == 1.0 + TRIAD_SCALAR * 0.5)):
        raise ProfileError("memory bandwidth kernels did not compute what they claim")
