#!/usr/bin/env python
"""Benchmark UnixFS CID computation against plain sha256 over the same bytes.

Run from the repository root with the project's virtual environment::

    python scripts/bench_content.py            # human-readable table
    python scripts/bench_content.py --json     # the table, then one JSON document on the last line

What it measures, on ``--mib`` MiB (200 by default) of deterministic pseudo-random bytes
(SHAKE-256), in the same process and run, each ``--runs`` times (5 by default) in interleaved
order so that drift in machine load hits every method alike; the medians are reported:

- ``sha256``: ``hashlib.sha256(data).digest()`` over the whole buffer: the floor, since the
  importer must hash every byte once (it hashes each 256 KiB leaf separately);
- ``cid_memory``: ``compute_cid(data)``: the Kubo-compatible root CID of the in-memory buffer
  (``ipfs add --only-hash --cid-version=1 --raw-leaves``);
- ``cid_memory_2t``: the same with ``threads=2`` (two leaves hashed at once; hashlib releases the
  GIL), which only helps when a second core is free;
- ``cid_file``: ``compute_cid(path)``: the same from a file (in the page cache after the first run),
  reading into one reused buffer, so this includes the copy out of the page cache;
- ``import_file``: ``import_file(path, put)`` with a ``put`` that drops the blocks: the full
  streaming importer as used when storing (a new ``bytes`` object per leaf).

The ratio is sha256's median time over the method's (1.0 = as fast as sha256). The target is
``cid_memory`` >= 0.8.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from p2p.content import CID, compute_cid, import_file  # noqa: E402

MIB = 1024 * 1024
TARGET_RATIO = 0.8


def make_data(size: int) -> bytes:
    return b"".join(
        hashlib.shake_256(b"bench" + i.to_bytes(8, "big")).digest(min(MIB, size - i * MIB))
        for i in range((size + MIB - 1) // MIB)
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=200, help="data size in MiB (default 200)")
    parser.add_argument("--runs", type=int, default=5, help="runs per method (default 5, at least 3)")
    parser.add_argument("--json", action="store_true", help="print a JSON document on the last line")
    args = parser.parse_args()
    runs = max(args.runs, 3)
    size = args.mib * MIB
    data = make_data(size)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.bin"
        path.write_bytes(data)
        roots: dict[str, CID] = {}

        def root_of(name: str, fn: Callable[[], CID]) -> Callable[[], None]:
            def run() -> None:
                roots[name] = fn()

            return run

        def sha256() -> None:
            hashlib.sha256(data).digest()

        methods: dict[str, Callable[[], None]] = {
            "sha256": sha256,
            "cid_memory": root_of("cid_memory", lambda: compute_cid(data)),
            "cid_memory_2t": root_of("cid_memory_2t", lambda: compute_cid(data, threads=2)),
            "cid_file": root_of("cid_file", lambda: compute_cid(path)),
            "import_file": root_of("import_file", lambda: import_file(path, lambda cid, block: None).root),
        }
        times: dict[str, list[float]] = {name: [] for name in methods}
        for fn in methods.values():  # warm-up: page cache, allocator, imports
            fn()
        for _ in range(runs):
            for name, fn in methods.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)

    if len(set(roots.values())) != 1:
        print(f"root CIDs differ between methods: {roots}", file=sys.stderr)
        return 1
    base = statistics.median(times["sha256"])
    results = {}
    print(f"{args.mib} MiB, {runs} runs each (interleaved), root {roots['cid_memory']}")
    print(f"{'method':<14} {'median s':>9} {'min s':>8} {'MiB/s':>8} {'ratio':>6}")
    for name, samples in times.items():
        median = statistics.median(samples)
        results[name] = {
            "median_s": round(median, 4),
            "min_s": round(min(samples), 4),
            "samples_s": [round(s, 4) for s in samples],
            "mib_per_s": round(args.mib / median, 1),
            "ratio_vs_sha256": round(base / median, 3),
        }
        row = results[name]
        mib_s, ratio_s = row["mib_per_s"], row["ratio_vs_sha256"]
        print(f"{name:<14} {median:>9.4f} {min(samples):>8.4f} {mib_s:>8.1f} {ratio_s:>6.3f}")
    ratio = results["cid_memory"]["ratio_vs_sha256"]
    ok = ratio >= TARGET_RATIO
    verdict = "ok" if ok else "BELOW TARGET"
    print(f"cid_memory / sha256 speed ratio {ratio:.3f} (target >= {TARGET_RATIO}): {verdict}")
    if args.json:
        doc = {
            "benchmark": "content_cid",
            "mib": args.mib,
            "runs": runs,
            "root": str(roots["cid_memory"]),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "target_ratio": TARGET_RATIO,
            "ratio": ratio,
            "meets_target": ok,
            "methods": results,
        }
        print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
