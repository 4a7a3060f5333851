"""The Kubo RPC client and the ``kubo`` content backend, against a real IPFS RPC server.

The server is js-ipfs 0.66.1 (``tests/support/jsipfs.py``; installed by ``scripts/jsipfs.sh``): no
Kubo binary is installable here. Tests that need a true Kubo ``ipfs`` binary run when one is on
PATH. The one fake is ``httpx.MockTransport`` standing in for a node that lies (a tampered block,
a wrong CID), which no honest implementation can be made to do.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from accel_node.config import parse_config
from accel_node.core.schemas import PublishRequest
from accel_node.errors import ConfigError
from p2p.content import (
    CID,
    DAG_PB,
    RAW,
    BlockVerificationError,
    KuboRpcClient,
    KuboRpcError,
    KuboUnavailableError,
    ResponseTooLargeError,
    api_url,
    compute_cid,
    import_bytes,
)
from p2p.errors import InvalidAddressError
from tests.models.test_models import cli_json, write_model
from tests.support.daemons import Daemon, api_error
from tests.support.jsipfs import JsIpfs, start_jsipfs

pytestmark = pytest.mark.kubo

SIZES = [0, 1, 256 * 1024 + 1, 3_000_000]


def content(size: int, seed: int = 0) -> bytes:
    return random.Random(size * 7919 + seed).randbytes(size)


@pytest.fixture(scope="module")
def jsipfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsIpfs]:
    node = start_jsipfs(tmp_path_factory.mktemp("jsipfs") / "repo")
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
async def kubo(jsipfs: JsIpfs) -> AsyncIterator[KuboRpcClient]:
    async with KuboRpcClient(jsipfs.api) as client:
        yield client


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- addresses and config ---------------------------------------------------------------------


def test_api_multiaddrs() -> None:
    assert api_url("/ip4/127.0.0.1/tcp/5001") == "http://127.0.0.1:5001"
    assert api_url("/ip6/::1/tcp/5001") == "http://[::1]:5001"
    assert api_url("/dns4/ipfs.local/tcp/5001") == "http://ipfs.local:5001"
    assert api_url("/ip4/127.0.0.1/tcp/45678/http") == "http://127.0.0.1:45678"
    assert api_url("/dns/ipfs.example/tcp/443/https") == "https://ipfs.example:443"
    for bad in ("/ip4/127.0.0.1/udp/5001", "/ip4/127.0.0.1", "127.0.0.1:5001", "/unix/tmp/api"):
        with pytest.raises(InvalidAddressError):
            api_url(bad)


def test_config_backend_and_kubo_api() -> None:
    config = parse_config(
        {"ipfs": {"backend": "kubo", "kubo_api": "/dns4/ipfs/tcp/5001"}}, source="t", environ={}
    )
    assert config.ipfs.backend == "kubo" and config.ipfs.kubo_api == "/dns4/ipfs/tcp/5001"
    env = {"ACCEL_NODE_IPFS_BACKEND": "kubo", "ACCEL_NODE_IPFS_KUBO_API": "/ip6/::1/tcp/5001"}
    assert parse_config({}, source="t", environ=env).ipfs.kubo_api == "/ip6/::1/tcp/5001"
    with pytest.raises(ConfigError) as info:
        parse_config({"ipfs": {"kubo_api": "/ip4/127.0.0.1/udp/5001"}}, source="t", environ={})
    assert info.value.problems[0][0] == "[ipfs] kubo_api" and "Kubo API address" in info.value.problems[0][1]
    with pytest.raises(ConfigError) as info:
        parse_config({"ipfs": {"backend": "ipfs-cluster"}}, source="t", environ={})
    assert info.value.problems[0][0] == "[ipfs] backend"


# -- the client against js-ipfs ---------------------------------------------------------------


async def test_add_gives_our_cids_and_cat_returns_the_bytes(kubo: KuboRpcClient, tmp_path: Path) -> None:
    assert (await kubo.version()).count(".") == 2
    assert (await kubo.id()).peer_id.startswith("12D3KooW")
    for size in SIZES:
        data = content(size)
        added = await kubo.add(data)
        assert added.cid == compute_cid(data), size
        assert str(added.cid).startswith("bafk" if size <= 256 * 1024 else "bafy")
        assert await kubo.cat(added.cid, max_bytes=size) == data
    path = tmp_path / "f.bin"
    path.write_bytes(content(3_000_000, seed=1))
    assert (await kubo.add(path)).cid == compute_cid(path)  # streamed from disk


async def test_block_put_get_and_pin(kubo: KuboRpcClient) -> None:
    data = content(600_000, seed=2)
    result, blocks = import_bytes(data)
    assert {cid.codec for cid in blocks} == {RAW, DAG_PB}
    for cid, block in blocks.items():
        assert await kubo.block_put(block, codec=cid.codec) == cid
    for cid, block in blocks.items():
        assert await kubo.block_get(cid) == block
    await kubo.pin_add(result.root)
    assert await kubo.cat(result.root, max_bytes=len(data)) == data


async def test_reads_are_bounded(kubo: KuboRpcClient) -> None:
    data = content(3_000_000, seed=3)
    root = (await kubo.add(data)).cid
    with pytest.raises(ResponseTooLargeError, match="exceeds the bound of 1048576 bytes"):
        await kubo.cat(root, max_bytes=1024 * 1024)
    leaf = CID.compute(data[: 256 * 1024])
    assert len(await kubo.block_get(leaf)) == 256 * 1024
    with pytest.raises(ResponseTooLargeError):
        await kubo.block_get(leaf, max_bytes=100_000)


async def test_missing_block_times_out_with_a_clear_error(kubo: KuboRpcClient) -> None:
    absent = CID.compute(b"no node holds this block " + content(32, seed=4))
    with pytest.raises(KuboRpcError) as info:
        await kubo.block_get(absent, timeout_s=2)
    assert "block/get" in str(info.value)


async def test_connection_refused_says_what_to_do() -> None:
    addr = f"/ip4/127.0.0.1/tcp/{closed_port()}"
    async with KuboRpcClient(addr, timeout_s=5) as client:
        with pytest.raises(KuboUnavailableError) as info:
            await client.version()
    assert str(info.value).startswith(f"no Kubo RPC API at {addr}: is the daemon running?")


# -- a lying node (httpx.MockTransport) -------------------------------------------------------


def lying_node(answer: Callable[[httpx.Request], httpx.Response]) -> KuboRpcClient:
    return KuboRpcClient("/ip4/127.0.0.1/tcp/5001", transport=httpx.MockTransport(answer))


async def test_tampered_block_is_refused() -> None:
    wanted, other = b"the block that was asked for", b"a different block"
    cid = CID.compute(wanted)
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=other)

    async with lying_node(answer) as client:
        with pytest.raises(BlockVerificationError, match="do not match its CID"):
            await client.block_get(cid)
    assert seen[0].method == "POST" and seen[0].url.path == "/api/v0/block/get"
    assert seen[0].url.params["arg"] == str(cid)

    async with lying_node(lambda _: httpx.Response(200, content=wanted)) as client:
        assert await client.block_get(cid) == wanted  # the same code path accepts the true bytes


async def test_block_put_under_a_foreign_cid_is_refused() -> None:
    foreign = str(CID.compute(b"something else"))
    async with lying_node(lambda _: httpx.Response(200, json={"Key": foreign, "Size": 5})) as client:
        with pytest.raises(KuboRpcError, match="hashes to"):
            await client.block_put(b"hello")


async def test_streamed_answer_past_the_bound_is_cut_off() -> None:
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(1000):
            sent.append(1)
            yield b"x" * 65536

    async with lying_node(lambda _: httpx.Response(200, content=endless())) as client:
        with pytest.raises(ResponseTooLargeError, match="stopped reading"):
            await client.cat(CID.compute(b"x"), max_bytes=200_000)
    assert len(sent) < 10


async def test_kubo_error_messages_are_quoted() -> None:
    body = {"Message": 'invalid path "x": selected encoding not supported', "Code": 0, "Type": "error"}
    async with lying_node(lambda _: httpx.Response(500, json=body)) as client:
        with pytest.raises(KuboRpcError, match=r"cat failed \(HTTP 500\): invalid path"):
            await client.cat(CID.compute(b"x"), max_bytes=10)
    async with lying_node(lambda _: httpx.Response(200, content=b"[1, 2]")) as client:
        with pytest.raises(KuboRpcError, match="not an object"):
            await client.version()


# -- a true Kubo binary, when there is one ----------------------------------------------------


@pytest.mark.skipif(shutil.which("ipfs") is None, reason="no Kubo 'ipfs' binary on PATH")
async def test_round_trip_with_a_kubo_binary(tmp_path: Path) -> None:
    node = start_jsipfs(tmp_path / "kubo-repo", binary=Path(str(shutil.which("ipfs"))))
    try:
        async with KuboRpcClient(node.api) as client:
            for size in SIZES:
                data = content(size)
                assert (await client.add(data)).cid == compute_cid(data)
            result, blocks = import_bytes(content(600_000, seed=5))
            for cid, block in blocks.items():
                assert await client.block_put(block, codec=cid.codec) == cid
                assert await client.block_get(cid) == block
            await client.pin_add(result.root)
    finally:
        node.stop()


# -- daemons with the kubo backend ------------------------------------------------------------


def kubo_env(api: str) -> dict[str, str]:
    return {"ACCEL_NODE_IPFS_BACKEND": "kubo", "ACCEL_NODE_IPFS_KUBO_API": api}


@pytest.mark.multinode
def test_publish_into_kubo_and_fetch_from_it(
    start_daemon: Callable[..., Daemon], jsipfs: JsIpfs, tmp_path: Path
) -> None:
    a = start_daemon("a", wait=False, **kubo_env(jsipfs.api))
    b = start_daemon("b", wait=False, **kubo_env(jsipfs.api))
    a.wait_ready()
    b.wait_ready()
    public_key = a.cli("keys", "new", "acme").stdout.strip()
    assert b.cli("trust", "add", public_key, "--name", "acme").returncode == 0

    model_dir = write_model(tmp_path / "kmodel", extra_bytes=1_500_000)
    published = cli_json(a, "models", "publish", str(model_dir), "--key", "acme")
    cid = str(published["cid"])
    manifest = published["manifest"]
    assert isinstance(manifest, dict)

    # js-ipfs holds the manifest and every file under the node's CIDs, pinned.
    package = jsipfs.rpc("cat", arg=cid).content
    assert compute_cid(package) == CID.parse(cid)
    for entry in manifest["files"]:
        data = jsipfs.rpc("cat", arg=entry["cid"]).content
        assert data == (model_dir / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    pins = jsipfs.rpc("pin/ls", arg=cid, type="recursive").json()
    assert CID.parse(next(iter(pins["Keys"]))) == CID.parse(cid)

    # a is gone and b never met it: every block reaches b through js-ipfs's block/get.
    a.kill()
    assert a.peer_id not in b.peer_ids()
    fetched = cli_json(b, "models", "fetch", cid)
    installed = Path(str(fetched["path"]))
    for entry in manifest["files"]:
        assert (installed / entry["path"]).read_bytes() == (model_dir / entry["path"]).read_bytes()
    progress = b.api.models.fetch_progress(cid).model_dump()
    assert progress["phase"] == "done" and progress["bytes_done"] == progress["bytes_total"]
    assert progress["bytes_total"] == sum(e["size"] for e in manifest["files"])
    assert progress["blocks_done"] >= 8  # the manifest, 1.5 MB of tokens (6 leaves + root), the model


@pytest.mark.multinode
def test_unreachable_kubo_is_a_clear_error_not_a_dead_daemon(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    api = f"/ip4/127.0.0.1/tcp/{closed_port()}"
    node = start_daemon("k", **kubo_env(api))  # starts anyway
    assert "Kubo RPC backend is unreachable" in node.log()
    node.cli("keys", "new", "acme")
    model_dir = write_model(tmp_path / "m", extra_bytes=1000)
    refused = api_error(lambda: node.api.models.publish(PublishRequest(dir=str(model_dir), key="acme")))
    assert refused.http_status == 422
    assert f"no Kubo RPC API at {api}: is the daemon running?" in str(refused)
    assert json.loads(node.cli("models", "ls", "--json").stdout)["models"] == []

    cid = str(compute_cid(b"any manifest"))
    fetch = node.cli("models", "fetch", cid)
    assert fetch.returncode == 1 and "is the daemon running?" in fetch.stderr
    progress = node.api.models.fetch_progress(cid).model_dump()
    assert progress["phase"] == "failed" and "no Kubo RPC API" in progress["error"]
