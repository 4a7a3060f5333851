"""Trust what was observed: a FAIL ``invalid`` blames whoever produced the frame (issue 11, finding 10),
pure and over in-memory chains (the harness of :mod:`tests.shard.test_seam`, on trio's mock clock)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
from pydantic import ValidationError

from accel_node.capability import CapabilityBody, rejection_reason
from accel_node.shard.failover import FailOver
from accel_node.shard.health import ReplicaHealth
from accel_node.shard.observed import Candidate, PeerObservations, rank
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
        # The router observed both: the broken replica failing, the good one delivering.
        seen = router.observations
        assert seen.failures(broken.id, cid(2), 0) == pytest.approx(1.0, rel=0.01)
        assert (
            seen.expected_ms(good.id, cid(2), 0) is not None
            and seen.expected_ms(broken.id, cid(2), 0) is None
        )


# -- observed, not claimed --------------------------------------------------------------------------------

PLAN = "bafy-plan"


def observations(clock: FakeClock, **options: Any) -> PeerObservations:
    return PeerObservations(half_life_s=10.0, clock=clock, **options)


def test_capability_figures_beyond_physical_bounds_are_refused_as_implausible() -> None:
    def body(**hw: Any) -> dict[str, Any]:
        hardware = {"mem_total_gb": 141.0, "mem_free_gb": 120.0, "cpu": "x", "cores": 16, **hw}
        return {"name": "n", "version": "1", "addrs": [], "hw": hardware, "load": {"queue_depth": 0,
                "utilisation": 0.1}}  # fmt: skip

    h200 = {"name": "NVIDIA H200", "memory_gb": 143.8, "fp16_tflops": 989.0, "mem_bw_gbs": 4800.0}
    assert CapabilityBody.model_validate(body(peak_gflops=900.0, gpus=[h200])).hw.peak_gflops == 900.0
    for lie in (
        body(peak_gflops=1e300),  # issue 11, finding 2: accepted, and ranked first
        body(mem_bw_gbs=1e9),
        body(mem_total_gb=1e9, mem_free_gb=1e9),
        body(mem_free_gb=500.0),  # more free than there is
        body(gpus=[{**h200, "fp16_tflops": 1e12}]),
    ):
        with pytest.raises(ValidationError) as caught:
            CapabilityBody.model_validate(lie)
        assert rejection_reason(caught.value) == "implausible"
    queued = body()
    queued["load"]["queue_depth"] = 1 << 40
    with pytest.raises(ValidationError) as caught:
        CapabilityBody.model_validate(queued)
    assert rejection_reason(caught.value) == "implausible"
    with pytest.raises(ValidationError) as caught:
        CapabilityBody.model_validate({**body(), "hw": {"cores": "many"}})
    assert rejection_reason(caught.value) == "malformed"


def test_proven_replicas_rank_before_ones_that_only_claim() -> None:
    clock = FakeClock()
    seen = observations(clock)
    seen.record_success(B, PLAN, 0, 0.200)
    seen.record_verified(B, PLAN, 0)
    # C claims the fastest plausible figure (its estimate is tiny) but never proved anything.
    ranked = rank([Candidate(C, 0.001), Candidate(B, 50.0)], seen, PLAN, 0, probe_p=0.0)
    assert ranked == [B, C]
    # Alone, a claimed replica is all there is (a probe: every request it serves is audited).
    assert rank([Candidate(C, 0.001)], seen, PLAN, 0) == [C]
    assert (
        seen.audit_probability(C, PLAN, 0, 0.05) == 1.0 and seen.audit_probability(B, PLAN, 0, 0.05) == 0.05
    )
    assert seen.audit_hook(0.1)(C, PLAN, 0) == 1.0
    # Sometimes the best claimed replica goes first, to prove itself.
    assert rank([Candidate(C, 0.001), Candidate(B, 50.0)], seen, PLAN, 0, probe_p=1.0) == [C, B]
    # This node's own stage counts as proven.
    assert rank([Candidate(C, 0.001), Candidate(A, 9.0, local=True)], seen, PLAN, 0, probe_p=0.0) == [A, C]


def test_a_replica_observed_fast_outranks_one_that_claims_to_be_fast() -> None:
    clock = FakeClock()
    seen = observations(clock)
    for peer, latency in ((B, 0.005), (C, 0.050)):
        seen.record_success(peer, PLAN, 1, latency)
        seen.record_verified(peer, PLAN, 1)
    # C claims to be 100x faster than B; both proven; B was observed 10x faster.
    assert rank([Candidate(C, 0.05), Candidate(B, 5.0)], seen, PLAN, 1) == [B, C]
    assert seen.expected_ms(B, PLAN, 1) == pytest.approx(5.0)
    # Failures make an observed replica look slower: B fails 3 of 4 requests.
    for _ in range(3):
        seen.record_failure(B, PLAN, 1)
    assert seen.expected_ms(B, PLAN, 1) == pytest.approx(20.0) and seen.failures(B, PLAN, 1) == 3
    assert rank([Candidate(C, 0.05), Candidate(B, 5.0)], seen, PLAN, 1) == [B, C]  # 20 ms < 50 ms still
    # A liar is not ranked at all, for any stage, and is no longer proven.
    seen.record_lie(B, PLAN, 0)
    assert rank([Candidate(C, 0.05), Candidate(B, 5.0)], seen, PLAN, 1) == [C]
    assert not seen.proven(B, PLAN, 1) and seen.audit_probability(B, PLAN, 1, 0.05) == 1.0


def test_observations_decay_on_an_injected_clock_and_memory_is_bounded() -> None:
    clock = FakeClock()
    seen = observations(clock)
    seen.record_success(B, PLAN, 0, 0.100, items=4)
    assert seen.expected_ms(B, PLAN, 0) == pytest.approx(100.0) and seen.throughput(
        B, PLAN, 0
    ) == pytest.approx(40.0)
    clock.now += 30.0  # three half-lives: the old sample weighs 1/8
    seen.record_success(B, PLAN, 0, 0.010)
    assert seen.expected_ms(B, PLAN, 0) == pytest.approx(10.0 + 90.0 * (0.125 / 1.125))
    clock.now += 30.0  # weight 1.125/8 < 0.25: too old to rank by, the claim is used again
    assert seen.expected_ms(B, PLAN, 0) is None and seen.throughput(B, PLAN, 0) is None
    seen.record_verified(B, PLAN, 0)
    assert seen.proven(B, PLAN, 0)  # being proven does not decay
    bounded = observations(clock, max_entries=2)
    for stage in range(3):
        bounded.record_success(C, PLAN, stage, 0.01)
    assert bounded.entries == 2 and bounded.expected_ms(C, PLAN, 0) is None  # the oldest was evicted
    assert bounded.expected_ms(C, PLAN, 2) == pytest.approx(10.0)
