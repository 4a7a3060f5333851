"""Sharded inference with daemons as separate processes: an MLP and a CNN sharded equal to one node, a
stage server that survives malformed and oversize activation frames, and a lying replica (its own OS
process, ``tests/support/fake_peers.py``) caught by audits and excluded.

Two daemons serve every test of this module (started once): ``a`` checks every request it routes
(``[shard] spot_check_p = 1``), ``b`` checks none.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped]
import pytest
import trio
from multiaddr import Multiaddr

from accel_node.core.schemas import InferOptions, PlanRequest, PublishRequest, ServeRequest
from accel_node.shard.parts import FIRST, LAST, MSG
from accel_node.shard.server import SHARD_PURPOSE
from accel_node.shard.wire import MAGIC, MALFORMED, PREFIX, Kind, Message, decode_message, encode_bytes
from p2p.addrs import parse_peer_addr
from p2p.bulk import BulkError, BulkService, Channel, ChannelClosed
from p2p.bulk.framing import HEADER
from p2p.host import HostSettings, build_host, dial, run_host
from p2p.identity import generate_identity
from tests.support import fake_peers
from tests.support.daemons import REPO_ROOT, Daemon, bare_env, wait_until
from tests.support.modelzoo import build_cnn, build_mlp

pytestmark = pytest.mark.multinode

REPO = REPO_ROOT
TOLERANCE = 1e-4
LOOPBACK = Multiaddr("/ip4/127.0.0.1/tcp/0")


# -- daemons and sharded models ---------------------------------------------------------------------


@dataclass
class Cluster:
    a: Daemon  # spot_check_p = 1
    b: Daemon
    root: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("spotcheck")
    a = Daemon(root / "a", ACCEL_NODE_SHARD_SPOT_CHECK_P="1").start()
    b = Daemon(root / "b").start()
    try:
        a.wait_ready()
        b.wait_ready()
        a.api.peers.connect(b.addr)
        key = a.api.keys.new_key("acme")
        b.api.keys.trust(key.public_key, "acme")
        yield Cluster(a, b, root)
    finally:
        for daemon in (a, b):
            daemon.kill()


@dataclass
class Sharded:
    """A model published by ``a``, fetched by ``b``, planned by ``a`` and served."""

    cid: str
    path: Path
    plan: dict[str, Any]
    session: ort.InferenceSession

    @property
    def plan_cid(self) -> str:
        return str(self.plan["plan"])

    def expected(self, x: np.ndarray) -> np.ndarray:
        (y,) = self.session.run(None, {"x": x})
        return np.asarray(y)


def shard(
    cluster: Cluster, path: Path, *, planned_for: list[Daemon], serving: list[tuple[Daemon, int]]
) -> Sharded:
    """Publish the model at ``path`` (alone in its directory), plan it for ``planned_for`` (one peer per
    stage) and serve stage i on each (daemon, i) of ``serving`` (they fetch the signed plan by CID)."""
    a, b = cluster.a, cluster.b
    cid = a.api.models.publish(PublishRequest(dir=str(path.parent), key="acme")).cid
    b.api.models.fetch(cid)
    peers = [d.peer_id for d in planned_for]
    plan = a.api.shards.plan(PlanRequest(cid=cid, stages=len(peers), peers=peers))
    for daemon, stage in serving:
        served = daemon.api.shards.serve(ServeRequest(cid=cid, stage=stage, plan=plan["plan"]))
        assert served["stage_cid"] == plan["stages"][stage]["cid"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return Sharded(cid, path, plan, session)


def stage_peers(node: Daemon, plan_cid: str) -> list[set[str]]:
    """Who serves each stage of ``plan_cid``, as ``node`` finds them (DHT + verified capability records)."""
    listing = node.api.shards.list()
    found = next(p for p in listing["plans"] if p["plan"] == plan_cid)
    return [set(s.get("peers", [])) for s in found["stages"]]


def wait_for_route(node: Daemon, plan_cid: str, expected: list[set[str]]) -> None:
    wait_until(lambda: stage_peers(node, plan_cid) == expected, timeout=60, interval=0.3,
               what=f"the replicas of every stage of {plan_cid} to be known on {node.home.name}")  # fmt: skip


def infer(node: Daemon, model: Sharded, x: np.ndarray) -> np.ndarray:
    options = InferOptions(mode="sharded", plan=model.plan_cid, timeout_s=30)
    y: np.ndarray = node.api.inference.infer(model.cid, {"x": x}, options)["y"]
    return y


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype == np.float32
    assert float(np.max(np.abs(got - want))) <= TOLERANCE


@pytest.fixture(scope="module")
def mlp(cluster: Cluster) -> Sharded:
    """An MLP in 2 stages: stage 0 on ``a``, stage 1 on ``b`` (``b`` routes: b -> a -> b)."""
    # hidden=64: the default MLP (64 -> 128 -> 10) has no cut point worth cutting at (its hidden
    # activations are more than 1.5x both its input and its output).
    path = build_mlp(cluster.root / "mlp", hidden=64, out=32)
    model = shard(cluster, path, planned_for=[cluster.a, cluster.b], serving=[(cluster.a, 0), (cluster.b, 1)])
    wait_for_route(cluster.b, model.plan_cid, [{cluster.a.peer_id}, {cluster.b.peer_id}])
    return model


# -- sharded equals single-node ---------------------------------------------------------------------


def test_sharded_mlp_and_cnn_equal_single_node_output(cluster: Cluster, mlp: Sharded) -> None:
    a, b = cluster.a, cluster.b
    cnn = shard(cluster, build_cnn(cluster.root / "cnn"), planned_for=[a, b], serving=[(a, 0), (b, 1)])
    wait_for_route(b, cnn.plan_cid, [{a.peer_id}, {b.peer_id}])
    runs = [(node, model) for node in (a, b) for model in (mlp, cnn)]
    before = [served(node, model) for node, model in runs]
    rng = np.random.default_rng(0)
    for model, shape in ((mlp, (64,)), (cnn, (3, 16, 16))):
        for batch in (1, 5):
            x = rng.standard_normal((batch, *shape), dtype=np.float32)
            assert_close(infer(b, model, x), model.expected(x))
    # the pipelines really crossed both daemons: each ran its stage of both requests of each model
    assert [served(node, model) - done for (node, model), done in zip(runs, before, strict=True)] == [2] * 4


def served(node: Daemon, model: Sharded) -> int:
    """How many RUNs ``node``'s stage of ``model`` answered with ACK (none failed)."""
    loads = node.api.shards.list(lookup=False)["loads"]
    (load,) = [entry for entry in loads if entry["model"] == model.plan_cid]
    assert load["failed"] == 0, (node.home.name, load)
    return int(load["served"])


