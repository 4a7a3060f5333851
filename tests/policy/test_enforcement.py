"""The enforcement hooks: stage RUNs over in-memory channels (real framing, real ONNX Runtime
stages, trio's mock clock), assignments between real hosts, and finding 9 (what an assignment may
make a node fetch and pin)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import trio
import trio.testing
from libp2p.crypto.keys import KeyPair
from multiaddr import Multiaddr

from accel_node.config import PolicySection
from accel_node.models.backend import BlockSink, BlockSource, ContentBackend
from accel_node.models.errors import ModelError
from accel_node.models.keys import KeyFiles
from accel_node.models.service import Limits, ModelService
from accel_node.models.trust import TrustStore
from accel_node.policy import ASSIGN, COMPUTE, PolicyService
from accel_node.policy.quota import AssignQuota
from accel_node.shard.assign import ASSIGN_PROTOCOL, DENIED, assign, assignment_handler
from accel_node.shard.errors import AssignmentError, ShardError
from accel_node.shard.partition import partition
from accel_node.shard.retention import Retention
from accel_node.shard.router import ShardRouter
from accel_node.shard.runner import inline
from accel_node.shard.server import StageServer
from accel_node.store import AsyncStore
from p2p.bulk import MemoryNetwork
from p2p.content import CID, BlockStore, import_bytes
from p2p.events import POLICY_DENIED, TOKEN_USED, SecurityEvent
from p2p.host import HostSettings, build_host, dial, run_host
from p2p.identity import generate_identity, peer_id_of
from tests.support.modelzoo import Zoo, zoo  # noqa: F401

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
MODEL = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


async def policy_service(
    tmp_path: Path, events: list[SecurityEvent], key_pair: KeyPair | None = None, **settings: Any
) -> PolicyService:
    store = await AsyncStore.open(tmp_path / "policy.db")
    keys = key_pair or generate_identity()
    settings_ = PolicySection(**settings)
    service = PolicyService(
        key_pair=keys, store=store, settings=settings_, home=tmp_path, events=events.append
    )
    await service.load()
    return service


async def test_stage_runs_are_refused_without_leave_and_served_with_a_token(
    zoo: Zoo,  # noqa: F811
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = onnx.load(str(zoo.mlp(hidden=64, out=32)))
    stages = partition(model, stages=2).stages
    events: list[SecurityEvent] = []
    server_keys = generate_identity()
    policy = await policy_service(tmp_path, events, server_keys)
    network = MemoryNetwork()
    server_id = peer_id_of(server_keys)
    client_id = peer_id_of(generate_identity())
    server = StageServer(  # stage servers sign receipts with their identity
        network.transport(server_id), offload=inline, hop_timeout_s=5.0, retention=Retention(server_keys)
    )
    server.allow = policy.allows(COMPUTE, protocol="shard")
    router = ShardRouter(network.transport(client_id), offload=inline, hop_timeout_s=5.0)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 64), dtype=np.float32)}
    async with trio.open_nursery() as nursery:
        for transport in (server.transport, router.transport):
            await nursery.start(transport.run)
        await nursery.start(server.run)
        await nursery.start(router.run)
        for index, stage in enumerate(stages):
            await server.serve("bafy-mlp", index, stage.model_bytes, stage)
        route = [[server_id], [server_id]]  # stage 1 is reached from the server itself: always allowed

        with pytest.raises(ShardError):
            await router.infer(route, "bafy-mlp", feeds, timeout_s=20)
        denied = [e for e in events if e.kind == POLICY_DENIED]
        assert denied and {(e.peer, e.details["action"], e.protocol) for e in denied} == {
            (str(client_id), COMPUTE, "shard")
        }
        assert server.loads()[0].served == 0  # refused before anything ran

        token = policy.issue(str(client_id), [COMPUTE], 3600)
        assert policy.accept(str(client_id), [token.encode()]) == [(token.id, "accepted")]
        await trio.sleep(600)  # the router's back-off of the refusing replica passes (mock clock)
        outputs = await router.infer(route, "bafy-mlp", feeds, timeout_s=20)
        assert next(iter(outputs.values())).shape == (2, 32)
        assert [e.details.get("action") for e in events if e.kind == TOKEN_USED][-1] == COMPUTE
        nursery.cancel_scope.cancel()


async def test_assignments_need_the_assign_action(tmp_path: Path) -> None:
    events: list[SecurityEvent] = []
    policy = await policy_service(tmp_path, events)
    calls: list[str] = []

    async def serve(model: str, stage: int, plan: str, assigner: Any) -> dict[str, Any]:
        calls.append(str(assigner))
        return {"stage_cid": "stage"}

    planner, worker = (build_host(generate_identity(), HostSettings(listen_addrs=LOOPBACK)) for _ in range(2))
    async with trio.open_nursery() as nursery:
        await nursery.start(run_host, planner, LOOPBACK)
        addrs = await nursery.start(run_host, worker, LOOPBACK)
        await dial(planner, worker.get_id(), addrs[0], timeout_s=5)
        worker.set_stream_handler(ASSIGN_PROTOCOL, assignment_handler(serve, allow=policy.allows(ASSIGN)))
        with pytest.raises(AssignmentError, match=DENIED):
            await assign(planner, worker.get_id(), model=MODEL, plan="plan", stage=0)
        assert calls == [] and [(e.kind, e.peer) for e in events] == [(POLICY_DENIED, str(planner.get_id()))]

        token = policy.issue(str(planner.get_id()), [ASSIGN], 3600)
        policy.accept(str(planner.get_id()), [token.encode()])
        assert await assign(planner, worker.get_id(), model=MODEL, plan="plan", stage=0) == "stage"
        assert calls == [str(planner.get_id())]
        nursery.cancel_scope.cancel()


# -- finding 9: fetch and pin within bounds, only once complete, unpinned on failure -----------------------


class Blocks(BlockSource):
    def __init__(self, blocks: dict[CID, bytes], *, fail_after: int | None = None) -> None:
        self.blocks = blocks
        self.fail_after = fail_after
        self.served = 0

    async def fetch(self, cids: Sequence[CID], put: BlockSink) -> None:
        for cid in cids:
            if self.fail_after is not None and self.served >= self.fail_after:
                raise ModelError("the provider went away")
            self.served += 1
            await put(cid, self.blocks[cid])


class Backend(ContentBackend):
    name = "test"

    def __init__(self) -> None:
        self.next: Blocks | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    async def publish(self, roots: Sequence[CID]) -> None: ...
    async def announce(self, roots: Sequence[CID]) -> None: ...

    async def source(self, root: CID) -> BlockSource:
        assert self.next is not None
        return self.next


async def test_content_is_fetched_within_its_bound_and_pinned_only_when_complete(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    blocks = BlockStore(tmp_path / "ipfs", max_bytes=1 << 30, fsync=False)
    backend = Backend()
    models = ModelService(
        home=tmp_path, store=store, blocks=blocks, backend=backend,
        trust=TrustStore(store, KeyFiles(tmp_path / "keys")), limits=Limits(1 << 20, 1 << 30),
    )  # fmt: skip
    big, big_blocks = import_bytes(np.random.default_rng(1).bytes(4 << 20))  # 4 MiB: 16+ blocks
    small, small_blocks = import_bytes(b"a plan" * 100)

    # Larger than allowed: abandoned after about max_size bytes, not fetched whole, nothing pinned.
    backend.next = Blocks(big_blocks)
    with pytest.raises(ModelError, match="larger than"):
        await models.get_content(str(big.root), max_size=256 * 1024)
    assert backend.next.served <= 3 and not blocks.is_pinned(big.root)

    # The provider fails half way: nothing pinned (on the old code the root stayed pinned).
    backend.next = Blocks(big_blocks, fail_after=5)
    with pytest.raises(ModelError, match="went away"):
        await models.get_content(str(big.root), max_size=8 << 20)
    assert not blocks.is_pinned(big.root)

    # Complete and within bounds: pinned; dropped again when it turns out unusable.
    backend.next = Blocks(small_blocks)
    assert await models.get_content(str(small.root), max_size=1 << 20) == b"a plan" * 100
    assert blocks.is_pinned(small.root)
    await models.drop_content(str(small.root))
    assert not blocks.is_pinned(small.root)


async def test_the_assignment_quota_is_per_assigner_and_persists(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    quota = AssignQuota(store, 1000)
    assert await quota.left("alice") == 1000
    await quota.record("bafy-plan-1", "alice", 600)
    await quota.record("bafy-plan-1", "alice", 600)  # the same content counts once
    await quota.record("bafy-plan-2", "alice", 500)
    assert await quota.left("alice") == 0 and await quota.left("bob") == 1000
    assert await AssignQuota(store, 2000).left("alice") == 900
