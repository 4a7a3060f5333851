"""Content benchmarks: UnixFS CID computation vs sha256, and fetching content from a peer.

Run from the repository root with the project's virtual environment::

    python -m scripts.bench.content                 # both parts, human-readable tables
    python -m scripts.bench.content --only cid      # or --only fetch
    python -m scripts.bench.content --json          # the tables, then one JSON document on the last line

Part 1, ``cid`` (issue 4): on ``--mib`` MiB (200 by default) of deterministic pseudo-random bytes
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

Part 2, ``fetch`` (issues 4 and 6): the same bytes are imported into an on-disk
:class:`~p2p.content.BlockStore` (real 256 KiB raw leaves plus the dag-pb nodes). A second process
(this benchmark with ``--serve``, :mod:`scripts.bench.content_serve`) opens that store and serves it
on 127.0.0.1 from one libp2p host
(Noise + yamux) running :mod:`p2p.bulk` (``blocks/1`` and a ``sink`` purpose) and
:mod:`p2p.bitswap`, from a second host running py-libp2p 0.8.1's own Bitswap
(``libp2p.bitswap.BitswapClient`` over the same store) and from a bare TCP socket. This process
fetches, each run, interleaved:

- ``raw_tcp``: the same bytes over a plain TCP socket (blocking ``recv_into`` one reused, already
  mapped buffer, in a worker thread; the server sends them from memory): the copy limit of loopback;
- ``sha256``: ``hashlib.sha256`` over the bytes: the hashing limit. ``limit`` = min of the two;
- ``bulk_store``: every block of the DAG through :class:`~p2p.bulk.BlockFetcher` (plain channel,
  each block verified against its CID, hashing overlapped with receiving) and written to a fresh
  receiving BlockStore as the node does it (``fsync=False``, ``put(verified=True)`` since the
  fetcher hashed the block, one ``sync()`` at the end). Target >= 0.5x the limit;
- ``bulk_store_fsync``: the same into a store opened with ``fsync=True`` (a file and a directory
  ``fsync`` per block, re-verified on put: how the node stored blocks before);
- ``bulk_memory``: the same fetch and verification, blocks kept in memory (no store);
- ``store_put``: ``BlockStore.put`` of the same blocks from memory into a fresh store (no network),
  ``store_put_nofsync`` the same with ``fsync=False``: what the store costs on its own;
- ``chan_plain`` / ``chan_encrypted``: the bytes sent as 1 MiB frames over a bulk channel to the
  server's ``sink`` handler (plain; AES-256-GCM), until the server acknowledges the total;
- ``nacl_chacha`` / ``aesgcm`` / ``ossl_chacha``: one core sealing the bytes in 1 MiB messages
  with PyNaCl's ChaCha20-Poly1305 (IETF), and with ``cryptography``'s AES-256-GCM and
  ChaCha20-Poly1305. Issue 6's target: ``chan_encrypted`` >= 0.5x ``nacl_chacha``;
- ``bitswap_ours`` (``--bitswap-mib``, 32 MiB by default, since it is slow): the first blocks over
  :mod:`p2p.bitswap` (yamux), verified; ``bitswap_pylibp2p``: the same blocks through py-libp2p's
  own Bitswap (``BitswapSession.get_blocks_batch``, verified by py-libp2p). Rates compare in MiB/s;
  the target is ``bulk_store`` >= 3x ``bitswap_pylibp2p``.

The fetch part also prints each row's CPU time per MiB in this process and in the serving process
(psutil), which moves much less with machine load than the wall time does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2p.content import CID, compute_cid, import_file
from scripts.bench.content_fetch import bench_fetch
from scripts.bench.content_serve import serve
from scripts.bench.harness import MIB
from scripts.bench.report import rates_vs_baseline

TARGET_RATIO = 0.8


def make_data(size: int) -> bytes:
    return b"".join(
        hashlib.shake_256(b"bench" + i.to_bytes(8, "big")).digest(min(MIB, size - i * MIB))
        for i in range((size + MIB - 1) // MIB)
    )


def bench_cid(data: bytes, mib: int, runs: int) -> dict[str, Any] | None:
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
        return None
    base = statistics.median(times["sha256"])
    print(f"CID computation: {mib} MiB, {runs} runs each (interleaved), root {roots['cid_memory']}")
    results = rates_vs_baseline(mib, times, mib / base, "sha256")
    for row in results.values():
        row["ratio_vs_sha256"] = row.pop("ratio")
    ratio = results["cid_memory"]["ratio_vs_sha256"]
    ok = ratio >= TARGET_RATIO
    verdict = "ok" if ok else "BELOW TARGET"
    print(f"cid_memory / sha256 speed ratio {ratio:.3f} (target >= {TARGET_RATIO}): {verdict}")
    return {
        "root": str(roots["cid_memory"]),
        "target_ratio": TARGET_RATIO,
        "ratio": ratio,
        "meets_target": ok,
        "methods": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=200, help="data size in MiB (default 200)")
    parser.add_argument("--runs", type=int, default=5, help="runs per method (default 5, at least 3)")
    parser.add_argument("--only", choices=("cid", "fetch"), help="run one part only")
    parser.add_argument(
        "--bitswap-mib", type=int, default=32, help="MiB fetched by the Bitswap rows (default 32)"
    )
    parser.add_argument(
        "--pylibp2p-timeout", type=float, default=120.0, help="timeout of py-libp2p's Bitswap per run (s)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON document on the last line")
    parser.add_argument("--serve", metavar="STORE_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    runs = max(args.runs, 3)
    data = make_data(args.mib * MIB)
    load_start = os.getloadavg()[0]
    doc: dict[str, Any] = {
        "benchmark": "content",
        "mib": args.mib,
        "runs": runs,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    ok = True
    if args.only in (None, "cid"):
        cid = bench_cid(data, args.mib, runs)
        if cid is None:
            return 1
        doc["cid"] = cid
        ok = ok and cid["meets_target"]
    if args.only in (None, "fetch"):
        doc["fetch"] = bench_fetch(data, args.mib, runs, args.bitswap_mib, args.pylibp2p_timeout)
    doc["loadavg_1m"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    print(f"load average (1 min) at start / end: {doc['loadavg_1m'][0]} / {doc['loadavg_1m'][1]}")
    if args.json:
        print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
