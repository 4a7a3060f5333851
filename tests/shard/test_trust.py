"""Trust what was observed: a FAIL ``invalid`` blames whoever produced the frame (issue 11, finding 10),
pure and over in-memory chains (the harness of :mod:`tests.shard.test_seam`, on trio's mock clock)."""

from __future__ import annotations

import numpy as np
import trio
import trio.testing

from accel_node.shard.failover import FailOver
from accel_node.shard.health import ReplicaHealth
from accel_node.shard.runner import StageRunner
from accel_node.shard.server import StageServer
from accel_node.shard.wire import EXHAUSTED, INVALID
from tests.shard.test_seam import A, B, C, FakeClock, Model, assert_close, cid, mlp, net, serve
from tests.support.modelzoo import zoo

__all__ = ["mlp", "zoo"]  # fixtures used here


def test_invalid_blames_the_producer_of_the_frame() -> None:
    health = ReplicaHealth(clock=FakeClock())
    # A's output did not fit stage 1 (A relays stage 1's "invalid"): A is backed off, B tried next.
    upstream = FailOver(0, [A, B], health)
    assert upstream.next() == A
    upstream.refused(A, INVALID, "frame does not fit", at_stage=1)
    assert health.backing_off(A) and upstream.next() == B
    upstream.delivered(B)
    # A calls a frame of stage 1 invalid, B accepts the same frame: A was wrong about it.
    dodger = FailOver(1, [A, C], ReplicaHealth(clock=FakeClock()))
    assert dodger.next() == A
    dodger.refused(A, INVALID, "not my problem", at_stage=1)
    assert not dodger.health.backing_off(A) and dodger.next() == C
    dodger.delivered(C)
    assert dodger.health.backing_off(A) and "that" in dodger.health.why(A)
    # Every replica of stage 1 refuses the frame: the sender is at fault, and says so upstream.
    frame_at_fault = FailOver(1, [A, C], ReplicaHealth(clock=FakeClock()))
    for replica in (frame_at_fault.next(), frame_at_fault.next()):
        assert replica is not None
        frame_at_fault.refused(replica, INVALID, "frame does not fit", at_stage=1)
    assert frame_at_fault.next() is None and frame_at_fault.invalid_input
    assert frame_at_fault.relay_code == INVALID and frame_at_fault.stage_to_blame == 1
    assert not frame_at_fault.health.backing_off(A) and not frame_at_fault.health.backing_off(C)
    exhausted = FailOver(1, [A], ReplicaHealth(clock=FakeClock()))
    assert exhausted.next() == A
    exhausted.broke(A, "down")
    assert exhausted.relay_code == EXHAUSTED and not exhausted.invalid_input


class MisshapenServer(StageServer):
    """Produces output that does not fit the next stage (one feature short)."""

    def run_stage(self, runner: StageRunner, frame: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super().run_stage(runner, frame)
        return {n: v[..., :-1] if v.ndim > 1 else v for n, v in out.items()}


async def test_a_replica_whose_output_does_not_fit_the_next_stage_is_backed_off(
    mlp: Model, autojump_clock: trio.testing.MockClock
) -> None:
    rng = np.random.default_rng(11)
    async with net() as n:
        client = await n.node(server_cls=None, router={})
        broken = await n.node(server_cls=MisshapenServer)
        good, last = await n.node(), await n.node()
        router = client.router
        assert router is not None
        route = await serve(mlp, 2, [[broken, good], [last]])
        feeds = mlp.feeds(2, rng)
        assert_close(await router.infer(route, cid(2), feeds), mlp.expected(feeds))
        # Before: stage 1's "invalid" reached the router as "exhausted" about stage 1, nobody backed off.
        assert router.health.backing_off(broken.id) and "invalid" in router.health.why(broken.id)
        assert not router.health.backing_off(good.id) and router.stats.retries == 1
        assert last.server is not None and not last.server.health.backing_off(broken.id)
        assert not router.health.backing_off(last.id)  # stage 1 only said what it saw
