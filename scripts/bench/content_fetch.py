"""The content benchmark's fetch part: the same bytes from a peer process over a bare socket, bulk
channels (into a store, into memory, plain and encrypted) and two Bitswaps, against the copy and
hashing limits and single-core AEAD sealing; CPU per MiB on both sides (see :mod:`scripts.bench.content`)."""

from __future__ import annotations

import hashlib
import json
import os
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

from p2p.content import CID, BlockStore, import_file
from scripts.bench.content_serve import SINK
from scripts.bench.cpu import own_cpu_s
from scripts.bench.harness import MIB, REPO_ROOT
from scripts.bench.report import rates_vs_baseline, verdict

FETCH_TARGET_VS_LIMIT = 0.5
FETCH_TARGET_VS_PYLIBP2P = 3.0
ENCRYPTED_TARGET_VS_NACL = 0.5
FRAME = MIB


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
            [sys.executable, "-m", "scripts.bench.content", "--serve", str(source)],
            cwd=REPO_ROOT,
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
        fetcher = BlockFetcher(bulk)  # owns no tasks: each fetch is an async with block
        ours = BitswapService(host, lambda raw: None)
        await nursery.start(ours.run)
        await dial(host, server_id, Multiaddr(info["addr"]), timeout_s=10)

        py_host = build_host(generate_identity(), HostSettings(listen_addrs=loopback))
        await nursery.start(run_host, py_host, loopback)
        py_bitswap = BitswapClient(py_host)
        py_bitswap.set_nursery(nursery)
        await py_bitswap.start()
        await dial(py_host, py_server_id, Multiaddr(info["py_addr"]), timeout_s=10)

        me, peer = os.getpid(), int(info["pid"])
        cpu_s = own_cpu_s

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

            async with fetcher.fetch(cids, [server_id]) as blocks:
                async for cid, block in blocks:
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
    results = rates_vs_baseline(sizes, times, limit, f"limit = {limit_name}")
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
        print(f"{name:<32} {value:8.3f}{verdict(value, targets.get(name))}")
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
