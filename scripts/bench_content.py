#!/usr/bin/env python
"""Content benchmarks: UnixFS CID computation vs sha256, and fetching content from a peer.

Run from the repository root with the project's virtual environment::

    python scripts/bench_content.py                 # both parts, human-readable tables
    python scripts/bench_content.py --only cid      # or --only fetch
    python scripts/bench_content.py --json          # the tables, then one JSON document on the last line

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
(this script with ``--serve``) opens that store and serves it on 127.0.0.1 from one libp2p host
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
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from p2p.content import CID, BlockStore, compute_cid, import_file  # noqa: E402

MIB = 1024 * 1024
TARGET_RATIO = 0.8
FETCH_TARGET_VS_LIMIT = 0.5
FETCH_TARGET_VS_PYLIBP2P = 3.0
ENCRYPTED_TARGET_VS_NACL = 0.5
FRAME = MIB
SINK = "sink"


def make_data(size: int) -> bytes:
    return b"".join(
        hashlib.shake_256(b"bench" + i.to_bytes(8, "big")).digest(min(MIB, size - i * MIB))
        for i in range((size + MIB - 1) // MIB)
    )


def print_table(mib: float, times: dict[str, list[float]], base: float, base_name: str) -> dict[str, Any]:
    results = {}
    print(f"{'method':<18} {'median s':>9} {'min s':>8} {'MiB/s':>8} {'ratio':>6}   (ratio: vs {base_name})")
    for name, samples in times.items():
        if not samples:
            continue
        median = statistics.median(samples)
        size = mib[name] if isinstance(mib, dict) else mib
        results[name] = {
            "mib": size,
            "median_s": round(median, 4),
            "min_s": round(min(samples), 4),
            "samples_s": [round(s, 4) for s in samples],
            "mib_per_s": round(size / median, 1),
            "ratio": round((size / median) / base, 3),
        }
        row = results[name]
        print(f"{name:<18} {median:>9.4f} {min(samples):>8.4f} {row['mib_per_s']:>8.1f} {row['ratio']:>6.3f}")
    return results


# -- part 1: CID computation ----------------------------------------------------------------------


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
    results = print_table(mib, times, mib / base, "sha256")
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


# -- part 2: the serving process ------------------------------------------------------------------


def serve(store_dir: str) -> None:
    """``--serve``: serve the store over bulk, our Bitswap, py-libp2p's Bitswap and raw TCP."""
    import trio
    from libp2p.bitswap.block_store import BlockStore as PyBlockStore
    from libp2p.bitswap.cid import cid_to_bytes
    from libp2p.bitswap.client import BitswapClient
    from multiaddr import Multiaddr

    from p2p.bitswap.service import BitswapService
    from p2p.bulk import BulkService, Channel, serve_blocks
    from p2p.content import BlockNotFoundError
    from p2p.host import HostSettings, build_host, run_host
    from p2p.identity import generate_identity

    store = BlockStore(store_dir, max_bytes=1 << 40, fsync=False)
    raw_bytes = Path(store_dir, "data.bin").read_bytes()
    loopback = [Multiaddr("/ip4/127.0.0.1/tcp/0")]

    def get_block(raw: bytes) -> bytes | None:
        try:
            return store.get(CID.decode(raw))
        except BlockNotFoundError:
            return None

    class StoreAdapter(PyBlockStore):  # py-libp2p's Bitswap reads the same on-disk store
        async def get_block(self, cid: Any) -> bytes | None:
            return await trio.to_thread.run_sync(get_block, cid_to_bytes(cid))

        async def put_block(self, cid: Any, data: bytes) -> None:
            raise RuntimeError("read-only")

        async def has_block(self, cid: Any) -> bool:
            return store.has(CID.decode(cid_to_bytes(cid)))

        async def delete_block(self, cid: Any) -> None:
            raise RuntimeError("read-only")

        def get_all_cids(self) -> list[bytes]:
            return [c.encode() for c in store.cids()]

    async def sink(channel: Channel, peer_id: Any) -> None:
        total = 0
        async for frame in channel:
            total += len(frame.payload)
        await channel.send(total.to_bytes(8, "big"))

    async def raw_client(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(memoryview(raw_bytes))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            host = build_host(generate_identity(), HostSettings(listen_addrs=loopback))
            addrs = await nursery.start(run_host, host, loopback)
            bulk = BulkService(host)
            await nursery.start(bulk.run)
            serve_blocks(bulk, get_block)
            bulk.set_handler(SINK, sink, require_encryption=False)
            await nursery.start(BitswapService(host, get_block).run)

            py_host = build_host(generate_identity(), HostSettings(listen_addrs=loopback))
            py_addrs = await nursery.start(run_host, py_host, loopback)
            py_bitswap = BitswapClient(py_host, block_store=StoreAdapter())
            py_bitswap.set_nursery(nursery)
            await py_bitswap.start()

            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            nursery.start_soon(trio.serve_listeners, raw_client, listeners)
            info = {
                "peer_id": host.get_id().to_base58(),
                "addr": str(addrs[0]),
                "py_peer_id": py_host.get_id().to_base58(),
                "py_addr": str(py_addrs[0]),
                "raw_port": listeners[0].socket.getsockname()[1],
            }
            print(json.dumps(info), flush=True)
            await trio.sleep_forever()

    trio.run(main)


# -- part 2: the fetching side --------------------------------------------------------------------


def raw_tcp_receive(port: int, buffer: bytearray) -> None:
    """Receive ``len(buffer)`` bytes into ``buffer`` (allocated and touched once, outside the timing:
    first-touch page faults of a fresh 200 MiB buffer would otherwise cost more than the copy)."""
    view = memoryview(buffer)
    size = len(buffer)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        got = 0
        while got < size:
            n = sock.recv_into(view[got:])
            if not n:
                raise RuntimeError(f"raw TCP: got {got} of {size} bytes")
            got += n


def seal_all(data: bytes, chunks: list[bytes], kind: str) -> None:
    """Seal ``data`` in 1 MiB messages on this core (``chunks``: the same as bytes, for PyNaCl)."""
    import nacl.bindings
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    key = bytes(range(32))
    if kind == "nacl_chacha":
        for i, chunk in enumerate(chunks):
            nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(chunk, None, i.to_bytes(12, "big"), key)
        return
    aead = AESGCM(key) if kind == "aesgcm" else ChaCha20Poly1305(key)
    view = memoryview(data)
    for i, pos in enumerate(range(0, len(data), FRAME)):
        aead.encrypt(i.to_bytes(12, "big"), view[pos : pos + FRAME], None)


def bench_fetch(data: bytes, mib: int, runs: int, bitswap_mib: int, py_timeout_s: float) -> dict[str, Any]:
    import trio

    tmp = Path(tempfile.mkdtemp(prefix="bench-content-"))
    try:
        source = tmp / "source"
        order: list[tuple[CID, int]] = []
        store = BlockStore(source, max_bytes=1 << 40, fsync=False)

        def put(cid: CID, block: bytes) -> None:
            store.put(cid, block)
            order.append((cid, len(block)))

        start = time.perf_counter()
        (source / "data.bin").write_bytes(data)
        result = import_file(source / "data.bin", put)
        cids = [cid for cid, _ in order]
        dag_bytes = sum(size for _, size in order)
        print(
            f"\nFetch: {mib} MiB file -> {len(cids)} blocks ({dag_bytes / MIB:.1f} MiB), root {result.root}; "
            f"source store written in {time.perf_counter() - start:.1f} s"
        )
        server = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(source)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = server.stdout.readline() if server.stdout else ""
            if not line:
                raise RuntimeError("the serving process did not start")
            info = json.loads(line)
            info["pid"] = server.pid
            return trio.run(_fetch_runs, data, cids, dag_bytes, info, runs, bitswap_mib, py_timeout_s, tmp)
        finally:
            server.terminate()
            server.wait(10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _fetch_runs(
    data: bytes,
    cids: list[CID],
    dag_bytes: int,
    info: dict[str, Any],
    runs: int,
    bitswap_mib: int,
    py_timeout_s: float,
    tmp: Path,
) -> dict[str, Any]:
    import psutil
    import trio
    from libp2p.bitswap.block_store import MemoryBlockStore
    from libp2p.bitswap.client import BitswapClient
    from libp2p.peer.id import ID
    from multiaddr import Multiaddr

    from p2p.bitswap.service import BitswapService
    from p2p.bulk import BlockFetcher, BulkService
    from p2p.host import HostSettings, build_host, dial, run_host
    from p2p.identity import generate_identity

    loopback = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
    server_id = ID.from_base58(info["peer_id"])
    py_server_id = ID.from_base58(info["py_peer_id"])
    size_mib = len(data) / MIB
    dag_mib = dag_bytes / MIB
    few = [c for c in cids if c.codec == 0x55][: max(1, bitswap_mib * 4)]
    few_mib = len(few) / 4
    sizes: dict[str, float] = {}
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}
    notes: list[str] = []
    blocks_in_memory: dict[CID, bytes] = {}

    async with trio.open_nursery() as nursery:
        host = build_host(generate_identity(), HostSettings(listen_addrs=loopback))
        await nursery.start(run_host, host, loopback)
        bulk = BulkService(host)
        await nursery.start(bulk.run)
        fetcher = BlockFetcher(bulk)
        await nursery.start(fetcher.run)
        ours = BitswapService(host, lambda raw: None)
        await nursery.start(ours.run)
        await dial(host, server_id, Multiaddr(info["addr"]), timeout_s=10)

        py_host = build_host(generate_identity(), HostSettings(listen_addrs=loopback))
        await nursery.start(run_host, py_host, loopback)
        py_bitswap = BitswapClient(py_host)
        py_bitswap.set_nursery(nursery)
        await py_bitswap.start()
        await dial(py_host, py_server_id, Multiaddr(info["py_addr"]), timeout_s=10)

        me, peer = psutil.Process(), psutil.Process(info["pid"])

        def cpu_s(process: psutil.Process) -> float:
            used = process.cpu_times()
            return float(used.user + used.system)

        async def timed(name: str, mib: float, fn: Callable[[], Awaitable[None]]) -> None:
            sizes[name] = mib
            mine, theirs = cpu_s(me), cpu_s(peer)
            start = time.perf_counter()
            await fn()
            times.setdefault(name, []).append(time.perf_counter() - start)
            cpu.setdefault(name, []).append((cpu_s(me) - mine, cpu_s(peer) - theirs))

        raw_buffer = bytearray(len(data))
        raw_buffer[:] = data  # touch every page once

        async def raw_tcp() -> None:
            await trio.to_thread.run_sync(raw_tcp_receive, info["raw_port"], raw_buffer)

        async def sha256() -> None:
            hashlib.sha256(data).digest()

        async def bulk_fetch(into: BlockStore | None) -> None:
            got = 0
            pending: list[tuple[CID, bytes]] = []

            def put_all(batch: list[tuple[CID, bytes]]) -> None:
                assert into is not None
                for cid, block in batch:
                    into.put(cid, block, verified=True)  # the fetcher hashed it on arrival (as the node)

            async for cid, block in fetcher.fetch(cids, [server_id]):
                got += 1
                if into is None:
                    blocks_in_memory[cid] = block
                    continue
                pending.append((cid, block))
                if len(pending) >= 8:
                    batch, pending = pending, []
                    await trio.to_thread.run_sync(put_all, batch)
            if pending:
                await trio.to_thread.run_sync(put_all, pending)
            if into is not None:
                await trio.to_thread.run_sync(into.sync)  # the node flushes once before installing
            if got != len(cids):
                raise RuntimeError(f"bulk fetch got {got} of {len(cids)} blocks")

        def fresh_store(name: str, fsync: bool = True) -> BlockStore:
            path = tmp / name
            shutil.rmtree(path, ignore_errors=True)
            return BlockStore(path, max_bytes=1 << 40, fsync=fsync)

        def bulk_store(fsync: bool) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                store = await trio.to_thread.run_sync(fresh_store, "received", fsync)
                await bulk_fetch(store)

            return run

        async def bulk_memory() -> None:
            blocks_in_memory.clear()
            await bulk_fetch(None)

        def put_from_memory(fsync: bool) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                store = fresh_store("put", fsync)

                def put_all() -> None:
                    for cid in cids:
                        store.put(cid, blocks_in_memory[cid])

                await trio.to_thread.run_sync(put_all)

            return run

        def channel(encrypted: bool) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                view = memoryview(data)
                async with bulk.open(server_id, SINK, encrypted=encrypted) as ch:
                    for pos in range(0, len(data), FRAME):
                        await ch.send(view[pos : pos + FRAME])
                    await ch.send_eof()
                    total = int.from_bytes((await ch.receive()).payload, "big")
                if total != len(data):
                    raise RuntimeError(f"sink received {total} of {len(data)} bytes")

            return run

        chunks = [data[pos : pos + FRAME] for pos in range(0, len(data), FRAME)]

        def seal(kind: str) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                seal_all(data, chunks, kind)

            return run

        async def bitswap_ours() -> None:
            got = 0
            async for _cid, _block in ours.fetch(few, [server_id], timeout_s=30):
                got += 1
            if got != len(few):
                raise RuntimeError(f"our bitswap got {got} of {len(few)}")

        async def bitswap_pylibp2p() -> None:
            py_bitswap.block_store = MemoryBlockStore()  # nothing cached from the previous run
            session = py_bitswap.new_session()
            found = await session.get_blocks_batch(
                [c.encode() for c in few], peer_id=py_server_id, timeout=py_timeout_s
            )
            if len(found) != len(few):
                raise RuntimeError(f"py-libp2p bitswap got {len(found)} of {len(few)}")
            for cid in few:
                if not cid.matches(found[cid.encode()]):
                    raise RuntimeError("py-libp2p bitswap returned a wrong block")

        plan: list[tuple[str, float, Callable[[], Awaitable[None]]]] = [
            ("raw_tcp", size_mib, raw_tcp),
            ("sha256", size_mib, sha256),
            ("bulk_store", dag_mib, bulk_store(False)),  # the node's path: one flush at the end
            ("bulk_store_fsync", dag_mib, bulk_store(True)),  # every block flushed (old behaviour)
            ("bulk_memory", dag_mib, bulk_memory),
            ("store_put", dag_mib, put_from_memory(True)),
            ("store_put_nofsync", dag_mib, put_from_memory(False)),
            ("chan_plain", size_mib, channel(False)),
            ("chan_encrypted", size_mib, channel(True)),
            ("nacl_chacha", size_mib, seal("nacl_chacha")),
            ("aesgcm", size_mib, seal("aesgcm")),
            ("ossl_chacha", size_mib, seal("ossl_chacha")),
            ("bitswap_ours", few_mib, bitswap_ours),
            ("bitswap_pylibp2p", few_mib, bitswap_pylibp2p),
        ]
        failed: set[str] = set()
        await bulk_memory()  # warm-up (connections, allocator, page cache of the source store)
        for run_index in range(runs):
            for name, mib, fn in plan:
                if name in failed:
                    continue
                try:
                    await timed(name, mib, fn)
                except Exception as exc:  # report and go on with the rest
                    failed.add(name)
                    notes.append(f"{name} failed in run {run_index + 1}: {exc!r}")
                    print(f"  {name} failed: {exc!r}", file=sys.stderr)
        nursery.cancel_scope.cancel()

    def rate(name: str) -> float:
        return sizes[name] / statistics.median(times[name]) if times.get(name) else float("nan")

    limit_name = "raw_tcp" if rate("raw_tcp") < rate("sha256") else "sha256"
    limit = rate(limit_name)
    print(f"{runs} runs each (interleaved); bitswap rows fetch the first {len(few)} leaves ({few_mib:g} MiB)")
    results = print_table(sizes, times, limit, f"limit = {limit_name}")  # type: ignore[arg-type]
    ratios = {
        "bulk_store_vs_limit": rate("bulk_store") / limit,
        "bulk_memory_vs_limit": rate("bulk_memory") / limit,
        "bulk_store_vs_pylibp2p_bitswap": rate("bulk_store") / rate("bitswap_pylibp2p"),
        "bulk_store_vs_our_bitswap": rate("bulk_store") / rate("bitswap_ours"),
        "chan_encrypted_vs_nacl_chacha": rate("chan_encrypted") / rate("nacl_chacha"),
        "chan_encrypted_vs_raw_tcp": rate("chan_encrypted") / rate("raw_tcp"),
        "bulk_store_fsync_vs_limit": rate("bulk_store_fsync") / limit,
        "store_put_vs_bulk_memory": rate("store_put") / rate("bulk_memory"),
    }
    targets = {
        "bulk_store_vs_limit": FETCH_TARGET_VS_LIMIT,
        "bulk_store_vs_pylibp2p_bitswap": FETCH_TARGET_VS_PYLIBP2P,
        "chan_encrypted_vs_nacl_chacha": ENCRYPTED_TARGET_VS_NACL,
    }
    for name, value in ratios.items():
        target = targets.get(name)
        verdict = (
            ""
            if target is None
            else (f" (target >= {target}): " + ("ok" if value >= target else "BELOW TARGET"))
        )
        print(f"{name:<32} {value:8.3f}{verdict}")
    print("CPU time per MiB, median, in ms: this process / the serving process (wall time includes waiting)")
    for name, samples in cpu.items():
        mine = statistics.median(c for c, _ in samples) / sizes[name] * 1000
        theirs = statistics.median(t for _, t in samples) / sizes[name] * 1000
        results[name]["cpu_ms_per_mib"] = [round(mine, 2), round(theirs, 2)]
        print(f"  {name:<18} {mine:7.2f} / {theirs:7.2f}")
    for note in notes:
        print(f"note: {note}")
    return {
        "blocks": len(cids),
        "dag_mib": round(dag_mib, 2),
        "bitswap_blocks": len(few),
        "limit": limit_name,
        "limit_mib_per_s": round(limit, 1),
        "methods": results,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "targets": targets,
        "meets_targets": all(ratios[k] >= t for k, t in targets.items()),
        "notes": notes,
    }


def main() -> int:
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
    args = parser.parse_args()
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
