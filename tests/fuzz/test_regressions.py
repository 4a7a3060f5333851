"""Every crash the fuzzers found, as a test: the input that crashed, and the documented error the decoder
raises for it now. Each would fail on the code before its fix (the error named in the comment escaped)."""

from __future__ import annotations

import json
import struct
import zipfile

import cbor2
import numpy as np
import pytest
from libp2p.bitswap.pb.bitswap_pb2 import Message as BitswapMessage

from accel_node.runtime.codecs import (
    JSON_TYPE,
    NPY_TYPE,
    NPZ_TYPE,
    TensorLimits,
    decode_inputs,
    decode_npy,
    decode_outputs,
    encode_npz,
)
from accel_node.runtime.errors import InputError
from accel_node.shard.errors import PlanError, ShardRequestError, ShardWireError
from accel_node.shard.frames import merge_batches
from accel_node.shard.plan import parse_plan_map
from accel_node.shard.wire import MAGIC, PREFIX, Kind, Message, decode_message, encode_bytes
from p2p.bitswap.errors import ProtocolError
from p2p.bitswap.protocol import parse_message
from p2p.codec.cbor import describe
from tests.fuzz.targets import TARGETS
from tests.fuzz.targets_shard import frame_stream, sample_plan
from tests.fuzz.targets_tensors import ONE_INPUT, SIGNATURE, compressed_npz, sample_inputs


def _v0_raw_block() -> bytes:
    """A Bitswap block whose prefix says CIDv0 with the raw codec (a CIDv0 is always dag-pb)."""
    message = BitswapMessage()
    block = message.payload.add()
    block.prefix = bytes((0x00, 0x55, 0x12, 0x20))  # version 0, raw, sha2-256, 32 bytes
    block.data = b"block one"
    return message.SerializeToString()


def _npy_header(header: bytes) -> bytes:
    """A version 1.0 .npy file of just ``header`` (padded to 64 bytes), no data."""
    header += b" " * (64 - 10 - len(header) - 1) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def _npy_unclosed_header() -> bytes:
    """A .npy header whose dict is never closed: numpy re-tokenizes it and raises tokenize.TokenError."""
    return _npy_header(b"{'descr': '<f2', 'shape': (2,")


def _npz_with(member: bytes) -> bytes:
    """A .npz archive whose only member ``x.npy`` holds ``member``."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", member)
    return buffer.getvalue()


def _corrupt_member(compression: int) -> bytes:
    """An .npz whose member's compressed stream is damaged right after its local header."""
    raw = bytearray(compressed_npz(sample_inputs(), compression))
    name_len, extra_len = struct.unpack_from("<HH", raw, 26)
    start = 30 + name_len + extra_len
    for index in range(start, start + 4):
        raw[index] ^= 0xA5
    return bytes(raw)


def _npz_from_the_future() -> bytes:
    """An .npz whose central directory says it needs zip version 25.5 to extract."""
    raw = bytearray(encode_npz(sample_inputs()))
    central = raw.find(b"PK\x01\x02")
    raw[central + 6] = 0xFF
    return bytes(raw)


def _json_output(dtype: str, data: list[object] | None = None) -> bytes:
    return json.dumps({"outputs": {"y": {"dtype": dtype, "shape": [1], "data": data or [1]}}}).encode()


def _shard_message(**header: object) -> bytes:
    """An ACK whose header fields are replaced by ``header`` (a RESULT's when it names tensors)."""
    fields: dict[str, object] = {"v": 1, "k": 3, "t": 1, "r": bytes(16), "s": 0}
    fields.update(header)
    raw = cbor2.dumps(fields, canonical=True)
    return PREFIX.pack(MAGIC, len(raw), 0) + raw


def _results(*tensors: dict[str, np.ndarray]) -> bytes:  # type: ignore[type-arg]
    """RESULT messages carrying ``tensors``, framed as the shard_frames target reads them."""
    messages = [Message(Kind.RESULT, bytes(16), tensors=t) for t in tensors]
    return frame_stream([(0, encode_bytes(m)) for m in messages])


def _plan_with_version(version: object) -> bytes:
    plan = sample_plan().to_map()
    plan["v"] = version
    return cbor2.dumps(plan, canonical=True)


HUGE = 2**20000
"""An integer whose repr raises ValueError (more than 4300 digits); a CBOR bignum of 2.5 KB."""

