"""Round trips: for every wire format with an encoder, ``decode(encode(x)) == x`` over hypothesis-generated
values (deterministic, CI budget), streams cut at arbitrary points included."""

from __future__ import annotations

import cbor2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from libp2p.bitswap.pb.bitswap_pb2 import Message as BitswapMessage
from libp2p.peer.id import ID

from accel_node.runtime.codecs import TensorLimits, decode_npz, decode_outputs, encode_json, encode_npz
from accel_node.shard.assign import _read_message, _write_message
from accel_node.shard.parts import Reassembler, split_frames
from accel_node.shard.wire import FAIL_CODES, WIRE_DTYPES, Kind, Message, decode_message, encode_message
from p2p.bitswap.protocol import FrameReader, blocks_message, parse_message, want_message
from p2p.bulk.blocks import decode_blocks, decode_wants, encode_blocks, encode_wants
from p2p.bulk.framing import CIPHERS, FrameDecoder, FrameEncoder
from p2p.bulk.handshake import ChannelRequest, Refusal, TicketGrant, decode_response, encode_response
from p2p.codec.varint import MULTIFORMATS, PROTOBUF, decode_uvarint, encode_uvarint
from p2p.content.cid import CID, DAG_PB, RAW
from p2p.content.dagpb import (
    PBLink,
    PBNode,
    UnixFSData,
    decode_pbnode,
    decode_unixfs,
    encode_pbnode,
    encode_unixfs,
)
from p2p.records import decode_record, sign_record
from tests.fuzz.harness import MemoryStream, chunks, run_sync
from tests.fuzz.targets_records import NOW, key_pair

CI = settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

digests = st.binary(min_size=32, max_size=32)
cids = st.one_of(
    st.builds(lambda d: CID.sha256(d, DAG_PB, 0), digests),
    st.builds(CID.sha256, digests, st.sampled_from((RAW, DAG_PB, 0x71, (1 << 63) - 1))),
)
peers = st.binary(min_size=2, max_size=40).map(ID)
cut_sizes = st.lists(st.integers(1, 300), min_size=1, max_size=5)


@CI
@given(st.integers(0, (1 << 63) - 1))
def test_varint(value: int) -> None:
    raw = encode_uvarint(value)
    assert decode_uvarint(raw + b"\x01", rules=MULTIFORMATS) == (value, len(raw))
    assert decode_uvarint(raw, rules=PROTOBUF) == (value, len(raw))


@CI
@given(cids)
def test_cid(cid: CID) -> None:
    assert CID.decode(cid.encode()) == cid
    assert CID.parse(str(cid)) == cid


@CI
@given(
    st.lists(
        st.builds(PBLink, cids, st.none() | st.text(max_size=20), st.none() | st.integers(0, 2**64 - 1)),
        max_size=8,
    ),
    st.none() | st.binary(max_size=64),
)
def test_dagpb(links: list[PBLink], data: bytes | None) -> None:
    assert decode_pbnode(encode_pbnode(links, data)) == PBNode(tuple(links), data)


@CI
@given(
    st.builds(
        UnixFSData,
        st.integers(0, 5),
        st.none() | st.binary(max_size=64),
        st.none() | st.integers(0, 2**64 - 1),
        st.lists(st.integers(0, 2**64 - 1), max_size=8).map(tuple),
    )
)
def test_unixfs(node: UnixFSData) -> None:
    assert decode_unixfs(encode_unixfs(node)) == node


def _arrays() -> st.SearchStrategy[np.ndarray]:  # type: ignore[type-arg]
    dtypes = st.sampled_from(sorted(WIRE_DTYPES)).map(np.dtype)
    return hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(Kind))
    common = {
        "request_id": draw(st.binary(min_size=16, max_size=16)),
        "stage": draw(st.integers(0, 63)),
        "tag": draw(st.integers(0, (1 << 63) - 1)),
    }
    if kind == Kind.ACK:
        return Message(kind, **common)  # type: ignore[arg-type]
    if kind == Kind.AUDIT:  # asks for what a stage retained: no tensors of its own
        return Message(kind, **common, model=draw(st.text(max_size=64)))  # type: ignore[arg-type]
    if kind == Kind.FAIL:
        return Message(
            kind, **common, code=draw(st.sampled_from(sorted(FAIL_CODES))), reason=draw(st.text(max_size=50))
        )  # type: ignore[arg-type]
    tensors = draw(st.dictionaries(st.text(min_size=1, max_size=8), _arrays(), max_size=4))
    extra: dict[str, object] = {}
    if kind == Kind.RUN:
        extra = {
            "route": tuple(
                tuple(h) for h in draw(st.lists(st.lists(peers, min_size=1, max_size=3), max_size=3))
            ),
            "reply_to": draw(st.none() | peers),
            "ttl_ms": draw(st.integers(0, 10**9)),
        }
    return Message(
        kind,
        **common,
        model=draw(st.text(max_size=20)),
        micro_batch=draw(st.integers(0, 100)),  # type: ignore[arg-type]
        tensors=tensors,
        **extra,
    )


def _same(a: Message, b: Message) -> None:
    assert {k: v for k, v in vars(a).items() if k != "tensors"} == {
        k: v for k, v in vars(b).items() if k != "tensors"
    }
    assert list(a.tensors) == list(b.tensors)
    for name, array in a.tensors.items():
        got = b.tensors[name]
        assert got.dtype == array.dtype and got.shape == array.shape
        assert np.array_equal(got, array, equal_nan=array.dtype.kind == "f")


