"""The data plane on the transport seam, on trio's mock clock: fail-over as a pure object, back-off that
grows and expires on trio's clock, spot-check verdicts as a pure function, and whole router -> stage
server chains over in-memory channels (real framing, real ONNX Runtime stages, signed receipts) where
replicas are down, stall, crash or lie. Every test runs on ``MockClock(autojump_threshold=0)`` (pytest-trio's
``autojump_clock``): timeouts and back-off pass in virtual time, nothing sleeps on the wall clock, and
ONNX Runtime runs inline (:func:`accel_node.shard.runner.inline`) so that computing takes no clock time."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import onnx
import onnxruntime as ort  # type: ignore[import-untyped]
import pytest
import trio
import trio.testing
from libp2p.peer.id import ID

from accel_node.shard.errors import ShardRouteError
from accel_node.shard.failover import FailOver
from accel_node.shard.health import ReplicaHealth
from accel_node.shard.partition import Partition, partition
from accel_node.shard.retention import Retention
from accel_node.shard.router import ShardRouter
from accel_node.shard.runner import StageRunner, inline
from accel_node.shard.server import RESULT_PURPOSE, SHARD_PURPOSE, StageServer
from accel_node.shard.spotcheck import Judgement, Tolerance, judge
from accel_node.shard.wire import EXHAUSTED, FAILED, INVALID
from p2p.bulk import MemoryNetwork, MemoryTransport
from p2p.identity import generate_identity
from p2p.penalties import PenaltyBox
from tests.support.modelzoo import Zoo, zoo  # noqa: F401

T = TypeVar("T")
TOLERANCE = 1e-4


def peer(n: int) -> ID:
    return ID(b"\x00\x24\x08\x01\x12\x20" + bytes([n]) * 32)


A, B, C, D = peer(1), peer(2), peer(3), peer(4)


# -- fail-over, pure ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failover_tries_usable_replicas_in_order_and_blames_the_right_stage() -> None:
    clock = FakeClock()
    health = ReplicaHealth(base_s=1.0, max_s=8.0, clock=clock)
    health.failed(B, "crashed earlier")
    box = PenaltyBox(limit=1)
    box.penalise(D, "lied")
    failover = FailOver(1, [A, B, C, D], health, box)
    assert failover.next() == A and not failover.retrying
    failover.broke(A, "channel broke")
    assert failover.next() == C and failover.retrying  # B backed off, D excluded
    failover.refused(C, INVALID, "bad frame", at_stage=1)  # the request's fault: C not backed off
    assert failover.next() is None
    assert failover.reasons == [
        f"{A}: channel broke",
        f"{B}: skipped (crashed earlier)",
        f"{C}: invalid: bad frame",
        f"{D}: skipped (excluded)",
    ]
    assert health.backing_off(A) and not health.backing_off(C) and failover.stage_to_blame == 1

    exhausted = FailOver(1, [A, C], ReplicaHealth(clock=clock))
    for replica in (exhausted.next(), exhausted.next()):
        assert replica is not None
        exhausted.refused(replica, EXHAUSTED, "no replica of stage 3", at_stage=3)
    assert exhausted.next() is None and exhausted.stage_to_blame == 3  # a later stage to re-place
    assert not exhausted.health.backing_off(A)

    mixed = FailOver(1, [A, C], ReplicaHealth(clock=clock))
    assert mixed.next() == A
    mixed.refused(A, EXHAUSTED, "no replica of stage 3", at_stage=3)
    assert mixed.next() == C
    mixed.timed_out(C, 2.5)
    assert mixed.stage_to_blame == 1 and mixed.reasons[-1] == f"{C}: no answer within 2.5 s"


def test_failover_attempts_are_bounded_and_a_delivery_ends_it() -> None:
    health = ReplicaHealth(clock=FakeClock())
    bounded = FailOver(0, [A, B, C], health, max_attempts=2)
    assert bounded.next() == A
    bounded.refused(A, FAILED, "ORT failed", at_stage=0)
    assert bounded.next() == B
    bounded.not_tried(B, "no time left")  # not counted: C may still be tried
    assert bounded.next() == C
    bounded.delivered(C)
    assert bounded.next() is None and bounded.winner == C
    assert health.backing_off(A) and not health.backing_off(B) and not health.backing_off(C)
    with pytest.raises(ValueError, match="max_attempts"):
        FailOver(0, [A], health, max_attempts=0)


# -- back-off on trio's clock ---------------------------------------------------------------------------


async def test_backoff_grows_caps_and_expires_on_trios_clock(autojump_clock: trio.testing.MockClock) -> None:
    heard: list[float] = []
    health = ReplicaHealth(base_s=1.0, max_s=8.0, listener=lambda _p, _r, backoff: heard.append(backoff))
    assert [health.failed(A, "down") for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0] == heard
    start = trio.current_time()
    assert health.backing_off(A) and not health.usable(A)
    assert health.snapshot()[str(A)]["retry_in_s"] == pytest.approx(8.0)
    await trio.sleep(7.9)
    assert health.backing_off(A)
    await trio.sleep(0.2)  # the back-off expired: usable again, though not yet forgiven
    assert health.usable(A) and health.snapshot() == {} and trio.current_time() - start == pytest.approx(8.1)
    assert health.failed(A, "down again") == 8.0  # failures are remembered until a success
    health.succeeded(A)
    assert health.failed(A, "once more") == 1.0
    assert health.usable(B, PenaltyBox(limit=1))  # an unknown peer is usable


# -- spot-check verdicts, pure -----------------------------------------------------------------------------


def test_spot_check_verdicts() -> None:
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    honest, near, lie = {"h": x}, {"h": x + np.float32(1e-6)}, {"h": x + np.float32(0.5)}
    tol = Tolerance(atol=1e-4, rtol=1e-3)
    assert judge({A: honest, B: near}, tol, local_referee=False) == judge(
        {A: honest, B: near}, tol, local_referee=True
    )
    agreed = judge({A: honest, B: near}, tol, local_referee=False)
    assert agreed.judgement == Judgement.AGREED and agreed.output is honest and not agreed.liars
    unchecked = judge({A: lie}, tol, local_referee=False)
    assert unchecked.judgement == Judgement.UNCHECKED and unchecked.output is lie  # nothing to compare
    alone = judge({A: lie}, tol, local_referee=True)
    assert alone.judgement == Judgement.NEEDS_REFEREE and alone.output is None and not alone.mismatch
    split = judge({A: honest, B: lie}, tol, local_referee=False)
    assert split.judgement == Judgement.NEEDS_REFEREE and split.mismatch

    refereed = judge({A: honest, B: lie}, tol, local_referee=False, referee=near)  # a third replica agrees
    assert refereed.judgement == Judgement.REFEREED and refereed.output is near
    assert list(refereed.liars) == [B] and refereed.liars[B] == pytest.approx(0.5, abs=1e-5)
    caught = judge({A: lie}, tol, local_referee=True, referee=honest)
    assert caught.judgement == Judgement.REFEREED and list(caught.liars) == [A]
    both = judge({A: honest, B: lie}, tol, local_referee=True, referee={"h": x - np.float32(0.5)})
    assert both.judgement == Judgement.REFEREED and set(both.liars) == {A, B}  # the local copy is trusted
    nobody = judge({A: honest, B: lie}, tol, local_referee=False, referee={"h": x - np.float32(0.5)})
    assert nobody.judgement == Judgement.INCONCLUSIVE and nobody.output is None

    rounded = {"h": x.astype(np.float16).astype(np.float32)}  # fp16 compression: two float16 steps pass
    strict = Tolerance(atol=0.0, rtol=1e-5)
    assert judge({A: honest, B: rounded}, strict, local_referee=False).judgement == Judgement.NEEDS_REFEREE
    fp16 = Tolerance(atol=0.0, rtol=1e-5, fp16=True)
    assert judge({A: honest, B: rounded}, fp16, local_referee=False).judgement == Judgement.AGREED
    assert judge({A: {"h": x}, B: {"h": x.astype(np.float64)}}, tol, local_referee=False).mismatch  # dtypes
    with pytest.raises(ValueError, match="at least one"):
        judge({}, tol, local_referee=True)


# -- chains over in-memory channels ----------------------------------------------------------------------


@dataclass
class Model:
    onnx: onnx.ModelProto
    parts: dict[int, Partition]
    full: Any

    def feeds(self, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"x": rng.standard_normal((batch, 64), dtype=np.float32)}

    def expected(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.full.get_outputs()]
        return dict(zip(names, self.full.run(None, feeds), strict=True))


@pytest.fixture(scope="module")
def mlp(zoo: Zoo) -> Model:  # noqa: F811
    model = onnx.load(str(zoo.mlp(hidden=64, out=32)))
    parts = {k: partition(model, stages=k) for k in (2, 3)}
    full = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return Model(model, parts, full)


def cid(k: int) -> str:
    return f"bafy-mlp-{k}"


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, value in want.items():
        assert got[name].shape == value.shape
        assert float(np.max(np.abs(got[name] - value))) <= TOLERANCE, name


def stalling(seconds: float) -> Callable[[Callable[[], T]], Awaitable[T]]:
    """An offload whose every run takes ``seconds`` of (mock) clock time: alive, but slow."""

    async def offload(work: Callable[[], T]) -> T:
        await trio.sleep(seconds)
        return work()

    return offload


class LyingServer(StageServer):
    """Returns wrong activations: every computed float output shifted by 0.5."""

    def run_stage(self, runner: StageRunner, frame: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super().run_stage(runner, frame)
        return {n: v + np.float32(0.5) if n in runner.output_names and v.dtype.kind == "f" else v
                for n, v in out.items()}  # fmt: skip


@dataclass
class Node:
    transport: MemoryTransport
    scope: trio.CancelScope
    server: StageServer | None = None
    router: ShardRouter | None = None
    penalties: PenaltyBox = field(default_factory=lambda: PenaltyBox(limit=1))

    @property
    def id(self) -> ID:
        return self.transport.local_id

    def crash(self) -> None:
        self.scope.cancel()


class Net:
    """In-memory nodes, each with a stage server and/or a router, in one nursery."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.network = MemoryNetwork()
        self.nursery = nursery
        self._next = 1

    async def node(
        self,
        *,
        server_cls: type[StageServer] | None = StageServer,
        router: dict[str, Any] | None = None,
        running: bool = True,
        **server_options: Any,
    ) -> Node:
        key = generate_identity()  # stage servers sign receipts with their identity
        transport = self.network.transport(ID.from_pubkey(key.public_key))
        self._next += 1
        node = Node(transport, trio.CancelScope())
        if server_cls is not None:
            options = {"hop_timeout_s": 5.0, "offload": inline, "retention": Retention(key), **server_options}
            node.server = server_cls(transport, penalties=node.penalties, **options)
        if router is not None:
            options = {"penalties": node.penalties, "offload": inline, "hop_timeout_s": 5.0, **router}
            node.router = ShardRouter(transport, **options)
        if running:
            await self.nursery.start(self._run, node)
        return node

    async def _run(
        self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with node.scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.transport.run)
                if node.server is not None:
                    await nursery.start(node.server.run)
                if node.router is not None:
                    await nursery.start(node.router.run)
                task_status.started()