CRASHES = [
    # p2p/bitswap/protocol.py cid_from_prefix: InvalidCIDError escaped parse_message (found by atheris)
    ("bitswap_message", _v0_raw_block()),
    # accel_node/runtime/codecs.py _read_npy: tokenize.TokenError escaped (found by hypothesis)
    ("tensor_npy", _npy_unclosed_header()),
    ("tensor_npz", _npz_with(_npy_unclosed_header())),
    # accel_node/runtime/codecs.py _read_npy: zlib.error and lzma.LZMAError from a corrupt member, and
    # decode_npz: NotImplementedError for an unknown zip version (found by atheris)
    ("tensor_npz", _corrupt_member(zipfile.ZIP_DEFLATED)),
    ("tensor_npz", _corrupt_member(zipfile.ZIP_LZMA)),
    ("tensor_npz", _npz_from_the_future()),
    ("tensor_outputs", b"\x01" + _npz_from_the_future()),
    # accel_node/runtime/codecs.py _read_npy: ValueError from numpy for a '<U0' (zero-size) dtype in a
    # response (found by atheris in the long run)
    ("tensor_outputs", b"\x02" + _npy_header(b"{'descr': '<U0', 'fortran_order': False, 'shape': (1,), }")),
    # accel_node/runtime/codecs.py decode_json_outputs: SyntaxError from numpy parsing the dtype string
    # "b1,,0" of a response (found by atheris)
    ("tensor_outputs", b"\x00" + _json_output("b1,,0")),
    # the same: OverflowError for an int64 output holding -2**270 (found by atheris)
    ("tensor_outputs", b"\x00" + _json_output("int64", [-(2**270)])),
    # the same: a 70-byte response naming dtype "U100000000" made the client allocate 400 MB (found
    # while fixing the above: any numpy dtype string was accepted)
    ("tensor_outputs", b"\x00" + _json_output("U100000000", ["a"])),
    # accel_node/runtime/codecs.py decode_json / decode_json_outputs: RecursionError from json.loads of a
    # body nested deeper than the stack (issue 11 finding 10: "a deeply nested JSON body gives a 500")
    ("tensor_json", b"[" * 100_000),
    ("tensor_outputs", b"\x00" + b'{"outputs": ' * 50_000),
    # accel_node/shard/frames.py merge_batches: micro-batch RESULTs (from peers) naming different outputs
    # raised KeyError, and differing trailing dims ValueError (found writing the shard_frames target)
    ("shard_frames", _results({"y": np.ones((1, 3), np.float32)}, {"z": np.ones((1, 3), np.float32)})),
    ("shard_frames", _results({"y": np.ones((1, 3), np.float32)}, {"y": np.ones((1, 4), np.float32)})),
    # accel_node/shard/wire.py _parse_header: ValueError from repr() of a huge version (found by the
    # hostile-CBOR mutations of test_targets; issue 11 finding 10 names it too)
    ("shard_message", _shard_message(v=HUGE)),
    # accel_node/shard/wire.py _parse_tensors: the same for a tensor's dtype and declared length
    ("shard_message", _shard_message(k=2, m="", b=0, f16=False, x=[["t", HUGE, [1], 4]])),
    ("shard_message", _shard_message(k=2, m="", b=0, f16=False, x=[["t", "float32", [1], HUGE]])),
    # accel_node/shard/plan.py parse_plan_map: the same for the plan's version
    ("plan_map", _plan_with_version(HUGE)),
]


@pytest.mark.parametrize(("name", "data"), CRASHES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CRASHES)])
def test_crash_input_no_longer_crashes(name: str, data: bytes) -> None:
    TARGETS[name].fuzz_one(data)


@pytest.mark.parametrize(
    "header",
    [{"v": HUGE}, {"k": 2, "m": "", "b": 0, "f16": False, "x": [["t", HUGE, [1], 4]]},
     {"k": 2, "m": "", "b": 0, "f16": False, "x": [["t", "float32", [1], -HUGE]]}],
)  # fmt: skip
def test_shard_message_with_huge_integers_is_a_wire_error(header: dict[str, object]) -> None:
    with pytest.raises(ShardWireError) as caught:
        decode_message(_shard_message(**header))
    assert caught.value.request_id == bytes(16) and len(str(caught.value)) < 200


