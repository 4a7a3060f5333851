"""Fuzz targets of sharded inference's wire: shard messages and their parts, assignment messages, shard
plans and model manifests."""

from __future__ import annotations

import functools
import struct

import cbor2
import numpy as np
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from multiaddr import Multiaddr
from nacl.signing import SigningKey

from accel_node.models.errors import ModelError
from accel_node.models.keys import PublisherKey
from accel_node.models.manifest import (
    Manifest,
    ManifestFile,
    TensorSpec,
    parse_manifest_map,
    sign_manifest,
    verify_package,
)
from accel_node.shard.assign import _read_message, _request
from accel_node.shard.errors import AssignmentError, PlanError, ShardRequestError, ShardWireError
from accel_node.shard.frames import frames_agree, merge_batches
from accel_node.shard.parts import FIRST, LAST, MORE, MSG, Reassembler, split_frames
from accel_node.shard.plan import ShardPlan, StagePlan, decode_plan, parse_plan_map, sign_plan
from accel_node.shard.wire import Kind, Message, decode_message, encode_bytes, encode_message, fail
from p2p.codec.cbor import loads_bounded
from p2p.codec.errors import CodecError
from tests.fuzz.harness import MemoryStream, accepting, run_sync, target
from tests.fuzz.targets_records import key_pair, peer_id

NOW = 1_700_000_000
MODEL_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
STAGE_CIDS = (
    "bafkreidrm3jfbd5umkhmuvjxbs4lnqj5qzpuwfk5j2ek4jwklegvwjfx3e",
    "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",
)


# -- shard messages --------------------------------------------------------------------------------


@functools.cache
def sample_messages() -> list[Message]:
    rid = bytes(range(16))
    me, other = peer_id(), ID.from_pubkey(create_new_key_pair(b"fuzz-other-peer-0123456789abcdef").public_key)
    tensors = {
        "x": np.arange(6, dtype=np.float32).reshape(2, 3),
        "ids": np.array([1, -2, 3], dtype=np.int64),
        "mask": np.array([True, False]),
        "scalar": np.array(2.5, dtype=np.float64),
        "empty": np.zeros((0, 4), dtype=np.int8),
    }
    run = Message(
        Kind.RUN,
        rid,
        stage=1,
        tag=9,
        model=MODEL_CID,
        micro_batch=2,
        route=((other,), (me, other)),
        reply_to=other,
        addrs={other: (Multiaddr("/ip4/127.0.0.1/tcp/4001"),)},
        ttl_ms=30_000,
        tensors=tensors,
    )
    return [
        run,
        Message(Kind.RESULT, rid, stage=2, tag=1, model=MODEL_CID, fp16=True, tensors={"y": tensors["x"]}),
        Message(Kind.ACK, rid, stage=0, tag=3),
        fail(rid, 4, stage=1, code="busy", reason="queue full"),
    ]


def _message_seeds() -> list[bytes]:
    return [encode_bytes(m) for m in sample_messages()]


@target("shard_message", _message_seeds, max_len=8192)
def fuzz_shard_message(data: bytes) -> None:
    with accepting(ShardWireError):
        message = decode_message(data)
        assert len(message.request_id) == 16 and len(message.tensors) <= 256


_FRAME = struct.Struct(">BH")


def frame_stream(frames: list[tuple[int, bytes]]) -> bytes:
    """Frames as the shard_parts target reads them: type u8, length u16, payload."""
    return b"".join(_FRAME.pack(kind, len(payload)) + payload for kind, payload in frames)


def _parts_seeds() -> list[bytes]:
    out = []
    for message in sample_messages():
        for size in (16, 64, 1 << 16):
            frames = [
                (kind, b"".join(bytes(p) for p in parts))
                for kind, parts in split_frames(encode_message(message), size)
            ]
            out.append(frame_stream(frames))
    return out


@target("shard_parts", _parts_seeds, max_len=8192)
def fuzz_shard_parts(data: bytes) -> None:
    """A channel's frames reassembled into messages (``type u8 | length u16 | payload`` each), each
    complete message decoded; the reassembler must survive every error and go on."""
    reassembler = Reassembler(max_message_bytes=1 << 20)
    pos = 0
    while pos + _FRAME.size <= len(data):
        kind, length = _FRAME.unpack_from(data, pos)
        pos += _FRAME.size
        payload, pos = data[pos : pos + length], pos + length
        kind = (MSG, FIRST, MORE, LAST, kind)[kind % 5]
        with accepting(ShardWireError):
            message = reassembler.feed(kind, payload)
            if message is not None:
                assert len(message) <= reassembler.max_message_bytes
                decode_message(message)


# -- assignments -----------------------------------------------------------------------------------


def _assign_seeds() -> list[bytes]:
    bodies = [
        {"model": MODEL_CID, "plan": STAGE_CIDS[0], "stage": 1},
        {"ok": True, "stage_cid": STAGE_CIDS[1]},
        {"ok": False, "error": "refused"},
    ]
    return [struct.pack(">I", len(raw)) + raw for raw in (cbor2.dumps(b, canonical=True) for b in bodies)]


