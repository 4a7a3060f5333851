"""A SIGTERM in the middle of a stream of sharded requests loses none of them.

Real daemons in their own processes: ``a`` holds the model and asks, ``b`` serves stage 0, ``c`` and
``d`` serve stage 1. SIGTERM to the replica ``c`` (it drains: RUNs in flight finish, new ones are
refused as busy, so upstreams fail over to ``d``), then SIGTERM to the requester ``a`` itself (its API
lets requests in flight finish, then refuses connections). Every answer given is correct, none is a
server error, and both daemons exit 0.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import trio
import trio.testing

from accel_node.client import Client
from accel_node.core.schemas import InferOptions, PlanRequest, PublishRequest, ServeRequest
from accel_node.errors import ApiError, DaemonNotRunningError, DaemonTimeoutError
from tests.shard.test_seam import Model, assert_close, cid, mlp, net, serve, stalling  # noqa: F401
from tests.support.daemons import Daemon
from tests.support.modelzoo import build_transformer, zoo  # noqa: F401

SHARDED = InferOptions(mode="sharded", timeout_s=60)


def client(node: Daemon) -> Client:
    return Client(node.url, node.token(), timeout_s=120)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Stream:
    """Clients sending sharded requests until stopped; what each request got, with its times."""

    def __init__(self, node: Daemon, cid: str, requests: list[dict[str, np.ndarray]], clients: int = 4):
        self.node, self.cid, self.requests = node, cid, requests
        self.outcomes: list[tuple[int, float, float, Any]] = []  # index, sent, answered, outputs or error
        self._next = 0
        self._active = 0  # requests sent and not yet answered
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Stream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for thread in self._threads:
            thread.join(timeout=120)

    def done(self) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if isinstance(o[3], dict))

    def active(self) -> int:
        with self._lock:
            return self._active

    def _work(self) -> None:
        while True:
            with self._lock:
                index = self._next
                self._next += 1
            if index >= len(self.requests):
                return
            # A connection per request: after a stop, a new one is refused, never half-served.
            with client(self.node) as api:
                with self._lock:
                    self._active += 1
                sent = time.monotonic()
                try:
                    result: Any = api.inference.infer(self.cid, self.requests[index], SHARDED)
                except (ApiError, DaemonNotRunningError, DaemonTimeoutError) as exc:
                    result = exc
                answered = time.monotonic()
                with self._lock:
                    self._active -= 1
                    self.outcomes.append((index, sent, answered, result))


@pytest.mark.multinode
def test_sigterm_to_a_replica_and_to_the_requester_in_the_middle_of_sharded_requests(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    a = start_daemon("a", wait=False)
    b, c, d = (start_daemon(n, wait=False) for n in "bcd")
    nodes = [a, b, c, d]
    for node in nodes:
        node.wait_ready()
    apis = {node.peer_id: client(node) for node in nodes}
    try:
        for i, x in enumerate(nodes):
            for y in nodes[i + 1 :]:
                apis[x.peer_id].peers.connect(y.addr)
        model_path = build_transformer(tmp_path / "tf", layers=4, d_model=128, ff=512)
        owner = apis[a.peer_id]
        key = owner.keys.new_key("acme")
        cid = owner.models.publish(PublishRequest(dir=str(tmp_path / "tf"), key="acme")).cid
        for node in (b, c, d):
            apis[node.peer_id].keys.trust(key.public_key, "acme")
            apis[node.peer_id].models.fetch(cid)
        plan = owner.shards.plan(PlanRequest(cid=cid, stages=2, peers=[b.peer_id, c.peer_id]))["plan"]
        for node, stage in ((b, 0), (c, 1), (d, 1)):
            apis[node.peer_id].shards.serve(ServeRequest(cid=cid, stage=stage, plan=plan))

        def replicas() -> list[list[str]]:
            listing = owner.shards.list(cid=cid)
            found = next(p for p in listing["plans"] if p["plan"] == plan)
            return [sorted(s.get("peers", [])) for s in found["stages"]]

        wait_for(
            "both replicas of stage 1 to be known",
            lambda: replicas() == [[b.peer_id], sorted([c.peer_id, d.peer_id])],
        )
    finally:
        for api in apis.values():
            api.close()

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)

    def sample() -> dict[str, np.ndarray]:
        ids = rng.integers(0, 100, (8, 64))
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}

    def check(stream: Stream) -> None:
        for index, _, _, result in stream.outcomes:
            if isinstance(result, dict):
                (expected,) = session.run(None, stream.requests[index])
                assert np.abs(result["hidden"] - expected).max() <= 1e-4, index

    # A replica of stage 1 is stopped gracefully in the middle: nothing is lost.
    with Stream(a, cid, [sample() for _ in range(60)]) as stream:
        wait_for("a few answers", lambda: stream.done() >= 10)
        assert c.stop(signal.SIGTERM) == 0, c.log()
    check(stream)
    failures = [o[3] for o in stream.outcomes if not isinstance(o[3], dict)]
    assert failures == [] and stream.done() == 60

    # The requester itself is stopped in the middle: what it accepted, it answers.
    with Stream(a, cid, [sample() for _ in range(400)]) as stream:
        wait_for("a few answers", lambda: stream.done() >= 10)
        wait_for("requests in flight", lambda: stream.active() >= 2, interval=0.002)
        stopped_at = time.monotonic()
        assert a.stop(signal.SIGTERM, timeout=30) == 0, a.log()
    check(stream)
    errors = [o[3] for o in stream.outcomes if isinstance(o[3], ApiError | DaemonTimeoutError)]
    assert errors == [], errors  # never a 5xx, never a hang: served or refused
    in_flight = [o for o in stream.outcomes if o[1] < stopped_at < o[2] and isinstance(o[3], dict)]
    assert in_flight, "no request was in flight at the SIGTERM"
    refused = [o for o in stream.outcomes if isinstance(o[3], DaemonNotRunningError)]
    # Refused only what came after the stop (a little slack for thread switches before connecting).
    assert refused and all(o[1] >= stopped_at - 0.25 for o in refused), (stopped_at, refused)


async def test_a_draining_stage_server_finishes_runs_in_flight_and_refuses_new_ones(
    mlp: Model,  # noqa: F811
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What the node does with its stage server on SIGTERM, on the mock clock over memory channels."""
    rng = np.random.default_rng(2)
    async with net() as n:
        client = await n.node(server_cls=None, router={"hop_timeout_s": 10.0})
        slow = await n.node(offload=stalling(2.0))  # each run takes 2 s: the first RUN is in flight
        other, last = await n.node(), await n.node()
        route = await serve(mlp, 2, [[slow, other], [last]])
        router, server = client.router, slow.server
        assert router is not None and server is not None
        first, second = mlp.feeds(1, rng), mlp.feeds(2, rng)
        answers: dict[str, dict[str, np.ndarray]] = {}
        drained_at: list[float] = []
        start = trio.current_time()

        async def ask(name: str, feeds: dict[str, np.ndarray]) -> None:
            answers[name] = await router.infer(route, cid(2), feeds)

        async def drain() -> None:
            await server.drain()
            drained_at.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "first", first)
            await trio.sleep(0.5)  # the first RUN is running on `slow`
            nursery.start_soon(drain)
            await trio.sleep(0.1)
            await ask("second", second)  # refused by `slow` as busy: served by `other`
            assert not drained_at  # `slow` still has the first RUN
        assert_close(answers["first"], mlp.expected(first))
        assert_close(answers["second"], mlp.expected(second))
        assert drained_at and drained_at[0] - start >= 2.0
        loads = {s.stage: s for s in other.server.loads()}  # type: ignore[union-attr]
        assert loads[0].served == 1  # the second request, refused by `slow` while it drained
        assert {s.stage: (s.served, s.failed) for s in server.loads()} == {0: (1, 0)}
