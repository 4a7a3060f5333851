"""Verification that cannot be told apart (issue 11, finding 1): signed receipts on every micro-batch,
after-the-fact audits, and evidence any node can check.

On main (335e76e) a spot check was a hop-by-hop run with empty routes from the router; a replica lying
only when it forwards (non-empty route) passed every check. Here the selective liar is caught, a liar
lying on a random fraction of requests is caught at the rate the audit probability predicts, honest
stages are never flagged (fp16 included), broken receipt chains are detected, and evidence records and
receipts are verified strictly. In-memory chains on trio's mock clock (see ``test_seam``)."""

from __future__ import annotations

import contextvars
import random
from dataclasses import replace
from typing import Any

import cbor2
import numpy as np
import pytest
import trio
import trio.testing
from libp2p.peer.id import ID

from accel_node.shard.errors import ShardVerificationError, ShardWireError
from accel_node.shard.evidence import (
    MAX_EVIDENCE_BYTES,
    EvidenceError,
    Finding,
    decode_evidence,
    make_evidence,
    verify,
)
from accel_node.shard.gossip import TOPIC, EvidenceGossip
from accel_node.shard.receipts import (
    ChainBreak,
    Receipt,
    ReceiptError,
    check_chain,
    decode_receipt,
    sign_receipt,
    tensor_digest,
)
from accel_node.shard.retention import Retention
from accel_node.shard.runner import StageRunner, inline
from accel_node.shard.server import StageServer
from accel_node.shard.spotcheck import LocalReferees, Tolerance
from accel_node.shard.wire import MAGIC, PREFIX, Kind, Message, decode_message, encode_bytes
from p2p.identity import generate_identity
from p2p.penalties import PenaltyBox
from tests.shard.test_seam import LyingServer, Model, assert_close, cid, mlp, net, serve  # noqa: F401
from tests.support.modelzoo import zoo  # noqa: F401

Arrays = dict[str, np.ndarray[Any, Any]]
_route: contextvars.ContextVar[bool] = contextvars.ContextVar("forwarding", default=False)


def shifted(runner: StageRunner, out: Arrays) -> Arrays:
    return {n: v + np.float32(0.5) if n in runner.output_names and v.dtype.kind == "f" else v
            for n, v in out.items()}  # fmt: skip


class SelectiveLiar(StageServer):
    """Finding 1's liar: lies only on RUNs with a non-empty route (pipelined traffic, never the old
    spot check's hop-by-hop runs). ONNX Runtime runs inline, in the RUN's own task and context."""

    async def process(self, message: Message, upstream: ID) -> Message:
        _route.set(bool(message.route))
        return await super().process(message, upstream)

    def run_stage(self, runner: StageRunner, frame: Arrays) -> Arrays:
        out = super().run_stage(runner, frame)
        return shifted(runner, out) if _route.get() else out


class SometimesLiar(StageServer):
    """Lies on a random fraction ``fraction`` of the micro-batches it computes (its own seeded coin)."""

    fraction = 0.3
    coin = random.Random(11)
    lies = 0

    def run_stage(self, runner: StageRunner, frame: Arrays) -> Arrays:
        out = super().run_stage(runner, frame)
        if self.coin.random() < self.fraction:
            type(self).lies += 1
            return shifted(runner, out)
        return out


def local_stages(model: Model, k: int) -> dict[int, Any]:
    return {i: (s.model_bytes, s) for i, s in enumerate(model.parts[k].stages)}


