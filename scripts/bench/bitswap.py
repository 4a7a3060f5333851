"""Bitswap under the amplification of issue 11 (finding 4), and Bitswap fetch throughput.

Run from the repository root with the project's virtual environment::

    python -m scripts.bench.bitswap            # both parts, human-readable lines
    python -m scripts.bench.bitswap --json     # the same, then one JSON document on the last line

Both parts run in this one process on two py-libp2p hosts on 127.0.0.1 (Noise + yamux), blocks in
memory, so that the same script measures any revision of ``p2p.bitswap`` that has
``BitswapService(host, get_block)`` (copy it into an export of the older tree to compare).

- ``flood``: a peer whose Bitswap handler never reads sends one want message (~45 KB) naming one
  256 KiB block 1024 times; the block is in an on-disk :class:`~p2p.content.BlockStore` read as
  the node reads it (each read a fresh copy). For ``--flood-s`` seconds (3 by default) the
  server's store reads (bytes read to answer), its ``bitswap.bytes_in_flight`` reservation
  (where the revision has one) and this process's RSS are sampled every 5 ms; the high-water
  marks are reported next to the figure of the answer materialised whole: 1024 x 256 KiB = 256 MiB.
- ``fetch``: ``--mib`` MiB (32 by default) of 256 KiB blocks fetched from the serving host with
  ``BitswapService.fetch`` in rounds of 64 wants (as the node's embedded backend asks), each block
  verified; ``--runs`` runs (3 by default), the median rate in MiB/s. Fetcher and server share
  this process's cores, so the rate is lower than between two processes; it is for comparing
  revisions on the same machine, not for quoting alone. The CPU time of this process (server and
  fetcher together) per MiB is reported too: it moves much less with machine load than the rate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import trio
from libp2p.abc import IHost, INetStream
from multiaddr import Multiaddr

from p2p.bitswap.protocol import PROTOCOLS, want_message
from p2p.bitswap.service import BitswapService
from p2p.content import BlockStore
from p2p.content.cid import CID, RAW
from p2p.host import HostSettings, build_host, dial, run_host
from p2p.identity import generate_identity
from scripts.bench.harness import MIB, log, machine_info, source_revision

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
BLOCK = 256 * 1024
DUPLICATES = 1024
FETCH_ROUND = 64
BYTES_IN_FLIGHT = "bitswap.bytes_in_flight"


def random_blocks(n: int) -> dict[bytes, bytes]:
    out = {}
    for _ in range(n):
        data = os.urandom(BLOCK)
        out[CID.compute(data, RAW, 1).encode()] = data
    return out


class CountingStore:
    """An on-disk block store read as the node reads it (a fresh ``bytes`` per read), counted."""

    def __init__(self, directory: Path, blocks: dict[bytes, bytes]) -> None:
        self.store = BlockStore(directory, max_bytes=1 << 30, fsync=False)
        for cid, data in blocks.items():
            self.store.put(CID.decode(cid), data)
        self.bytes_read = 0

    def __call__(self, cid: bytes) -> bytes | None:
        data = self.store.get(CID.decode(cid))
        self.bytes_read += len(data)
        return data


async def two_hosts(nursery: trio.Nursery) -> tuple[IHost, IHost]:
    server, client = (build_host(generate_identity(), HostSettings(listen_addrs=LOOPBACK)) for _ in range(2))
    addrs = await nursery.start(run_host, server, LOOPBACK)
    await nursery.start(run_host, client, LOOPBACK)
    await dial(client, server.get_id(), addrs[0], timeout_s=5)
    return server, client


async def bench_flood(seconds: float) -> dict[str, Any]:
    public = random_blocks(1)
    (cid_bytes,) = public
    tmp = tempfile.TemporaryDirectory(prefix="bench-bitswap-")
    store = CountingStore(Path(tmp.name), public)
    process = psutil.Process()
    async with trio.open_nursery() as nursery:
        server_host, attacker = await two_hosts(nursery)
        service = BitswapService(server_host, store)
        await nursery.start(service.run)

        async def never_read(stream: INetStream) -> None:
            await trio.sleep_forever()

        for protocol in PROTOCOLS:
            attacker.set_stream_handler(protocol, never_read)
        message = want_message([CID.decode(cid_bytes)] * DUPLICATES)
        resources = getattr(getattr(service, "server", None), "resources", None)
        rss0 = process.memory_info().rss
        stream = await attacker.new_stream(server_host.get_id(), list(PROTOCOLS))
        await stream.write(message)
        high = {"bytes_read": 0, "reserved": 0, "rss_delta": 0}
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            high["bytes_read"] = max(high["bytes_read"], store.bytes_read)
            high["rss_delta"] = max(high["rss_delta"], process.memory_info().rss - rss0)
            if resources is not None:
                high["reserved"] = max(high["reserved"], resources.used(BYTES_IN_FLIGHT))
            await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
    tmp.cleanup()
    old = DUPLICATES * BLOCK
    return {
        "message_bytes": len(message),
        "duplicates": DUPLICATES,
        "seconds": seconds,
        "bytes_read_high_mib": high["bytes_read"] / MIB,
        "reserved_high_mib": high["reserved"] / MIB if resources is not None else None,
        "rss_delta_high_mib": high["rss_delta"] / MIB,
        "materialised_whole_mib": old / MIB,
    }


async def bench_fetch(mib: int, runs: int) -> dict[str, Any]:
    blocks = random_blocks(max(1, mib * MIB // BLOCK))
    cids = [CID.decode(c) for c in blocks]
    rates, cpu = [], []
    process = psutil.Process()
    async with trio.open_nursery() as nursery:
        server_host, client_host = await two_hosts(nursery)
        server = BitswapService(server_host, blocks.get)
        client = BitswapService(client_host, lambda cid: None)
        await nursery.start(server.run)
        await nursery.start(client.run)
        for run in range(runs + 1):  # run 0 warms the streams up
            got = 0
            cpu0, t0 = sum(process.cpu_times()[:2]), time.perf_counter()
            for i in range(0, len(cids), FETCH_ROUND):
                async for _, data in client.fetch(cids[i : i + FETCH_ROUND], [server_host.get_id()]):
                    got += len(data)
            elapsed, cpu_s = time.perf_counter() - t0, sum(process.cpu_times()[:2]) - cpu0
            if got != len(blocks) * BLOCK:
                raise RuntimeError(f"fetched {got} bytes, expected {len(blocks) * BLOCK}")
            if run:
                rates.append(got / MIB / elapsed)
                cpu.append(cpu_s * 1e3 / (got / MIB))
                log(f"fetch run {run}: {rates[-1]:.1f} MiB/s, {cpu[-1]:.1f} CPU ms/MiB")
        nursery.cancel_scope.cancel()
    return {
        "mib": len(blocks) * BLOCK / MIB,
        "runs": runs,
        "mib_per_s": statistics.median(rates),
        "samples_mib_per_s": [round(r, 1) for r in rates],
        "cpu_ms_per_mib": statistics.median(cpu),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("flood", "fetch"), help="run one part only")
    parser.add_argument("--flood-s", type=float, default=3.0, help="seconds the flood is sampled (default 3)")
    parser.add_argument("--mib", type=int, default=32, help="MiB fetched per run (default 32)")
    parser.add_argument("--runs", type=int, default=3, help="fetch runs (default 3)")
    parser.add_argument("--json", action="store_true", help="print a JSON document on the last line")
    args = parser.parse_args(argv)
    doc: dict[str, Any] = {
        "benchmark": "bitswap",
        "source": source_revision(),
        "machine": machine_info(),
    }
    if args.only in (None, "flood"):
        flood = doc["flood"] = trio.run(bench_flood, args.flood_s)
        reserved = flood["reserved_high_mib"]
        print(
            f"flood: {flood['message_bytes']} B want x{DUPLICATES}: "
            f"read {flood['bytes_read_high_mib']:.2f} MiB, "
            f"reserved {'n/a' if reserved is None else f'{reserved:.2f} MiB'}, "
            f"RSS +{flood['rss_delta_high_mib']:.1f} MiB (materialised whole: "
            f"{flood['materialised_whole_mib']:.0f} MiB)"
        )
    if args.only in (None, "fetch"):
        fetch = doc["fetch"] = trio.run(bench_fetch, args.mib, max(1, args.runs))
        rate, samples = fetch["mib_per_s"], fetch["samples_mib_per_s"]
        cpu_ms = fetch["cpu_ms_per_mib"]
        print(f"fetch: {fetch['mib']:.0f} MiB, median {rate:.1f} MiB/s {samples}, {cpu_ms:.1f} CPU ms/MiB")
    doc["loadavg_1m_at_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