@asynccontextmanager
async def net() -> AsyncIterator[Net]:
    async with trio.open_nursery() as nursery:
        yield Net(nursery)
        nursery.cancel_scope.cancel()


async def serve(model: Model, k: int, nodes_per_stage: list[list[Node]]) -> list[list[ID]]:
    for index, nodes in enumerate(nodes_per_stage):
        stage = model.parts[k].stages[index]
        for node in nodes:
            assert node.server is not None
            await node.server.serve(cid(k), index, stage.model_bytes, stage)
    return [[n.id for n in nodes] for nodes in nodes_per_stage]


async def test_a_chain_over_memory_channels_equals_the_full_model(
    mlp: Model, autojump_clock: trio.testing.MockClock
) -> None:
    rng = np.random.default_rng(0)
    async with net() as n:
        client = await n.node(server_cls=None, router={})
        nodes = [await n.node() for _ in range(3)]
        router = client.router
        assert router is not None
        for k in (2, 3):
            route = await serve(mlp, k, [[node] for node in nodes[:k]])
            for batch, micro in ((1, None), (7, 2)):
                feeds = mlp.feeds(batch, rng)
                assert_close(await router.infer(route, cid(k), feeds, micro_batch=micro), mlp.expected(feeds))
        assert (
            router.pool.opened == 1 and router.stats.delivered == 2 + 2 * 4 and router.stats.duplicates == 0
        )
        assert [(link.peer_id, link.purpose) for link in nodes[2].server.pool.links()] == [  # type: ignore[union-attr]
            (client.id, RESULT_PURPOSE)
        ]


