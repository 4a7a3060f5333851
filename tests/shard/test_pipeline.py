"""Sharded pipeline inference, data plane: activation messages (sans-IO), stage servers pushing activations
from stage to stage over encrypted bulk channels between real py-libp2p hosts on 127.0.0.1, the router
(micro-batches, exactly-once results, fail-over when a replica dies, spot checks that catch a lying
replica), malformed and oversize frames, fp16 compression; all with real ONNX Runtime sessions."""

from __future__ import annotations

import os
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import cbor2
import numpy as np
import onnx
import onnxruntime as ort  # type: ignore[import-untyped]
import pytest
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from multiaddr import Multiaddr
from trio_typing import TaskStatus

from accel_node.models.manifest import TensorSpec
from accel_node.shard.errors import ShardRequestError, ShardRouteError, ShardWireError
from accel_node.shard.frames import frames_agree, merge_batches, split_batch
from accel_node.shard.partition import Partition, partition
from accel_node.shard.parts import FIRST, LAST, MORE, MSG, Reassembler, split_frames
from accel_node.shard.retention import Retention
from accel_node.shard.router import ShardRouter
from accel_node.shard.runner import StageRunner
from accel_node.shard.server import RESULT_PURPOSE, SHARD_PURPOSE, StageServer
from accel_node.shard.wire import (
    INVALID,
    MALFORMED,
    PREFIX,
    UNKNOWN_STAGE,
    Encoded,
    Kind,
    Message,
    WireLimits,
    decode_message,
    encode_bytes,
    encode_message,
)
from p2p.bulk import BulkService, Channel
from p2p.bulk.framing import HEADER
from p2p.host import HostSettings, build_host, dial, run_host
from p2p.identity import generate_identity
from p2p.penalties import PenaltyBox
from tests.support.modelzoo import Zoo, zoo  # noqa: F401

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
TOLERANCE = 1e-4
PEER_A = ID(b"\x00\x24\x08\x01\x12\x20" + bytes(range(32)))
PEER_B = ID(b"\x00\x24\x08\x01\x12\x20" + bytes(range(1, 33)))


# -- wire (sans-IO) ---------------------------------------------------------------------------------


def sample_tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "f32": rng.standard_normal((3, 5, 7), dtype=np.float32),
        "f16": rng.standard_normal((2, 3)).astype(np.float16),
        "f64": rng.standard_normal(4),
        "i64": rng.integers(-(2**40), 2**40, (2, 9), dtype=np.int64),
        "i32": rng.integers(-5, 5, (5,), dtype=np.int32),
        "i8": rng.integers(-5, 5, (3,), dtype=np.int8),
        "u8": rng.integers(0, 255, (1, 1, 1, 3), dtype=np.uint8),
        "mask": rng.integers(0, 2, (2, 3)).astype(bool),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
    }


def run_message(**overrides: Any) -> Message:
    fields: dict[str, Any] = dict(
        kind=Kind.RUN, request_id=os.urandom(16), stage=1, tag=7, model="bafy-model", micro_batch=3,
        route=((PEER_A, PEER_B), (PEER_B,)), reply_to=PEER_A,
        addrs={PEER_A: (Multiaddr("/ip4/127.0.0.1/tcp/4001"),)}, ttl_ms=5000,
        tensors=sample_tensors(np.random.default_rng(0)),
    )  # fmt: skip
    fields.update(overrides)
    return Message(**fields)


def test_messages_round_trip_with_zero_copy_tensors() -> None:
    message = run_message()
    data = encode_bytes(message)
    decoded = decode_message(data)
    for name in ("kind", "request_id", "stage", "tag", "model", "micro_batch", "route", "reply_to", "ttl_ms"):
        assert getattr(decoded, name) == getattr(message, name), name
    assert dict(decoded.addrs) == dict(message.addrs)
    assert list(decoded.tensors) == list(message.tensors)
    for name, value in message.tensors.items():
        got = decoded.tensors[name]
        assert got.shape == value.shape and got.dtype == value.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got, value)
    view = np.frombuffer(data, dtype=np.uint8)
    for name in ("f32", "i64", "f64"):  # views of the received bytes, 8-byte aligned, read-only
        got = decoded.tensors[name]
        assert np.shares_memory(got, view) and not got.flags.writeable
        assert got.__array_interface__["data"][0] % 8 == 0
    for kind, code, reason in ((Kind.ACK, "", ""), (Kind.FAIL, "exhausted", "no replica")):
        small = Message(kind, os.urandom(16), stage=2, tag=9, code=code, reason=reason)
        back = decode_message(encode_bytes(small))
        assert (back.kind, back.request_id, back.stage, back.tag, back.code, back.reason) == (
            kind, small.request_id, 2, 9, small.code, small.reason
        )  # fmt: skip
        assert len(encode_bytes(small)) < 100
    result = Message(
        Kind.RESULT, os.urandom(16), stage=2, model="m", tensors={"y": np.ones((2, 2), np.float32)}
    )
    np.testing.assert_array_equal(decode_message(encode_bytes(result)).tensors["y"], np.ones((2, 2)))