# -- malformed and oversize frames -------------------------------------------------------------------


async def expect_fail(channel: Channel, code: str, tag: int | None = None) -> Message:
    with trio.fail_after(10):
        frame = await channel.receive()
    answer = decode_message(frame.payload)
    assert answer.kind == Kind.FAIL and answer.code == code, answer
    if tag is not None:
        assert answer.tag == tag
    return answer


def message_bytes(header: dict[str, Any], body: bytes = b"") -> bytes:
    raw = cbor2.dumps(header, canonical=True)
    pad = bytes(-(PREFIX.size + len(raw)) % 8)
    return PREFIX.pack(MAGIC, len(raw) + len(pad), len(body)) + raw + pad + body


async def test_malformed_and_oversize_frames_are_refused_and_the_stage_server_serves_on(
    cluster: Cluster, mlp: Sharded
) -> None:
    a, b = cluster.a, cluster.b  # a serves stage 0 of the MLP plan
    assert a.proc is not None
    rng = np.random.default_rng(1)
    host = build_host(generate_identity(), HostSettings(listen_addrs=[LOOPBACK]))
    async with trio.open_nursery() as nursery:
        await nursery.start(run_host, host, [LOOPBACK])
        bulk = BulkService(host)
        await nursery.start(bulk.run)
        target, addr = parse_peer_addr(a.addr)
        await dial(host, target, addr, timeout_s=10)
        async with bulk.open(target, SHARD_PURPOSE) as channel:
            assert channel.encrypted
            await channel.send(b"garbage", frame_type=MSG)
            await expect_fail(channel, MALFORMED)
            await channel.send(b"x", frame_type=0x99)  # not a shard frame type
            await expect_fail(channel, MALFORMED)
            # a RUN whose only tensor claims 2**26 x 64 float32 (16 GiB) but carries 16 bytes
            request_id = os.urandom(16)
            header = {"v": 1, "k": int(Kind.RUN), "t": 7, "r": request_id, "s": 0, "m": mlp.plan_cid, "b": 0,
                      "route": [], "ttl": 10_000, "reply": host.get_id().to_bytes(),
                      "x": [["x", "float32", [1 << 26, 64], 16]]}  # fmt: skip
            await channel.send(message_bytes(header, bytes(16)), frame_type=MSG)
            answer = await expect_fail(channel, MALFORMED, tag=7)
            assert answer.request_id == request_id  # matched to the request it answers
            # a header over the 64 KiB header limit, in one frame of 1 MiB
            await channel.send(PREFIX.pack(MAGIC, 1 << 20, 0) + bytes(1 << 20), frame_type=MSG)
            await expect_fail(channel, MALFORMED)
            # a message sent in parts that announces 1 TiB: refused at its first part, the rest skipped
            await channel.send(PREFIX.pack(MAGIC, 64, 1 << 40) + bytes(1 << 16), frame_type=FIRST)
            await expect_fail(channel, MALFORMED)
            await channel.send(bytes(1 << 16), frame_type=LAST)
            # the channel is still read, in step: the next answer is about the next message (tag 6)
            await channel.send(encode_bytes(Message(Kind.ACK, os.urandom(16), tag=6)), frame_type=MSG)
            await expect_fail(channel, MALFORMED, tag=6)  # not a request
        async with bulk.open(target, SHARD_PURPOSE) as channel:
            # a frame header announcing more than the server's frame limit: answered, then closed
            await channel._stream.send_all(HEADER.pack(MSG, channel.max_send_payload + (1 << 20)))
            await expect_fail(channel, MALFORMED)
            with pytest.raises((ChannelClosed, BulkError)), trio.fail_after(10):
                await channel.receive()
        me = str(host.get_id())
        penalised = await trio.to_thread.run_sync(lambda: a.api.peers.get(me))
        # Close the connection and the listener before leaving: a connection merely abandoned by a
        # cancelled host stays open, unread, and stalls the daemon's later DHT calls to this peer.
        with trio.move_on_after(10):
            await host.close()
        nursery.cancel_scope.cancel()
    assert penalised.penalties >= 6 and penalised.excluded, penalised
    assert a.proc.poll() is None, a.log()[-4000:]
    # a serves on: a valid request through b's API crosses a's stage 0 (b -> a -> b)
    x = rng.standard_normal((3, 64), dtype=np.float32)
    got = await trio.to_thread.run_sync(infer, b, mlp, x)
    assert_close(got, mlp.expected(x))
    assert a.proc.poll() is None