async def test_stage_0_fails_over_from_a_down_and_a_stalled_replica_then_backs_them_off(
    mlp: Model, autojump_clock: trio.testing.MockClock
) -> None:
    rng = np.random.default_rng(1)
    async with net() as n:
        client = await n.node(server_cls=None, router={"hop_timeout_s": 5.0})
        down = await n.node(running=False)
        # within the RUN's time to live, which its server bounds by (stages left + 1) x its hop timeout
        stalled = await n.node(offload=stalling(30.0), hop_timeout_s=20.0)
        good, last = await n.node(), await n.node()
        router = client.router
        assert router is not None
        route = await serve(mlp, 2, [[down, stalled, good], [last]])
        feeds = mlp.feeds(2, rng)
        start = trio.current_time()
        assert_close(await router.infer(route, cid(2), feeds, timeout_s=60), mlp.expected(feeds))
        assert trio.current_time() - start == pytest.approx(10.0)  # one attempt: 5 s per remaining stage
        assert router.stats.retries == 2
        assert "cannot reach" in router.health.why(down.id)
        assert router.health.why(stalled.id) == "no answer within 10 s"
        # the down replica's 1 s back-off ran out during those 10 s, the stalled one's has just begun: the
        # next request tries the down one again (instantly refused), skips the stalled one, and takes no time
        before = trio.current_time()
        assert_close(await router.infer(route, cid(2), feeds, timeout_s=60), mlp.expected(feeds))
        assert router.stats.retries == 3 and trio.current_time() == before
        assert router.health.failures(down.id) == 2 and router.health.failures(stalled.id) == 1
        await trio.sleep(60)  # the stalled chain still delivers its result: acknowledged and dropped
        assert router.stats.late == 1 and router.stats.delivered == 2
        # both back-offs expired: both are tried again (and fail again, backed off for longer)
        assert router.health.usable(down.id) and router.health.usable(stalled.id)
        assert_close(await router.infer(route, cid(2), feeds, timeout_s=60), mlp.expected(feeds))
        assert router.stats.retries == 5
        assert router.health.failures(down.id) == 3 and router.health.failures(stalled.id) == 2


