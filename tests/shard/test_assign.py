"""Stage assignments over /accel/shard/assign/1.0.0 between real py-libp2p hosts on 127.0.0.1."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import trio
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from multiaddr import Multiaddr

from accel_node.shard.assign import ASSIGN_PROTOCOL, assign, assignment_handler
from accel_node.shard.errors import AssignmentError, PlanError
from p2p.host import HostSettings, build_host, dial, run_host
from p2p.identity import generate_identity

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
MODEL = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


async def closed_without_answer(stream: Any) -> bool:
    try:
        return bool(await stream.read(100) == b"")
    except (StreamEOF, StreamReset):
        return True


async def test_assignments_are_served_refused_and_malformed_ones_reset() -> None:
    calls: list[tuple[str, int, str]] = []

    async def serve(model: str, stage: int, plan: str, assigner: Any) -> dict[str, Any]:
        calls.append((model, stage, plan))
        if plan == "bad-plan":
            raise PlanError("plan does not fit the model")
        return {"stage_cid": f"stage-{stage}"}

    planner, worker = (build_host(generate_identity(), HostSettings(listen_addrs=LOOPBACK)) for _ in range(2))
    async with trio.open_nursery() as nursery:
        await nursery.start(run_host, planner, LOOPBACK)
        worker_addrs = await nursery.start(run_host, worker, LOOPBACK)
        await dial(planner, worker.get_id(), worker_addrs[0], timeout_s=5)

        # Without the handler (accept_assignments off) the peer cannot be asked at all.
        with pytest.raises(AssignmentError):
            await assign(planner, worker.get_id(), model=MODEL, plan="plan", stage=0)

        worker.set_stream_handler(ASSIGN_PROTOCOL, assignment_handler(serve))
        assert await assign(planner, worker.get_id(), model=MODEL, plan="plan", stage=2) == "stage-2"
        with pytest.raises(AssignmentError, match="plan does not fit"):
            await assign(planner, worker.get_id(), model=MODEL, plan="bad-plan", stage=0)
        assert calls == [(MODEL, 2, "plan"), (MODEL, 0, "bad-plan")]

        # Oversize, garbage and ill-typed requests: the stream is reset, serve is never called.
        for payload in (
            struct.pack(">I", 1 << 30),
            struct.pack(">I", 4) + b"\xff\xff\xff\xff",
            struct.pack(">I", 10) + b"\xa1\x65stage\x62-1",  # {"stage": "-1"}: no model, bad stage
        ):
            stream = await planner.new_stream(worker.get_id(), [ASSIGN_PROTOCOL])
            await stream.write(payload)
            with trio.fail_after(5):
                assert await closed_without_answer(stream)
        assert len(calls) == 2
        nursery.cancel_scope.cancel()