def test_encoding_references_the_tensors_without_copying_them() -> None:
    x = np.random.default_rng(1).standard_normal((64, 64), dtype=np.float32)
    encoded = encode_message(Message(Kind.RESULT, bytes(16), tensors={"x": x}))
    assert any(isinstance(b, memoryview) and np.shares_memory(np.asarray(b), x) for b in encoded.buffers)
    assert encoded.size == sum(len(memoryview(b).cast("B")) for b in encoded.buffers)


def test_fp16_compression_halves_float32_activations() -> None:
    rng = np.random.default_rng(2)
    tensors: dict[str, np.ndarray] = {
        "h": rng.standard_normal((4, 16, 64), dtype=np.float32),
        "ids": np.arange(8, dtype=np.int64),
    }
    plain = encode_message(Message(Kind.RESULT, bytes(16), tensors=tensors))
    packed = encode_message(Message(Kind.RESULT, bytes(16), fp16=True, tensors=tensors))
    assert packed.size < plain.size * 0.55
    back = decode_message(b"".join(bytes(b) for b in packed.buffers)).tensors
    assert back["h"].dtype == np.float32 and back["ids"].dtype == np.int64
    np.testing.assert_array_equal(back["ids"], tensors["ids"])
    assert float(np.max(np.abs(back["h"] - tensors["h"]))) < 4e-3  # fp16: ~3 significant digits


def frames_of(encoded: Encoded, max_payload: int) -> list[tuple[int, bytes]]:
    return [(t, b"".join(bytes(p) for p in parts)) for t, parts in split_frames(encoded, max_payload)]