@target("assign_message", _assign_seeds, max_len=8192)
def fuzz_assign_message(data: bytes) -> None:
    """A length-prefixed assignment message read from a stream, as a request and as an answer."""
    with accepting(AssignmentError):
        message = run_sync(_read_message(MemoryStream(data, chunk=11)))  # type: ignore[arg-type]
        with accepting(AssignmentError):
            _request(message)
        if message.get("ok") is True:
            message.text("stage_cid", max_len=256)


# -- plans -----------------------------------------------------------------------------------------


def sample_plan() -> ShardPlan:
    spec = TensorSpec("h", "float32", ("batch", 64))
    stages = tuple(
        StagePlan(
            index=i,
            cid=cid,
            start=start,
            end=end,
            inputs=(TensorSpec("x", "float32", ("batch", 16)),) if i == 0 else (spec,),
            outputs=(spec,),
            carried=(),
            boundary=("h",),
            flops=1.5e6,
            param_bytes=4096,
            activation_bytes=1024,
        )
        for i, (cid, start, end) in enumerate(zip(STAGE_CIDS, (0, 5), (5, 9), strict=True))
    )
    return ShardPlan(MODEL_CID, stages, (5,), {"batch": 4}, (1.0, 2.0), NOW, peer_id().to_base58())


def _plan_seeds() -> list[bytes]:
    return [sign_plan(sample_plan(), key_pair())]


@target("plan", _plan_seeds, max_len=8192)
def fuzz_plan(data: bytes) -> None:
    with accepting(PlanError):
        decode_plan(data, expect_model_cid=MODEL_CID)


def _plan_map_seeds() -> list[bytes]:
    return [cbor2.dumps(sample_plan().to_map(), canonical=True)]


@target("plan_map", _plan_map_seeds, max_len=8192)
def fuzz_plan_map(data: bytes) -> None:
    """The plan's structure checks alone (mutations of signed bytes seldom get past the signature)."""
    with accepting(CodecError, PlanError):
        plan = parse_plan_map(loads_bounded(data, max_bytes=1 << 20, what="plan"))
        assert parse_plan_map(plan.to_map()) == plan


# -- manifests -------------------------------------------------------------------------------------


@functools.cache
def publisher() -> PublisherKey:
    return PublisherKey("fuzz", SigningKey(bytes(range(32))))


def sample_manifest() -> Manifest:
    return Manifest(
        name="mlp",
        version=3,
        format="onnx",
        entry="model.onnx",
        files=(
            ManifestFile("model.onnx", MODEL_CID, 1234, "a" * 64),
            ManifestFile("weights/data.bin", STAGE_CIDS[0], 99, "b" * 64),
        ),
        inputs=(TensorSpec("x", "float32", ("batch", 16)),),
        outputs=(TensorSpec("y", "float32", (None, 4)),),
        created=NOW - 10,
        expires=NOW + 3600,
        publisher=publisher().key_id,
    )


def _manifest_seeds() -> list[bytes]:
    return [sign_manifest(sample_manifest(), publisher())]


@target("manifest", _manifest_seeds, max_len=8192)
def fuzz_manifest(data: bytes) -> None:
    """A package as fetched by CID: every publisher is 'trusted' with the fuzz key, so inputs reach the
    signature check."""
    with accepting(ModelError):
        verify_package(
            data,
            trusted_key=lambda kid: publisher().public_key,
            highest_version=lambda p, n: 2,
            max_manifest_bytes=1 << 20,
            max_file_bytes=1 << 30,
            now=NOW,
        )


def _manifest_map_seeds() -> list[bytes]:
    return [cbor2.dumps(sample_manifest().to_map(), canonical=True)]


@target("manifest_map", _manifest_map_seeds, max_len=8192)
def fuzz_manifest_map(data: bytes) -> None:
    with accepting(CodecError, ModelError):
        manifest = parse_manifest_map(loads_bounded(data, max_bytes=1 << 20, what="manifest"))
        assert parse_manifest_map(manifest.to_map()) == manifest


# -- frames from peers: micro-batch results merged, spot-check answers compared ---------------------------


def _frames_seeds() -> list[bytes]:
    result = sample_messages()[1]
    half = Message(Kind.RESULT, result.request_id, stage=2, tag=2, model=MODEL_CID,
                   tensors={"y": np.ones((1, 3), dtype=np.float32)})  # fmt: skip
    return [frame_stream([(0, encode_bytes(m)) for m in (result, half, result)])]


@target("shard_frames", _frames_seeds, max_len=8192)
def fuzz_shard_frames(data: bytes) -> None:
    """RESULT messages (``type u8 | length u16 | message`` each, type ignored) as the router gets them for
    the micro-batches of one request: merged along axis 0, and the first two compared as a spot check."""
    frames, pos = [], 0
    while pos + _FRAME.size <= len(data) and len(frames) < 8:
        _, length = _FRAME.unpack_from(data, pos)
        pos += _FRAME.size
        with accepting(ShardWireError):
            frames.append(dict(decode_message(data[pos : pos + length]).tensors))
        pos += length
    if len(frames) >= 2:
        frames_agree(frames[0], frames[1], atol=1e-5, rtol=1e-3)
    if frames:
        with accepting(ShardRequestError):
            merge_batches(frames)