async def test_a_stage_server_fails_over_to_the_next_replica_and_reports_the_exhausted_stage(
    mlp: Model, autojump_clock: trio.testing.MockClock
) -> None:
    rng = np.random.default_rng(2)
    async with net() as n:
        client = await n.node(server_cls=None, router={})
        first, crashed, good, last = [await n.node() for _ in range(4)]
        router = client.router
        assert router is not None and first.server is not None
        route = await serve(mlp, 3, [[first], [crashed, good], [last]])
        feeds = mlp.feeds(3, rng)
        assert_close(await router.infer(route, cid(3), feeds), mlp.expected(feeds))
        crashed.crash()  # its channels end; the next request finds it unreachable
        await trio.testing.wait_all_tasks_blocked()
        assert_close(await router.infer(route, cid(3), feeds), mlp.expected(feeds))
        assert [load.replays for load in first.server.loads()] == [1]
        assert first.server.health.why(crashed.id) and router.stats.retries == 0
        good.crash()
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ShardRouteError) as caught:
            await router.infer(route, cid(3), feeds)
        assert caught.value.stage == 1  # stage 0 answered exhausted: stage 1 is the one to re-place
        assert not router.health.backing_off(first.id)  # not stage 0's fault


async def test_audits_over_memory_catch_a_liar_after_the_answer(
    mlp: Model, autojump_clock: trio.testing.MockClock
) -> None:
    """Audits run after the answer is delivered (issue 11: no distinguishable spot-check run): the first
    lie reaches the caller, the audit then catches and excludes the liar, later answers are right."""
    part = mlp.parts[3]
    rng = np.random.default_rng(3)
    async with net() as n:
        client = await n.node(server_cls=None, router={"spot_check_p": 1.0, "rng": random.Random(4)})
        first, good, last = await n.node(), await n.node(), await n.node()
        liar = await n.node(server_cls=LyingServer)
        router = client.router
        assert router is not None
        route = await serve(mlp, 3, [[first], [liar, good], [last]])
        local = {1: (part.stages[1].model_bytes, part.stages[1])}
        feeds = mlp.feeds(2, rng)
        await router.infer(route, cid(3), feeds, local_stages=local)  # the liar answered
        await router.auditor.wait_idle()
        assert router.stats.spot_checks == 3 and router.stats.lies_caught == 1
        assert router.stats.penalised == [str(liar.id)]
        assert client.penalties.excluded(liar.id) and not client.penalties.excluded(good.id)
        got = await router.infer(route, cid(3), feeds, local_stages=local)  # the liar is out of routes
        assert_close(got, mlp.expected(feeds))
        await router.auditor.wait_idle()
        assert router.stats.penalised == [str(liar.id)]