# -- a lying replica, caught by audits ----------------------------------------------------------------


@dataclass
class Liar:
    proc: subprocess.Popen[bytes]
    status_path: Path
    log_path: Path

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_path.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    @property
    def peer_id(self) -> str:
        return str(self.status()["peer_id"])

    def runs(self) -> int:
        return int(self.status()["runs"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@contextmanager
def liar_process(directory: Path, model: Sharded, stage: int, connect: list[Daemon]) -> Iterator[Liar]:
    """``tests/support/fake_peers.py`` serving ``stage`` of ``model``'s plan, connected to ``connect``."""
    status, log_path = directory / "liar.json", directory / "liar.log"
    plan = model.plan
    args = [
        sys.executable, "-m", fake_peers.__name__, "--model", str(model.path), "--model-cid", model.cid,
        "--plan-cid", model.plan_cid, "--cuts", *map(str, plan["cuts"]), "--dims", json.dumps(plan["dims"]),
        "--stage", str(stage), "--stage-cid", plan["stages"][stage]["cid"], "--status", str(status),
        *(arg for d in connect for arg in ("--connect", d.addr)),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=REPO, env={**bare_env(), "PYTHONUNBUFFERED": "1"}, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    liar = Liar(proc, status, log_path)
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"the liar exited with {proc.returncode}:\n{liar.log()}"
            return bool(liar.status().get("ready"))

        wait_until(ready, timeout=60, interval=0.1, what="the lying stage server")
        yield liar
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def test_a_replica_returning_wrong_activations_is_caught_by_audits_and_excluded_everywhere(
    cluster: Cluster,
) -> None:
    """The liar is the only replica of stage 1 (it gets every request). ``a`` audits every stage of every
    request after answering (audits cannot be told apart from traffic, so a lie may reach the caller
    before the liar is caught), re-executing stage 1 itself (it holds the model); 3 penalties exclude the
    liar, and ``a`` re-places stage 1 on itself. ``b`` (which never routes through the liar) verifies
    the gossiped evidence on its own and excludes it too."""
    a, b = cluster.a, cluster.b
    path = build_mlp(cluster.root / "liar-mlp", hidden=64, out=32, seed=1)
    model = shard(cluster, path, planned_for=[b, a], serving=[(b, 0)])
    with liar_process(cluster.root, model, 1, connect=[a, b]) as liar:
        wait_for_route(a, model.plan_cid, [{b.peer_id}, {liar.peer_id}])
        rng = np.random.default_rng(2)

        def view(node: Daemon) -> dict[str, Any]:
            return node.api.peers.get(liar.peer_id).model_dump()

        for _ in range(10):
            x = rng.standard_normal((4, 64), dtype=np.float32)
            infer(a, model, x)
            wait_until(lambda: view(a)["penalties"] >= 1, timeout=20, what="the first audit")
            if view(a)["excluded"]:
                break
        wait_until(lambda: view(a)["excluded"], timeout=30, what="the liar excluded on a")
        seen = view(a)
        assert seen["penalties"] >= 3 and "committed output differs" in seen["penalty_reason"], seen
        honest = a.api.peers.get(b.peer_id)
        assert honest.penalties == 0 and not honest.excluded, honest
        wait_until(lambda: view(b)["excluded"], timeout=60, what="b excluding the liar on the evidence")
        assert "evidence" in view(b)["penalty_reason"], view(b)
        lies = liar.runs()
        assert lies >= 3, liar.status()
        for _ in range(4):  # from now on, no request reaches the liar (a serves stage 1 itself)
            x = rng.standard_normal((2, 64), dtype=np.float32)
            assert_close(infer(a, model, x), model.expected(x))
        assert liar.runs() == lies, liar.status()
        assert liar.proc.poll() is None, liar.log()