async def test_a_liar_that_lies_only_when_forwarding_is_caught(
    mlp: Model,  # noqa: F811
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = np.random.default_rng(5)
    published: list[bytes] = []
    async with net() as n:
        router_options = {"spot_check_p": 0.5, "rng": random.Random(1), "publish_evidence": published.append}
        client = await n.node(server_cls=None, router=router_options)
        first, last = await n.node(), await n.node()
        liar = await n.node(server_cls=SelectiveLiar)
        router = client.router
        assert router is not None
        route = await serve(mlp, 3, [[first], [liar], [last]])
        local = local_stages(mlp, 3)
        for _ in range(20):
            if client.penalties.excluded(liar.id):
                break
            await router.infer(route, cid(3), mlp.feeds(2, rng), local_stages=local)
            await router.auditor.wait_idle()
        assert client.penalties.excluded(liar.id)
        assert router.stats.penalised == [str(liar.id)] and router.stats.lies_caught == 1
        assert len(published) == 1
        # any node holding the stage verifies the evidence on its own, trusting nobody
        evidence = decode_evidence(published[0])
        assert evidence.receipt.signer == liar.id and evidence.receipt.stage == 1
        stage = StageRunner.load(*local[1])
        verdict = verify(evidence, stage.run, Tolerance(1e-4, 1e-3))
        assert verdict.finding == Finding.PROVEN and verdict.max_abs_diff == pytest.approx(0.5, abs=1e-3)


async def test_a_liar_on_a_random_fraction_is_caught_at_the_predicted_rate(
    mlp: Model,  # noqa: F811
    autojump_clock: trio.testing.MockClock,
) -> None:
    """200 micro-batches, the liar lies on f = 0.3 of them, each stage is audited with p = 0.5: catches
    follow Binomial(200, f * p = 0.15), mean 30, sd 5.05; the interval [15, 45] is 3 sd each side (the
    seeds are fixed, so the test is deterministic). Honest stages audited just as often: never flagged."""
    rng = np.random.default_rng(6)
    async with net() as n:
        router_options = {"spot_check_p": 0.5, "rng": random.Random(2), "penalties": PenaltyBox(limit=10**6)}
        client = await n.node(server_cls=None, router=router_options)
        first, last = await n.node(), await n.node()
        liar = await n.node(server_cls=SometimesLiar)
        router = client.router
        assert router is not None
        route = await serve(mlp, 3, [[first], [liar], [last]])
        local = local_stages(mlp, 3)
        SometimesLiar.lies = 0
        for _ in range(200):
            await router.infer(route, cid(3), mlp.feeds(1, rng), local_stages=local)
        await router.auditor.wait_idle()
        stats = router.stats
        assert 40 <= SometimesLiar.lies <= 80  # the liar did lie on about 30 %
        assert 15 <= stats.lies_caught <= 45, stats
        assert 240 <= stats.spot_checks <= 360  # 600 stage results, half of them audited
        assert set(stats.penalised) == {str(liar.id)} and len(stats.penalised) == stats.lies_caught


@pytest.mark.parametrize("fp16", [False, True])
async def test_honest_stages_are_never_flagged(
    fp16: bool,
    mlp: Model,  # noqa: F811
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = np.random.default_rng(7)
    async with net() as n:
        client = await n.node(server_cls=None, router={"spot_check_p": 1.0})
        nodes = [await n.node() for _ in range(4)]
        router = client.router
        assert router is not None
        route = await serve(mlp, 3, [[nodes[0]], [nodes[1], nodes[2]], [nodes[3]]])
        for i in range(6):  # stage 1 refereed locally, or by the other replica
            local = local_stages(mlp, 3) if i % 2 else {}
            feeds = mlp.feeds(3, rng)
            got = await router.infer(route, cid(3), feeds, local_stages=local, compress_fp16=fp16)
            if not fp16:
                assert_close(got, mlp.expected(feeds))
            await router.auditor.wait_idle()
        assert router.stats.spot_checks == 18 and router.stats.penalised == []
        assert router.stats.lies_caught == router.stats.mismatches == router.stats.audit_failures == 0


async def test_a_stage_without_receipts_or_retained_data_is_caught(
    mlp: Model,  # noqa: F811
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = np.random.default_rng(8)
    async with net() as n:
        client = await n.node(server_cls=None, router={"spot_check_p": 1.0})
        first, last = await n.node(), await n.node(retention=None)  # signs nothing
        router = client.router
        assert router is not None
        route = await serve(mlp, 2, [[first], [last]])
        with pytest.raises(ShardVerificationError, match="1 receipts for 2 stages"):
            await router.infer(route, cid(2), mlp.feeds(2, rng))
        assert router.stats.receipt_breaks == 1 and router.stats.penalised == [str(last.id)]

        forgetful = await n.node(retention=None)
        assert forgetful.server is not None
        forgetful.server.retention = Retention(generate_identity(), max_bytes=0)  # keeps nothing
        with pytest.raises(ShardVerificationError, match="not in its route"):  # signed by another key
            await router.infer(await serve(mlp, 2, [[first], [forgetful]]), cid(2), mlp.feeds(2, rng))


async def test_a_stage_that_cannot_produce_committed_data_is_penalised(
    mlp: Model,  # noqa: F811
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = np.random.default_rng(9)
    async with net() as n:
        client = await n.node(server_cls=None, router={"spot_check_p": 1.0})
        first, last = await n.node(), await n.node()
        assert last.server is not None and last.server.retention is not None
        last.server.retention.max_bytes = 0  # signs receipts, keeps nothing
        router = client.router
        assert router is not None
        route = await serve(mlp, 2, [[first], [last]])
        await router.infer(route, cid(2), mlp.feeds(2, rng))
        await router.auditor.wait_idle()
        assert router.stats.audit_failures == 1 and router.stats.penalised == [str(last.id)]


# -- receipts and their chain, pure ---------------------------------------------------------------------

RID = bytes(range(16))


def receipt(key: Any, stage: int, inp: bytes, out: bytes, *, model: str = "bafy-m") -> Receipt:
    return sign_receipt(key, request_id=RID, model=model, stage=stage, micro_batch=0, fp16=False,
                        input_digest=inp, output_digest=out)  # fmt: skip


def test_the_digest_covers_names_dtypes_shapes_and_bytes() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    base = tensor_digest({"a": x, "b": x})
    assert base == tensor_digest({"b": x, "a": x})  # sorted names
    for other in ({"a": x, "c": x}, {"a": x.reshape(3, 2), "b": x}, {"a": x.astype(np.float64), "b": x},
                  {"a": x + 1, "b": x}, {"a": x}):  # fmt: skip
        assert tensor_digest(other) != base


def test_a_receipt_chain_is_checked_link_by_link() -> None:
    keys = [generate_identity() for _ in range(3)]
    ids = [ID.from_pubkey(k.public_key) for k in keys]
    d = [bytes([i]) * 32 for i in range(4)]
    good = tuple(receipt(keys[i], i, d[i], d[i + 1]).raw for i in range(3))
    route = tuple((p,) for p in ids)
    about = {"request_id": RID, "model": "bafy-m", "micro_batch": 0, "fp16": False, "route": route}

    def check(receipts: tuple[bytes, ...], **changes: Any) -> list[Receipt] | ChainBreak:
        args = {**about, "sent_digest": d[0], "result_digest": d[3], "result_sender": ids[2], **changes}
        return check_chain(receipts, **args)

    chain = check(good)
    assert isinstance(chain, list) and [r.signer for r in chain] == ids
    assert check(good[:2]) == ChainBreak("2 receipts for 3 stages", (ids[2],))
    broken = (good[0], receipt(keys[1], 1, d[0], d[2]).raw, good[2])
    assert check(broken) == ChainBreak("stages 0 and 1 committed to different activations", (ids[0], ids[1]))
    assert check(good, sent_digest=d[1]).blame == (ids[0],)  # type: ignore[union-attr]
    assert check(good, result_digest=d[0]).blame == (ids[2],)  # type: ignore[union-attr]
    swapped = (good[1], good[0], good[2])
    assert isinstance(check(swapped), ChainBreak)
    foreign = (good[0], receipt(generate_identity(), 1, d[1], d[2]).raw, good[2])
    assert "not in its route" in check(foreign).reason  # type: ignore[union-attr]
    other = (good[0], receipt(keys[1], 1, d[1], d[2], model="bafy-x").raw, good[2])
    assert "another request" in check(other).reason  # type: ignore[union-attr]


def test_receipts_are_decoded_strictly() -> None:
    key = generate_identity()
    good = receipt(key, 0, bytes(32), bytes(32))
    assert decode_receipt(good.raw) == good
    outer = cbor2.loads(good.raw)
    bad = [
        b"\xff" * 10,
        b"x" * 1025,
        cbor2.dumps({**outer, "extra": 1}, canonical=True),
        cbor2.dumps({**outer, "rc": {**outer["rc"], "s": 64}}, canonical=True),
        cbor2.dumps({**outer, "rc": {**outer["rc"], "i": b"short"}}, canonical=True),
        cbor2.dumps({**outer, "rc": {**outer["rc"], "o": bytes([1]) * 32}}, canonical=True),  # signature
        cbor2.dumps({**outer, "pubkey": generate_identity().public_key.serialize()}, canonical=True),
        cbor2.dumps({**outer, "rc": {**outer["rc"], "v": 2}}, canonical=True),
        cbor2.dumps([outer], canonical=True),
    ]
    for raw in bad:
        with pytest.raises(ReceiptError):
            decode_receipt(raw)
    noncanonical = cbor2.dumps(dict(reversed(list(outer.items()))))
    assert noncanonical != good.raw
    with pytest.raises(ReceiptError, match="canonical"):
        decode_receipt(noncanonical)


def test_messages_carry_bounded_receipts() -> None:
    x = {"h": np.ones((1, 4), np.float32)}
    run = Message(Kind.RUN, RID, model="m", route=(), reply_to=None, tensors=x, receipts=(b"r" * 300,))
    assert decode_message(encode_bytes(run)).receipts == (b"r" * 300,)
    for receipts in ((b"r" * 1025,), (b"",), (b"r",) * 65):
        with pytest.raises(ShardWireError):
            encode_bytes(replace(run, receipts=receipts))
    with pytest.raises(ShardWireError, match="carries no receipts"):
        encode_bytes(Message(Kind.ACK, RID, receipts=(b"r",)))
    audit = Message(Kind.AUDIT, RID, stage=2, model="m")
    assert decode_message(encode_bytes(audit)) == audit
    for bad in ([7], [b""], [b"r" * 1025], [b"r"] * 65, b"r"):
        with pytest.raises(ShardWireError):
            decode_message(with_header(replace(run, tensors={}), rc=bad))
    with pytest.raises(ShardWireError):  # receipts where the kind has none
        decode_message(with_header(Message(Kind.ACK, RID), rc=[b"r"]))


def with_header(message: Message, **fields: Any) -> bytes:
    """``message`` (without tensors) encoded with its header fields changed."""
    raw = encode_bytes(message)
    _, header_len, _ = PREFIX.unpack_from(raw)
    header = {**cbor2.loads(raw[PREFIX.size : PREFIX.size + header_len]), **fields}
    head = cbor2.dumps(header, canonical=True)
    return PREFIX.pack(MAGIC, len(head), 0) + head


# -- evidence, pure -------------------------------------------------------------------------------------


def committed(key: Any, inputs: Arrays, outputs: Arrays) -> Receipt:
    return receipt(key, 1, tensor_digest(inputs), tensor_digest(outputs))


def test_evidence_round_trip_and_refusals() -> None:
    key = generate_identity()
    inputs = {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}
    truth = {"y": inputs["x"] * 2}
    lie = {"y": inputs["x"] * 2 + 0.5}

    def runner(frame: Arrays) -> Arrays:
        return {"y": frame["x"] * 2}

    evidence = make_evidence(committed(key, inputs, lie), inputs, lie)
    again = decode_evidence(evidence.raw)
    assert again.receipt.signer == ID.from_pubkey(key.public_key)
    assert np.array_equal(again.outputs["y"], lie["y"])
    tolerance = Tolerance(1e-4, 1e-3)
    assert verify(again, runner, tolerance).finding == Finding.PROVEN
    assert verify(again, None, tolerance).finding == Finding.UNVERIFIABLE
    honest = make_evidence(committed(key, inputs, truth), inputs, truth)
    assert verify(honest, runner, tolerance).finding == Finding.UNFOUNDED

    with pytest.raises(EvidenceError, match="commits to"):  # tensors other than the committed ones
        make_evidence(committed(key, inputs, truth), inputs, lie)
    record = cbor2.loads(evidence.raw)
    tampered = [
        cbor2.dumps({**record, "out": [["y", "float32", [2, 4], (lie["y"] + 1).tobytes()]]}, canonical=True),
        cbor2.dumps({**record, "rc": evidence.raw[:10]}, canonical=True),
        cbor2.dumps({**record, "v": 2}, canonical=True),
        cbor2.dumps({**record, "in": [["x", "object", [2, 4], b""]]}, canonical=True),
        cbor2.dumps({**record, "in": [["x", "float32", [2, 5], inputs["x"].tobytes()]]}, canonical=True),
        evidence.raw[:-1],
        b"\x00" * (MAX_EVIDENCE_BYTES + 1),
    ]
    forged_key = cbor2.loads(evidence.receipt.raw)
    forged_key["pubkey"] = generate_identity().public_key.serialize()  # someone else's name on it
    tampered.append(cbor2.dumps({**record, "rc": cbor2.dumps(forged_key, canonical=True)}, canonical=True))
    for raw in tampered:
        with pytest.raises(EvidenceError):
            decode_evidence(raw)
    big = {"x": np.zeros((1, MAX_EVIDENCE_BYTES // 4), np.float32)}
    with pytest.raises(EvidenceError, match="limit"):
        make_evidence(committed(key, big, truth), big, truth)


# -- retention, pure -------------------------------------------------------------------------------------


def test_retention_is_bounded_in_bytes_count_and_time_and_answers_only_the_requester() -> None:
    now = [0.0]
    key = generate_identity()
    store = Retention(
        key, max_bytes=1000, keep_s=60.0, max_entries=3, max_bytes_per_requester=1000, clock=lambda: now[0]
    )
    requester, other = ID.from_pubkey(generate_identity().public_key), ID.from_pubkey(key.public_key)
    x = {"x": np.zeros(25, np.float32)}  # 100 bytes in, 100 out

    def run(i: int) -> Message:
        return Message(Kind.RUN, bytes([i]) * 16, stage=1, model="m", reply_to=requester, tensors=x)

    signed = store.commit(run(1), x)
    assert len(signed.receipts) == 1 and decode_receipt(signed.receipts[0]).signer == other
    audit = Message(Kind.AUDIT, bytes([1]) * 16, stage=1, model="m")
    answer = store.answer(audit, requester)
    assert answer.kind == Kind.RETAINED and answer.receipts == signed.receipts
    assert set(answer.tensors) == {"in/x", "out/x"}
    assert store.answer(audit, other).kind == Kind.FAIL  # only the requester reads its activations
    assert store.answer(replace(audit, model="n"), requester).kind == Kind.FAIL
    for i in range(2, 6):
        store.commit(run(i), x)
    assert len(store) == 3 and store.lookup(bytes([1]) * 16, 1) is None  # the oldest went first
    now[0] = 61.0
    assert store.lookup(bytes([5]) * 16, 1) is None and len(store) == 0 and store.bytes == 0
    small = Retention(key, max_bytes=450, max_bytes_per_requester=450, clock=lambda: now[0])
    for i in range(1, 4):
        small.commit(run(i), x)
    assert len(small) == 2 and small.bytes == 400


def test_a_flooding_requester_evicts_its_own_retained_entries_not_others() -> None:
    """Retention is shared by every requester; one that floods a stage must not push out what the
    others may still audit (the stage would be penalised by them for losing it)."""
    key = generate_identity()
    store = Retention(key, max_bytes=1000, max_bytes_per_requester=400, clock=lambda: 0.0)
    honest, flooder = (ID.from_pubkey(generate_identity().public_key) for _ in range(2))
    x = {"x": np.zeros(25, np.float32)}  # 200 bytes an entry

    def run(i: int, requester: ID) -> Message:
        return Message(Kind.RUN, bytes([i]) * 16, stage=1, model="m", reply_to=requester, tensors=x)

    store.commit(run(1, honest), x)
    for i in range(2, 40):
        store.commit(run(i, flooder), x)
    assert store.lookup(bytes([1]) * 16, 1) is not None  # the honest requester's entry stays
    assert store.bytes == 600 and len(store) == 3  # the flooder holds its share: its two newest
    assert store.lookup(bytes([39]) * 16, 1) is not None and store.lookup(bytes([37]) * 16, 1) is None


# -- gossip of evidence --------------------------------------------------------------------------------


class FakeGossip:
    """Records what is published (the receive side is fed through ``offer``/``check``)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def subscribe(self, topic: str) -> object:
        return self

    async def get(self) -> object:  # nobody else publishes here
        await trio.sleep_forever()

    async def publish(self, topic: str, data: bytes) -> None:
        self.published.append((topic, data))


async def test_gossiped_evidence_excludes_a_proven_liar_and_nobody_else(
    mlp: Model,  # noqa: F811
    autojump_clock: trio.testing.MockClock,
) -> None:
    local = local_stages(mlp, 2)
    runner = StageRunner.load(*local[0])
    liar_key, honest_key = generate_identity(), generate_identity()
    liar, honest = ID.from_pubkey(liar_key.public_key), ID.from_pubkey(honest_key.public_key)
    frame = {"x": np.random.default_rng(1).standard_normal((1, 64), dtype=np.float32)}
    truth = runner.run(frame)
    lie = shifted(runner, truth)

    def record(key: Any, out: Arrays) -> bytes:
        rc = sign_receipt(key, request_id=RID, model=cid(2), stage=0, micro_batch=0, fp16=False,
                          input_digest=tensor_digest(frame), output_digest=tensor_digest(out))  # fmt: skip
        return make_evidence(rc, frame, out).raw

    async def stages(plan: str) -> dict[int, Any] | None:
        return local if plan == cid(2) else None

    events: list[Any] = []
    box = PenaltyBox(limit=1)
    gossip_net = FakeGossip()
    me = ID.from_pubkey(generate_identity().public_key)
    gossip = EvidenceGossip(
        gossip_net, local_id=me, stages=stages, referees=LocalReferees(inline), penalties=box,
        tolerance=Tolerance(1e-4, 1e-3), offload=inline, events=events.append, max_pending=2,
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(gossip.run)
        proof, unfounded = record(liar_key, lie), record(honest_key, truth)
        assert gossip.offer(honest, proof) and not gossip.offer(honest, proof)  # de-duplicated
        assert gossip.offer(liar, unfounded)  # a liar accusing an honest peer
        assert not gossip.offer(honest, b"\x00" * (MAX_EVIDENCE_BYTES + 1))  # oversize, never decoded
        await trio.testing.wait_all_tasks_blocked()
        assert box.excluded(liar) and not box.excluded(honest)
        assert gossip.stats.proven == 1 and gossip.stats.unfounded == 1 and gossip.stats.dropped == 2
        assert [(e.kind, e.peer) for e in events] == [("cheating", str(liar))]
        tampered = bytearray(proof)
        tampered[-1] ^= 1
        assert await gossip.check(honest, bytes(tampered)) is None and gossip.stats.refused == 1
        assert events[-1].kind == "bad-content" and not box.excluded(honest)
        gossip.publish(proof)  # the auditor's own: queued, sent on the topic
        await trio.testing.wait_all_tasks_blocked()
        assert gossip_net.published == [(TOPIC, proof)]
        nursery.cancel_scope.cancel()