async def test_a_node_reaches_its_own_stages_over_its_in_memory_channel(
    mlp: Model, autojump_clock: trio.testing.MockClock
) -> None:
    rng = np.random.default_rng(4)
    async with net() as n:
        client = await n.node(router={})
        other = await n.node()
        router, server = client.router, client.server
        assert router is not None and server is not None
        route = await serve(mlp, 3, [[client], [other], [client]])
        feeds = mlp.feeds(2, rng)
        assert_close(await router.infer(route, cid(3), feeds), mlp.expected(feeds))
        assert [(link.peer_id, link.purpose) for link in router.pool.links()] == [(client.id, SHARD_PURPOSE)]
        assert {(link.peer_id, link.purpose) for link in server.pool.links()} == {
            (other.id, SHARD_PURPOSE),  # our stage 0 pushed to the other node
            (client.id, RESULT_PURPOSE),  # our stage 2 handed the result to our router, in memory
        }
        assert router.stats.delivered == 1


async def test_idle_links_close_after_their_idle_time_and_reopen(
    mlp: Model, autojump_clock: trio.testing.MockClock
) -> None:
    rng = np.random.default_rng(5)
    async with net() as n:
        client = await n.node(server_cls=None, router={"link_idle_s": 40.0})
        first, last = await n.node(link_idle_s=40.0), await n.node()
        router = client.router
        assert router is not None and first.server is not None
        route = await serve(mlp, 2, [[first], [last]])
        feeds = mlp.feeds(1, rng)
        await router.infer(route, cid(2), feeds)
        assert len(router.pool.links()) == 1 and len(first.server.pool.links()) == 1
        await trio.sleep(39)
        assert len(router.pool.links()) == 1  # not idle for long enough yet
        await trio.sleep(21)
        assert router.pool.links() == [] and first.server.pool.links() == []
        assert_close(await router.infer(route, cid(2), feeds), mlp.expected(feeds))
        assert router.pool.opened == 2 and first.server.pool.opened == 2