@pytest.mark.parametrize(
    "results",
    [[{"y": np.ones((1, 3))}, {"z": np.ones((1, 3))}], [{"y": np.ones((1, 3))}, {"y": np.ones((1, 4))}],
     [{"y": np.ones((1, 3))}, {"y": np.ones((1, 3)), "extra": np.ones(2)}],
     [{"y": np.ones((1, 3))}, {"y": np.ones((1, 3), dtype=np.int64)}]],
)  # fmt: skip
def test_micro_batch_results_that_disagree_are_refused(results: list[dict[str, np.ndarray]]) -> None:  # type: ignore[type-arg]
    with pytest.raises(ShardRequestError):
        merge_batches(results)
    assert merge_batches([results[0], results[0]])["y"].shape == (2, 3)


def test_plan_with_huge_version_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="unsupported plan version an integer of"):
        parse_plan_map(cbor2.loads(_plan_with_version(HUGE)))
    plan = sample_plan().to_map()
    assert parse_plan_map(plan) == sample_plan()


def test_describe_bounds_any_value() -> None:
    assert describe(HUGE) == f"an integer of {HUGE.bit_length()} bits"
    assert describe("x" * 100) == repr("x" * 37)[:37] + "..."
    assert describe(2) == "2" and describe(b"ab") == "b'ab'"


def test_bitswap_block_with_impossible_prefix_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="block prefix"):
        parse_message(_v0_raw_block())


@pytest.mark.parametrize(
    "body",
    [*(_corrupt_member(m) for m in (zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2)),
     _npz_from_the_future()],
)  # fmt: skip
def test_corrupt_npz_is_an_input_error(body: bytes) -> None:
    with pytest.raises(InputError):
        decode_inputs(body, NPZ_TYPE, SIGNATURE, TensorLimits())
    with pytest.raises(InputError):
        decode_outputs(body, NPZ_TYPE, TensorLimits())


def test_compressed_npz_is_read() -> None:
    for method in (zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        decoded = decode_inputs(compressed_npz(sample_inputs(), method), NPZ_TYPE, SIGNATURE, TensorLimits())
        assert all(np.array_equal(decoded[n], a) for n, a in sample_inputs().items())


def test_zero_size_dtype_is_an_input_error() -> None:
    body = _npy_header(b"{'descr': '<U0', 'fortran_order': False, 'shape': (1,), }")
    with pytest.raises(InputError, match="unsupported dtype"):
        decode_outputs(body, NPY_TYPE, TensorLimits())


@pytest.mark.parametrize(
    "body",
    [_json_output("b1,,0"), _json_output("int64", [-(2**270)]), _json_output("U100000000", ["a"]),
     _json_output("V1000000000", ["a"]), _json_output("O", [{}]), _json_output(["float32"])],  # type: ignore[arg-type]
)  # fmt: skip
def test_json_output_with_a_bad_dtype_or_value_is_an_input_error(body: bytes) -> None:
    with pytest.raises(InputError):
        decode_outputs(body, JSON_TYPE, TensorLimits())


def test_json_outputs_of_every_written_dtype_are_read() -> None:
    for dtype in ("float32", "float16", "int64", "uint8", "bool"):
        assert decode_outputs(_json_output(dtype), JSON_TYPE, TensorLimits())["y"].dtype == np.dtype(dtype)
    assert decode_outputs(_json_output("string", ["ab"]), JSON_TYPE, TensorLimits())["y"].tolist() == ["ab"]


def test_deeply_nested_json_is_an_input_error() -> None:
    with pytest.raises(InputError, match="nested more than"):
        decode_inputs(b'{"inputs": ' * 100_000, JSON_TYPE, SIGNATURE, TensorLimits())
    with pytest.raises(InputError, match="nested more than"):
        decode_outputs(b"[" * 100_000, JSON_TYPE, TensorLimits())


def test_npy_header_that_does_not_tokenize_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"not a valid \.npy"):
        decode_npy(_npy_unclosed_header(), TensorLimits())
    with pytest.raises(InputError, match=r"not a valid \.npy"):
        decode_inputs(_npy_unclosed_header(), NPY_TYPE, ONE_INPUT, TensorLimits())
    with pytest.raises(InputError):
        decode_inputs(_npz_with(_npy_unclosed_header()), NPZ_TYPE, SIGNATURE, TensorLimits())
    assert set(decode_inputs(encode_npz(sample_inputs()), NPZ_TYPE, SIGNATURE, TensorLimits())) == {
        spec.name for spec in SIGNATURE
    }