@pytest.mark.parametrize("max_payload", [16, 100, 4096, 1 << 20])
def test_large_messages_are_split_into_parts_and_reassembled(max_payload: int) -> None:
    message = run_message()
    encoded = encode_message(message)
    frames = frames_of(encoded, max_payload)
    assert all(len(p) <= max_payload for _, p in frames)
    if encoded.size <= max_payload:
        assert [t for t, _ in frames] == [MSG]
    else:
        assert [t for t, _ in frames] == [FIRST] + [MORE] * (len(frames) - 2) + [LAST]
    reassembler = Reassembler()
    out = [reassembler.feed(t, p) for t, p in frames]
    assert all(o is None for o in out[:-1]) and out[-1] is not None
    np.testing.assert_array_equal(decode_message(out[-1]).tensors["f32"], message.tensors["f32"])
    for n in range(1, 3):  # a message of exactly two full frames
        exact = encode_message(Message(Kind.RESULT, bytes(16), tensors={"b": np.zeros(n, np.uint8)}))
        if exact.size % 2 == 0:
            frames = frames_of(exact, exact.size // 2)
            assert [t for t, _ in frames] == [FIRST, LAST]
            reassembler = Reassembler()
            assert reassembler.feed(*frames[0]) is None
            assert reassembler.feed(*frames[1]) == b"".join(p for _, p in frames)


def test_reassembly_is_bounded_and_recovers_after_errors() -> None:
    encoded = encode_message(run_message())
    frames = frames_of(encoded, 256)
    small = Reassembler(max_message_bytes=encoded.size - 1)
    with pytest.raises(ShardWireError, match="limit"):
        small.feed(*frames[0])  # refused from the prefix of the first part
    for t, p in frames[1:]:
        assert small.feed(t, p) is None  # the rest of that message is skipped
    ack_bytes = encode_bytes(Message(Kind.ACK, bytes(16)))
    assert small.feed(MSG, ack_bytes) == ack_bytes  # and the channel goes on
    r = Reassembler()
    with pytest.raises(ShardWireError, match="without its first part"):
        r.feed(MORE, b"x")
    with pytest.raises(ShardWireError, match="unexpected frame type"):
        r.feed(0x99, b"x")
    r.feed(*frames[0])
    with pytest.raises(ShardWireError, match="began before"):
        r.feed(MSG, ack_bytes)
    r.feed(*frames[0])
    with pytest.raises(ShardWireError, match="excess"):
        r.feed(LAST, bytes(encoded.size))  # more bytes than announced
    r.feed(*frames[0])
    with pytest.raises(ShardWireError, match="ended after"):
        r.feed(LAST, b"x")  # fewer
    with pytest.raises(ShardWireError, match="first part"):
        r.feed(FIRST, ack_bytes)  # a message that fits in one frame announced as parts


def corrupt_header(message: Message, change: Callable[[dict[str, Any]], None]) -> bytes:
    data = encode_bytes(message)
    _, header_len, _ = PREFIX.unpack_from(data)
    header = cbor2.loads(data[PREFIX.size : PREFIX.size + header_len])
    change(header)
    head = cbor2.dumps(header, canonical=True)
    tensors = data[PREFIX.size + header_len + (-(PREFIX.size + header_len)) % 8 :]
    body = bytes((-(PREFIX.size + len(head))) % 8) + tensors if tensors else b""
    return PREFIX.pack(b"ASH1", len(head), len(body)) + head + body


def set_entry(index: int, position: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(header: dict[str, Any]) -> None:
        header["x"][index][position] = value

    return change


def test_malformed_messages_raise_shard_wire_errors() -> None:
    message = run_message(tensors={"a": np.ones((2, 3), np.float32), "b": np.zeros(2, np.int64)})
    good = encode_bytes(message)
    cases: dict[str, bytes] = {
        "short": good[:10],
        "bad magic": b"XXXX" + good[4:],
        "truncated": good[:-1],
        "trailing": good + b"\0" * 8,
        "header not cbor": PREFIX.pack(b"ASH1", 2, 0) + b"\xff\xff",
        "header not a map": PREFIX.pack(b"ASH1", 2, 0) + cbor2.dumps([1]),
        "oversize header": PREFIX.pack(b"ASH1", 1 << 20, 0),
        "unknown kind": corrupt_header(message, lambda h: h.update(k=9)),
        "unknown field": corrupt_header(message, lambda h: h.update(evil=1)),
        "version": corrupt_header(message, lambda h: h.update(v=2)),
        "missing tag": corrupt_header(message, lambda h: h.pop("t")),
        "short request id": corrupt_header(message, lambda h: h.update(r=b"x")),
        "stage range": corrupt_header(message, lambda h: h.update(s=1000)),
        "route not a list": corrupt_header(message, lambda h: h.update(route={"a": 1})),
        "too many replicas": corrupt_header(message, lambda h: h.update(route=[[b"p"] * 100])),
        "bad multiaddr": corrupt_header(message, lambda h: h.update(addrs={b"p": [b"\xff\xff"]})),
        "unknown fail code": corrupt_header(
            Message(Kind.FAIL, bytes(16), code="timeout"), lambda h: h.update(code="whatever")
        ),
        "dtype not allowed": corrupt_header(message, set_entry(0, 1, "object")),
        "wrong length": corrupt_header(message, set_entry(0, 3, 25)),
        "shape does not match length": corrupt_header(message, set_entry(0, 2, [3, 3])),
        "negative dim": corrupt_header(message, set_entry(0, 2, [-2, -3])),
        "rank too high": corrupt_header(message, set_entry(0, 2, [1] * 17)),
        "duplicate name": corrupt_header(message, set_entry(1, 0, "a")),
        "bad entry": corrupt_header(message, lambda h: h["x"].append(["c", "float32"])),
        "past the end": corrupt_header(message, lambda h: h["x"].append(["c", "float32", [1000], 4000])),
        "bool values": corrupt_header(
            Message(Kind.RESULT, bytes(16), tensors={"m": np.array([0, 1, 2], np.uint8)}),
            set_entry(0, 1, "bool"),
        ),
    }
    for name, data in cases.items():
        with pytest.raises(ShardWireError):
            decode_message(data)
            pytest.fail(f"{name} was accepted")
    with pytest.raises(ShardWireError, match="limit"):
        decode_message(good, WireLimits(max_message_bytes=len(good) - 1))
    with pytest.raises(ShardWireError, match="dtype"):
        encode_message(Message(Kind.RESULT, bytes(16), tensors={"s": np.array(["text"])}))
    with pytest.raises(ShardWireError, match="limit"):
        encode_message(
            Message(Kind.RESULT, bytes(16), tensors={"x": np.ones(1000)}), WireLimits(max_message_bytes=4000)
        )
    # the error carries what is needed to answer with a FAIL the sender can match
    with pytest.raises(ShardWireError) as caught:
        decode_message(cases["wrong length"])
    assert caught.value.request_id == message.request_id and caught.value.tag == message.tag


@pytest.mark.parametrize("change", [lambda h: h.update(v=10**5000), set_entry(0, 3, -(10**5000))])
def test_huge_integers_in_a_header_are_wire_errors(change: Callable[[dict[str, Any]], None]) -> None:
    # issue 11, finding 10: naming a 5000-digit version in the error raised ValueError (int-to-text limit)
    data = corrupt_header(run_message(tensors={"a": np.ones(2, np.float32)}), change)
    with pytest.raises(ShardWireError, match="integer of 16610 bits"):
        decode_message(data)


def test_random_corruption_never_escapes_as_another_error() -> None:
    rng = random.Random(5)
    good = encode_bytes(run_message())
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.choice((1, 2, 8))):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data))]
        with suppress(ShardWireError):
            decode_message(bytes(data))


def test_a_batch_whose_axis_0_is_not_the_batch_axis_runs_whole() -> None:
    # A VAD: input [N, T], state [2, N, 128], sr scalar. With N == 2 the first dims of input and
    # state agree by chance; cutting along 0 would cut the state's two layers apart.
    vad = (
        TensorSpec("input", "float32", ("N", "T")),
        TensorSpec("state", "float32", (2, "N", 128)),
        TensorSpec("sr", "int64", ()),
    )
    feeds = {"input": np.zeros((2, 512), np.float32), "state": np.zeros((2, 2, 128), np.float32)}
    assert split_batch(feeds, 1, vad[:2]) == [feeds]
    with_rate = {**feeds, "sr": np.array(16000)}
    assert split_batch(with_rate, 1, vad) == [with_rate]
    batch_major = (TensorSpec("x", "float32", ("N", 3)), TensorSpec("ids", "int64", ("N",)))
    x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    assert len(split_batch({"x": x, "ids": np.arange(8)}, 3, batch_major)) == 3


