"""Every crash the fuzzers found, as a test: the input that crashed, and the documented error the decoder
raises for it now. Each would fail on the code before its fix (the error named in the comment escaped)."""

from __future__ import annotations

import struct

import pytest
from libp2p.bitswap.pb.bitswap_pb2 import Message as BitswapMessage

from accel_node.runtime.codecs import NPY_TYPE, NPZ_TYPE, TensorLimits, decode_inputs, decode_npy, encode_npz
from accel_node.runtime.errors import InputError
from p2p.bitswap.errors import ProtocolError
from p2p.bitswap.protocol import parse_message
from tests.fuzz.targets import TARGETS
from tests.fuzz.targets_tensors import ONE_INPUT, SIGNATURE, sample_inputs


def _v0_raw_block() -> bytes:
    """A Bitswap block whose prefix says CIDv0 with the raw codec (a CIDv0 is always dag-pb)."""
    message = BitswapMessage()
    block = message.payload.add()
    block.prefix = bytes((0x00, 0x55, 0x12, 0x20))  # version 0, raw, sha2-256, 32 bytes
    block.data = b"block one"
    return message.SerializeToString()


def _npy_unclosed_header() -> bytes:
    """A .npy header whose dict is never closed: numpy re-tokenizes it and raises tokenize.TokenError."""
    header = b"{'descr': '<f2', 'shape': (2,"
    header += b" " * (64 - 10 - len(header) - 1) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def _npz_with(member: bytes) -> bytes:
    """A .npz archive whose only member ``x.npy`` holds ``member``."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", member)
    return buffer.getvalue()


CRASHES = [
    # p2p/bitswap/protocol.py cid_from_prefix: InvalidCIDError escaped parse_message (found by atheris)
    ("bitswap_message", _v0_raw_block()),
    # accel_node/runtime/codecs.py _read_npy: tokenize.TokenError escaped (found by hypothesis)
    ("tensor_npy", _npy_unclosed_header()),
    ("tensor_npz", _npz_with(_npy_unclosed_header())),
]


@pytest.mark.parametrize(("name", "data"), CRASHES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CRASHES)])
def test_crash_input_no_longer_crashes(name: str, data: bytes) -> None:
    TARGETS[name].fuzz_one(data)


def test_bitswap_block_with_impossible_prefix_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="block prefix"):
        parse_message(_v0_raw_block())


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