@CI
@given(messages(), st.integers(16, 600))
def test_shard_message_in_parts(message: Message, max_payload: int) -> None:
    encoded = encode_message(message)
    whole = b"".join(bytes(b) for b in encoded.buffers)
    _same(message, decode_message(whole))
    reassembler, out = Reassembler(), []
    for kind, parts in split_frames(encoded, max_payload):
        assert sum(len(p) for p in parts) <= max_payload
        got = reassembler.feed(kind, b"".join(bytes(p) for p in parts))
        if got is not None:
            out.append(got)
    assert out == [whole]


@CI
@given(
    st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=6),
    st.sampled_from(CIPHERS),
    st.booleans(),
    cut_sizes,
)
def test_bulk_frames(frames: list[tuple[int, bytes]], cipher: str, encrypt: bool, sizes: list[int]) -> None:
    key = bytes(32)
    encoder = FrameEncoder(max_payload=1024, cipher=cipher, key=key, encrypt=encrypt)
    decoder = FrameDecoder(max_payload=1024, cipher=cipher, key=key, encrypt=encrypt)
    wire = b"".join(encoder.encode_bytes(t, p) for t, p in frames)
    received = []
    for piece in chunks(wire, sizes):
        decoder.feed(piece)
        while (frame := decoder.next_frame()) is not None:
            received.append((frame.type, frame.payload))
    decoder.eof()
    assert received == frames


@CI
@given(
    st.builds(
        ChannelRequest,
        st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64),
        st.sampled_from(("plain", "encrypted")),
        st.lists(st.sampled_from(CIPHERS), max_size=4).map(tuple),
        st.integers(1, 64 << 20),
    ),
    st.one_of(
        st.builds(
            TicketGrant,
            st.integers(1, 65535),
            st.binary(min_size=16, max_size=16),
            st.binary(min_size=32, max_size=32),
            st.sampled_from(CIPHERS),  # a grant always names its cipher
            st.integers(1, 64 << 20),
            st.integers(1, 3_600_000).map(lambda ms: ms / 1000),
        ),
        st.builds(Refusal, st.text(max_size=200)),
    ),
)
def test_bulk_control(request: ChannelRequest, response: TicketGrant | Refusal) -> None:
    assert ChannelRequest.decode(request.encode()[2:]) == request
    assert decode_response(encode_response(response)[2:]) == response


@CI
@given(st.lists(cids, max_size=20), st.lists(st.none() | st.binary(max_size=100), min_size=1, max_size=20))
def test_bulk_blocks(wants: list[CID], blocks: list[bytes | None]) -> None:
    assert decode_wants(encode_wants(wants)) == wants
    assert decode_blocks(b"".join(encode_blocks(blocks))) == blocks


@CI
@given(
    st.lists(cids.filter(lambda c: c.hash_code == 0x12), max_size=8),
    st.lists(st.binary(max_size=64), max_size=4),
    cut_sizes,
)
def test_bitswap(wants: list[CID], blocks: list[bytes], sizes: list[int]) -> None:
    payload = [(CID.compute(b), b) for b in blocks]
    wire = want_message(wants, want_have=True) + blocks_message(payload, haves=wants[:2])
    reader = FrameReader()
    frames = [f for piece in chunks(wire, sizes) for f in reader.feed(piece)]
    first, second = (parse_message(f) for f in frames)
    assert [w[0] for w in first.wants] == wants and all(w[1] for w in first.wants)
    assert second.blocks == payload and second.haves == wants[:2]
    assert BitswapMessage.FromString(frames[0]).wantlist.entries.__len__() == len(wants)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=10) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@CI
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6), st.integers(0, (1 << 63) - 1))
def test_record(body: dict[str, object], seq: int) -> None:
    record = sign_record(key_pair(), kind="cap", seq=seq, expires_at=NOW + 60, body=body)
    decoded = decode_record(record.raw, expect_kind="cap", now=NOW)
    assert (decoded.seq, decoded.body, decoded.peer_id) == (seq, body, record.peer_id)


@CI
@given(
    st.dictionaries(
        st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=8),
        _arrays(),
        min_size=1,
        max_size=4,
    )
)
def test_tensor_codecs(arrays: dict[str, np.ndarray]) -> None:  # type: ignore[type-arg]
    limits = TensorLimits()
    for decoded in (
        decode_npz(encode_npz(arrays), limits),
        decode_outputs(encode_json(arrays), "application/json", limits),
    ):
        assert list(decoded) == list(arrays)
        for name, array in arrays.items():
            assert decoded[name].shape == array.shape and decoded[name].dtype == array.dtype
            assert np.array_equal(decoded[name], array, equal_nan=array.dtype.kind == "f")


@CI
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6), st.integers(1, 50))
def test_assign_message(message: dict[str, object], chunk: int) -> None:
    class Sink:
        data = b""

        async def write(self, data: bytes) -> None:
            self.data += data

    sink = Sink()
    run_sync(_write_message(sink, message))  # type: ignore[arg-type]
    if len(sink.data) - 4 <= 4096:
        assert run_sync(_read_message(MemoryStream(sink.data, chunk))).data == message  # type: ignore[arg-type]
    assert cbor2.loads(sink.data[4:]) == message