def test_micro_batches_are_views_and_merge_back_and_frames_compare_within_tolerance() -> None:
    x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    ids = np.arange(8, dtype=np.int64)
    pieces = split_batch({"x": x, "ids": ids}, 3)
    assert [p["x"].shape[0] for p in pieces] == [3, 3, 2]
    assert all(np.shares_memory(p["x"], x) for p in pieces)
    merged = merge_batches(pieces)
    np.testing.assert_array_equal(merged["x"], x)
    np.testing.assert_array_equal(merged["ids"], ids)
    assert split_batch({"x": x}, None) == [{"x": x}] and len(split_batch({"x": x}, 8)) == 1
    for bad in ({"x": x, "y": x[:5]}, {}):
        with pytest.raises(ShardRequestError):
            split_batch(bad, 2)
    with pytest.raises(ShardRequestError):
        split_batch({"x": x}, 0)
    frame: dict[str, np.ndarray] = {"h": x, "ids": ids}
    assert frames_agree(frame, {"h": x + 1e-6, "ids": ids}, atol=1e-4, rtol=0)[0]
    agree, diff = frames_agree(frame, {"h": x + 0.5, "ids": ids}, atol=1e-4, rtol=1e-3)
    assert not agree and diff == pytest.approx(0.5)
    assert not frames_agree(frame, {"h": x, "ids": ids + 1}, atol=1, rtol=1)[0]  # integers exactly
    assert not frames_agree(frame, {"ids": ids, "h": x}, atol=1, rtol=1)[0]  # same boundary order
    assert not frames_agree(frame, {"h": x.astype(np.float64), "ids": ids}, atol=1, rtol=1)[0]


# -- the pipeline between real hosts ----------------------------------------------------------------


@dataclass
class Node:
    host: IHost
    bulk: BulkService
    addr: Multiaddr
    scope: trio.CancelScope
    server: StageServer | None = None
    router: ShardRouter | None = None
    penalties: PenaltyBox = field(default_factory=PenaltyBox)

    @property
    def id(self) -> ID:
        return self.host.get_id()

    def crash(self) -> None:
        """Stop the node at once: host, bulk listener and every channel close (like a killed process)."""
        self.scope.cancel()


async def run_node(
    *,
    server_cls: type[StageServer] | None = None,
    router: dict[str, Any] | None = None,
    server_options: dict[str, Any] | None = None,
    bulk_options: dict[str, Any] | None = None,
    task_status: TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            key = generate_identity()
            host = build_host(key, HostSettings(listen_addrs=LOOPBACK))
            addrs = await nursery.start(run_host, host, LOOPBACK)
            bulk = BulkService(host, **(bulk_options or {}))
            await nursery.start(bulk.run)
            node = Node(host, bulk, addrs[0], scope)
            if server_cls is not None:
                options = {"intra_op_threads": 1, "hop_timeout_s": 5.0, "retention": Retention(key),
                           **(server_options or {})}  # fmt: skip
                node.server = server_cls(bulk, penalties=node.penalties, **options)
                await nursery.start(node.server.run)
            if router is not None:
                node.penalties = router.pop("penalties", node.penalties)
                node.router = ShardRouter(bulk, penalties=node.penalties, intra_op_threads=1, **router)
                await nursery.start(node.router.run)
            task_status.started(node)
            await trio.sleep_forever()


@asynccontextmanager
async def cluster(
    servers: list[type[StageServer]],
    router: dict[str, Any] | None = None,
    *,
    client_serves: bool = False,
    **options: Any,
) -> AsyncIterator[tuple[Node, list[Node]]]:
    """Stage servers and a router node, each its own host, all connected (as discovery connects them):
    stage servers never dial the addresses in RUN headers (a claim of the upstream's), they reach next
    hops and the router over these connections."""
    async with trio.open_nursery() as nursery:
        nodes = [await nursery.start(partial(run_node, server_cls=cls, **options)) for cls in servers]
        client = await nursery.start(
            partial(run_node, router=dict(router or {}), server_cls=StageServer if client_serves else None)
        )
        for node in nodes:
            await dial(client.host, node.id, node.addr, timeout_s=5)
        for i, node in enumerate(nodes):
            for other in nodes[i + 1 :]:
                await dial(node.host, other.id, other.addr, timeout_s=5)
        yield client, nodes
        nursery.cancel_scope.cancel()


def addrs_of(nodes: list[Node]) -> dict[ID, list[Multiaddr]]:
    return {n.id: [n.addr] for n in nodes}


@dataclass
class Model:
    name: str
    onnx: onnx.ModelProto
    parts: dict[int, Partition]
    full: Any

    def feeds(self, batch: int, rng: np.random.Generator, seq: int = 12) -> dict[str, np.ndarray]:
        if self.name == "mlp":
            return {"x": rng.standard_normal((batch, 64), dtype=np.float32)}
        mask = np.ones((batch, seq), dtype=np.int64)
        mask[0, seq - 3 :] = 0  # padding: the mask must reach every stage that reads it
        return {"input_ids": rng.integers(0, 100, (batch, seq), dtype=np.int64), "attention_mask": mask}

    def expected(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.full.get_outputs()]
        return dict(zip(names, self.full.run(None, feeds), strict=True))

    def cid(self, k: int) -> str:
        return f"bafy-{self.name}-{k}"


@pytest.fixture(scope="module")
def models(zoo: Zoo) -> dict[str, Model]:  # noqa: F811
    made = {}
    for name, path in (("mlp", zoo.mlp(hidden=64, out=32)), ("transformer", zoo.transformer(layers=4))):
        model = onnx.load(str(path))
        parts = {k: partition(model, stages=k) for k in (2, 3)}
        full = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        made[name] = Model(name, model, parts, full)
    return made


async def serve(model: Model, k: int, nodes_per_stage: list[list[Node]]) -> list[list[ID]]:
    """Serve the k stages (stage i on every node of ``nodes_per_stage[i]``); the route."""
    for index, nodes in enumerate(nodes_per_stage):
        stage = model.parts[k].stages[index]
        for node in nodes:
            assert node.server is not None
            await node.server.serve(model.cid(k), index, stage.model_bytes, stage)
    return [[n.id for n in nodes] for nodes in nodes_per_stage]


def assert_close(
    got: dict[str, np.ndarray], want: dict[str, np.ndarray], tolerance: float = TOLERANCE
) -> None:
    assert list(got) == list(want)
    for name, value in want.items():
        assert got[name].shape == value.shape and got[name].dtype == value.dtype
        assert float(np.max(np.abs(got[name] - value))) <= tolerance, name


@pytest.mark.parametrize("name", ["mlp", "transformer"])
async def test_pipelines_of_2_and_3_stages_equal_the_full_model(name: str, models: dict[str, Model]) -> None:
    model = models[name]
    rng = np.random.default_rng(0)
    async with cluster([StageServer] * 3) as (client, nodes):
        assert client.router is not None
        routes = {k: await serve(model, k, [[n] for n in nodes[:k]]) for k in (2, 3)}
        for k, route in routes.items():
            for batch in (1, 5):
                feeds = model.feeds(batch, rng)
                with trio.fail_after(20):
                    got = await client.router.infer(route, model.cid(k), feeds, addrs=addrs_of(nodes))
                assert_close(got, model.expected(feeds))
        # one channel per (peer, purpose), reused by every request: router -> stage 0 only, and each
        # server to its next stage (and the last ones to the router)
        assert client.router.pool.opened == 1
        assert client.router.stats.delivered == 4 and client.router.stats.duplicates == 0


async def test_micro_batches_of_many_requests_stream_through_all_stages(models: dict[str, Model]) -> None:
    model = models["transformer"]
    rng = np.random.default_rng(1)
    requests = [model.feeds(8, rng) for _ in range(12)]
    # stage servers accept frames of at most 4 KiB: every activation message travels in several parts
    small_frames = {"max_payload": 4096}
    async with cluster([StageServer] * 3, router={"max_in_flight": 12}, bulk_options=small_frames) as (
        client,
        nodes,
    ):
        assert client.router is not None
        route = await serve(model, 3, [[n] for n in nodes])
        results: dict[int, dict[str, np.ndarray]] = {}
        peak = [0, 0, 0]

        async def watch() -> None:
            while True:
                for i, node in enumerate(nodes):
                    assert node.server is not None
                    peak[i] = max(peak[i], node.server.loads()[0].in_flight)
                await trio.sleep(0.002)

        async def request(i: int) -> None:
            assert client.router is not None
            results[i] = await client.router.infer(route, model.cid(3), requests[i], micro_batch=2,
                                                   addrs=addrs_of(nodes), timeout_s=30)  # fmt: skip

        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                async with trio.open_nursery() as inner:
                    for i in range(len(requests)):
                        inner.start_soon(request, i)
                nursery.cancel_scope.cancel()
        for i, feeds in enumerate(requests):
            assert_close(results[i], model.expected(feeds))
        stats = client.router.stats
        assert stats.micro_batches == stats.delivered == 12 * 4 and stats.duplicates == 0
        assert all(p > 1 for p in peak), peak  # every stage held several micro-batches at once
        assert [n.server.pool.opened for n in nodes if n.server] == [1, 1, 1]


class LyingServer(StageServer):
    """Returns wrong activations: every computed float output shifted by 0.5 (carried tensors untouched)."""

    def run_stage(self, runner: StageRunner, frame: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super().run_stage(runner, frame)
        return {n: v + np.float32(0.5) if n in runner.output_names and v.dtype.kind == "f" else v
                for n, v in out.items()}  # fmt: skip


async def test_a_crashed_middle_replica_costs_time_never_a_request(models: dict[str, Model]) -> None:
    model = models["transformer"]
    rng = np.random.default_rng(2)
    requests = [model.feeds(1 + i % 3, rng) for i in range(100)]
    async with cluster([StageServer] * 4, router={"max_in_flight": 8}) as (client, nodes):
        router = client.router
        assert router is not None
        first, preferred, spare, last = nodes
        route = await serve(model, 3, [[first], [preferred, spare], [last]])
        results: dict[int, dict[str, np.ndarray]] = {}
        done = trio.Event()

        async def request(i: int, limiter: trio.CapacityLimiter) -> None:
            async with limiter:
                results[i] = await router.infer(
                    route, model.cid(3), requests[i], addrs=addrs_of(nodes), timeout_s=30
                )
            if len(results) == 30:
                done.set()

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                limiter = trio.CapacityLimiter(12)
                for i in range(100):
                    nursery.start_soon(request, i, limiter)
                await done.wait()
                assert preferred.server is not None and preferred.server.loads()[0].in_flight > 0
                preferred.crash()  # with requests in flight through it
        assert len(results) == 100
        for i, feeds in enumerate(requests):
            assert_close(results[i], model.expected(feeds))
        assert router.stats.delivered == 100  # each micro-batch delivered exactly once
        assert first.server is not None and spare.server is not None
        assert first.server.loads()[0].replays > 0  # stage 0 replayed its output to the spare
        assert spare.server.loads()[0].served > 0
        assert first.server.health.why(preferred.id)  # backed off since
        print(f"\ncrash: router {router.stats}; stage 0 {first.server.loads()[0]}")

        # without any replica of a stage the caller gets a clear error naming that stage
        spare.crash()
        with trio.fail_after(20), pytest.raises(ShardRouteError, match="stage 1") as caught:
            await router.infer(route, model.cid(3), requests[0], addrs=addrs_of(nodes), timeout_s=15)
        assert caught.value.stage == 1


class StalledServer(StageServer):
    """Takes 2 s per run: alive, reachable, but too slow for the caller's timeout."""

    def run_stage(self, runner: StageRunner, frame: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(2.0)
        return super().run_stage(runner, frame)


async def test_a_stalled_stage_0_replica_is_timed_out_and_the_request_retried_elsewhere(
    models: dict[str, Model],
) -> None:
    model = models["mlp"]
    rng = np.random.default_rng(9)
    requests = [model.feeds(2, rng) for _ in range(6)]
    async with cluster([StalledServer, StageServer, StageServer], router={"hop_timeout_s": 0.4}) as (
        client,
        nodes,
    ):
        router = client.router
        assert router is not None
        stalled, good, last = nodes
        route = await serve(model, 2, [[stalled, good], [last]])
        with trio.fail_after(30):
            for feeds in requests:
                got = await router.infer(route, model.cid(2), feeds, addrs=addrs_of(nodes), timeout_s=10)
                assert_close(got, model.expected(feeds))
        stats = router.stats
        assert stats.retries >= 1 and "no answer" in router.health.why(stalled.id)
        with trio.fail_after(2.5 * stats.retries + 5):  # the stalled replica's chains deliver results too
            while stats.late + stats.duplicates < stats.retries:  # noqa: ASYNC110 - polls the router's counters
                await trio.sleep(0.05)
        assert stats.delivered == 6  # once each: the stalled chains' results were dropped
        print(f"\nstalled: {stats}")


@pytest.mark.parametrize(("referee", "fp16"), [("local", False), ("replica", False), ("local", True)])
async def test_audits_catch_a_lying_replica_and_exclude_it(
    referee: str, fp16: bool, models: dict[str, Model]
) -> None:
    """The liar is preferred in the route. Audits run after the answer (they cannot be told apart from
    traffic), so lies reach callers until the liar is caught; with fp16 compression honest replicas still
    pass; a replica referee needs a third replica to tell who lied."""
    model = models["mlp"]
    part = model.parts[3]
    rng = np.random.default_rng(3)
    honest = [StageServer, LyingServer, StageServer] + ([StageServer] if referee == "replica" else [])
    router_options = {"penalties": PenaltyBox(limit=1), "spot_check_p": 1.0, "rng": random.Random(4)}
    async with cluster(honest, router=router_options) as (client, nodes):
        router = client.router
        assert router is not None
        first, liar, good, *more = nodes
        route = await serve(model, 3, [[first], [liar, good, *more], [good]])
        local = {1: (part.stages[1].model_bytes, part.stages[1])} if referee == "local" else None
        with trio.fail_after(30):
            for _ in range(10):
                feeds = model.feeds(4, rng)
                await router.infer(
                    route, model.cid(3), feeds, local_stages=local, compress_fp16=fp16, addrs=addrs_of(nodes)
                )
                await router.auditor.wait_idle()
                if router.penalties is not None and router.penalties.excluded(liar.id):
                    break
        assert router.penalties is not None and router.penalties.excluded(liar.id)
        assert router.stats.lies_caught >= 1 and str(liar.id) in router.stats.penalised
        assert str(good.id) not in router.stats.penalised
        assert liar.server is not None
        lies = liar.server.loads()[0].served
        with trio.fail_after(30):  # the liar is excluded from every route from now on
            for _ in range(5):
                feeds = model.feeds(3, rng)
                got = await router.infer(route, model.cid(3), feeds, spot_check_p=0.0, addrs=addrs_of(nodes))
                assert_close(got, model.expected(feeds))
        assert liar.server.loads()[0].served == lies
        with pytest.raises(ShardRouteError, match="excluded"):
            await router.infer([[first.id], [liar.id], [good.id]], model.cid(3), feeds)


async def test_malformed_and_oversize_frames_get_fail_and_the_server_keeps_serving(
    models: dict[str, Model],
) -> None:
    model = models["mlp"]
    limits = WireLimits(max_message_bytes=1 << 20)
    async with cluster([StageServer] * 2, server_options={"limits": limits}) as (client, nodes):
        router = client.router
        assert router is not None
        route = await serve(model, 2, [[n] for n in nodes])
        target = nodes[0]
        feeds = model.feeds(2, np.random.default_rng(5))

        async def expect_fail(channel: Channel, code: str, tag: int | None = None) -> Message:
            with trio.fail_after(10):
                frame = await channel.receive()
            answer = decode_message(frame.payload)
            assert answer.kind == Kind.FAIL and answer.code == code, answer
            if tag is not None:
                assert answer.tag == tag
            return answer

        good_run = Message(
            Kind.RUN, os.urandom(16), stage=0, tag=41, model=model.cid(2), route=((nodes[1].id,),),
            reply_to=client.id, addrs={n.id: (n.addr,) for n in nodes}, ttl_ms=10_000, tensors=feeds,
        )  # fmt: skip
        async with client.bulk.open(target.id, SHARD_PURPOSE) as channel:
            await channel.send(b"garbage", frame_type=MSG)
            await expect_fail(channel, MALFORMED)
            await channel.send(corrupt_header(good_run, set_entry(0, 3, 3)), frame_type=MSG)
            answer = await expect_fail(channel, MALFORMED, tag=41)  # matched to the request it answers
            assert answer.request_id == good_run.request_id
            await channel.send(b"x", frame_type=0x99)
            await expect_fail(channel, MALFORMED)
            # an oversize message, announced in its first part: refused once, its other parts skipped
            huge = {"x": np.zeros((2, 1 << 18), np.float32)}
            big = encode_message(Message(Kind.RUN, os.urandom(16), tag=5, model=model.cid(2), tensors=huge))
            for frame_type, parts in split_frames(big, 1 << 16):
                await channel.send_parts(parts, frame_type=frame_type)
            await expect_fail(channel, MALFORMED)
            await channel.send(encode_bytes(Message(Kind.ACK, os.urandom(16), tag=6)), frame_type=MSG)
            await expect_fail(channel, MALFORMED, tag=6)  # not a request
            unknown = Message(**{**good_run.__dict__, "model": "bafy-other", "tag": 7})
            await channel.send(encode_bytes(unknown), frame_type=MSG)
            await expect_fail(channel, UNKNOWN_STAGE, tag=7)
            wrong = Message(
                **{**good_run.__dict__, "tag": 8, "tensors": {"x": feeds["x"].astype(np.float64)}}
            )
            await channel.send(encode_bytes(wrong), frame_type=MSG)
            await expect_fail(channel, INVALID, tag=8)
            await channel.send(encode_bytes(good_run), frame_type=MSG)  # the same channel still works
            with trio.fail_after(10):
                answer = decode_message((await channel.receive()).payload)
            assert answer.kind == Kind.ACK and answer.tag == 41
        assert router.stats.late == 1  # its result reached the router, which did not ask for it
        async with client.bulk.open(target.id, SHARD_PURPOSE) as channel:
            # a peer that ignores the server's 4 MiB frame limit: a frame header announcing 5 MiB
            await channel._stream.send_all(HEADER.pack(MSG, 5 << 20))
            await expect_fail(channel, MALFORMED)
        assert target.server is not None and target.server.malformed == 5
        assert target.penalties.count(client.id) == 5
        with trio.fail_after(10):  # the server serves on
            got = await router.infer(route, model.cid(2), feeds, addrs=addrs_of(nodes))
        assert_close(got, model.expected(feeds))


async def test_fp16_compressed_activations_round_trip_within_tolerance(models: dict[str, Model]) -> None:
    model = models["transformer"]
    feeds = model.feeds(4, np.random.default_rng(6), seq=32)
    want = model.expected(feeds)
    async with cluster([StageServer] * 2, router={"link_idle_s": 0.5}) as (client, nodes):
        router = client.router
        assert router is not None
        route = await serve(model, 2, [[n] for n in nodes])
        sent = []
        for fp16 in (False, True):
            before = sum(
                link.channel.channel.bytes_sent for n in nodes if n.server for link in n.server.pool.links()
            )
            got = await router.infer(route, model.cid(2), feeds, compress_fp16=fp16, addrs=addrs_of(nodes))
            after = sum(
                link.channel.channel.bytes_sent for n in nodes if n.server for link in n.server.pool.links()
            )
            sent.append(after - before)
            assert got["hidden"].dtype == np.float32
            error = float(np.max(np.abs(got["hidden"] - want["hidden"])))
            assert error <= (2e-2 if fp16 else TOLERANCE), error
        assert sent[1] < 0.6 * sent[0], sent  # stage 0 -> 1 and the result travel at half the size
        with trio.fail_after(5):  # an idle link is closed, and opened again when needed
            while router.pool.links():  # noqa: ASYNC110 - polls the pool
                await trio.sleep(0.1)
        await router.infer(route, model.cid(2), feeds, addrs=addrs_of(nodes))
        assert router.pool.opened == 2


def in_memory(link: Any) -> bool:
    """Whether a link's channel is the in-memory one a node opens to itself (no socket)."""
    return not isinstance(link.channel.channel._stream, trio.SocketStream)


async def test_a_node_runs_its_own_stages_in_process(models: dict[str, Model]) -> None:
    model = models["transformer"]
    feeds = model.feeds(3, np.random.default_rng(8))
    async with cluster([StageServer], client_serves=True) as (client, (other,)):
        assert client.router is not None and client.server is not None and other.server is not None
        route = await serve(model, 3, [[client], [other], [client]])
        got = await client.router.infer(route, model.cid(3), feeds, addrs=addrs_of([client, other]))
        assert_close(got, model.expected(feeds))
        # our stage 0 ran in-process, over the in-memory channel to ourselves
        assert [(link.peer_id, in_memory(link)) for link in client.router.pool.links()] == [(client.id, True)]
        assert sorted(
            (link.purpose, in_memory(link))
            for link in client.server.pool.links()
            if link.peer_id == client.id
        ) == [(RESULT_PURPOSE, True)]  # our stage 2 handed the result over in-process, too
        assert (other.id, SHARD_PURPOSE) in links_of(client.server)
        # stage 1 pushed to our stage 2 over a real channel
        assert [(link.peer_id, link.purpose, in_memory(link)) for link in other.server.pool.links()] == [
            (client.id, SHARD_PURPOSE, False)
        ]
        assert client.bulk.loopback_channels == 2 and client.router.stats.delivered == 1


def links_of(server: StageServer) -> list[tuple[ID, str]]:
    return [(link.peer_id, link.purpose) for link in server.pool.links()]


async def test_pipelined_throughput_is_measured(zoo: Zoo) -> None:  # noqa: F811
    """Print (not assert) a 2-stage pipeline's throughput against one local session on this machine."""
    path = zoo.transformer(layers=4, d_model=256, ff=1024)
    model = onnx.load(str(path))
    stages = partition(model, stages=2).stages
    rng = np.random.default_rng(7)
    batches = [{"input_ids": rng.integers(0, 100, (16, 64), dtype=np.int64),
                "attention_mask": np.ones((16, 64), dtype=np.int64)} for _ in range(6)]  # fmt: skip
    local = {}
    for threads in (1, 2):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, batches[0])
        started = time.perf_counter()
        for feeds in batches:
            session.run(None, feeds)
        local[threads] = time.perf_counter() - started
    sequences = 16 * len(batches)
    line = [f"local 1 thread {sequences / local[1]:.0f} seq/s, 2 threads {sequences / local[2]:.0f} seq/s"]
    async with cluster([StageServer] * 2, router={"max_in_flight": 8}) as (client, nodes):
        router = client.router
        assert router is not None
        for node, stage in zip(nodes, stages, strict=True):
            assert node.server is not None
            await node.server.serve("bafy-big", stage.index, stage.model_bytes, stage)
        route = [[n.id] for n in nodes]
        for micro in (4, 8):
            await router.infer(route, "bafy-big", batches[0], micro_batch=micro, addrs=addrs_of(nodes))
            started = time.perf_counter()
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for feeds in batches:
                        nursery.start_soon(partial(router.infer, route, "bafy-big", feeds, micro_batch=micro,
                                                   addrs=addrs_of(nodes)))  # fmt: skip
            elapsed = time.perf_counter() - started
            busy = []
            for node in nodes:
                assert node.server is not None
                node.server.busy_window_s = elapsed
                busy.append(round(node.server.loads()[0].busy_fraction, 2))
            line.append(f"pipeline micro-batch {micro}: {sequences / elapsed:.0f} seq/s "
                        f"({local[2] / elapsed:.2f}x local 2 threads), stage busy {busy}")  # fmt: skip
    print(
        "\nthroughput, transformer 4 layers d=256 ff=1024, batch 16 x seq 64, 1 ORT thread per stage:\n  "
        + "\n  ".join(line)
    )
