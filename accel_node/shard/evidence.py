"""Evidence of cheating: a signed receipt with the tensors it commits to, verifiable by any node.

When an audit (:mod:`accel_node.shard.audit`) finds that a stage's committed output is not what the stage
computes on its committed input, the auditor builds an evidence record and gossips it
(:mod:`accel_node.shard.gossip`). A node that receives it needs to trust nobody: the receipt's signature
says who committed; the digests say that these tensors are what was committed; re-executing the stage on
the input (when the node holds the stage) says whether the committed output was a lie. Sans-IO: decoding
and :func:`verify` take bytes and a runner, nothing else.

Record: canonical CBOR ``{"v": 1, "rc": receipt bytes, "in": tensors, "out": tensors}``, each tensors list
``[[name, dtype, [dims], raw little-endian bytes]]`` in sorted name order; at most :data:`MAX_EVIDENCE_BYTES`
(it must fit one GossipSub message), dtypes from the wire's allow-list.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np

from accel_node.shard.errors import ShardError
from accel_node.shard.receipts import Receipt, ReceiptError, as_received, decode_receipt, tensor_digest
from accel_node.shard.spotcheck import Tolerance
from accel_node.shard.wire import WIRE_DTYPES
from p2p.codec.cbor import CborMap, as_list, loads_bounded

Arrays = dict[str, np.ndarray[Any, Any]]
Runner = Callable[[Arrays], Arrays]
"""Runs the stage on a frame (the stage's input boundary) and returns its outgoing frame."""

VERSION = 1
MAX_EVIDENCE_BYTES = 60 << 10
MAX_TENSORS = 256
MAX_RANK = 16
MAX_NAME_CHARS = 1024


class EvidenceError(ShardError):
    """Evidence that is malformed, oversize, badly signed, or whose tensors are not the committed ones."""

    status = 502
    code = "bad_evidence"


class Finding(enum.Enum):
    PROVEN = "proven"  # the committed output is not what the stage computes: the signer lied
    UNFOUNDED = "unfounded"  # re-execution agrees with the committed output
    UNVERIFIABLE = "unverifiable"  # this node cannot run the stage


@dataclass(frozen=True)
class Evidence:
    """A decoded record whose signature and digests hold (only :func:`make_evidence` and
    :func:`decode_evidence` make these); ``raw`` is its encoding."""

    receipt: Receipt
    inputs: Arrays
    outputs: Arrays
    raw: bytes


@dataclass(frozen=True)
class EvidenceVerdict:
    finding: Finding
    max_abs_diff: float = 0.0


def _tensors(arrays: Mapping[str, np.ndarray[Any, Any]]) -> list[list[Any]]:
    out = []
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        if array.dtype.name not in WIRE_DTYPES:
            raise EvidenceError(f"tensor {name!r} has dtype {array.dtype.name}")
        wire = np.ascontiguousarray(array.astype(WIRE_DTYPES[array.dtype.name], copy=False))
        out.append([name, array.dtype.name, list(array.shape), wire.tobytes()])
    return out


def make_evidence(receipt: Receipt, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> Evidence:
    """The evidence record of ``receipt`` with the tensors it commits to; raises :class:`EvidenceError`
    when they are not the committed ones or the record would be larger than :data:`MAX_EVIDENCE_BYTES`."""
    raw = cbor2.dumps(
        {"v": VERSION, "rc": receipt.raw, "in": _tensors(inputs), "out": _tensors(outputs)}, canonical=True
    )
    return decode_evidence(raw)


def _parse_tensors(items: list[Any]) -> Arrays:
    arrays: Arrays = {}
    for entry in items:
        if not isinstance(entry, list) or len(entry) != 4:
            raise EvidenceError("a tensor entry must be [name, dtype, dims, bytes]")
        name, dtype_name, dims, data = entry
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS or name in arrays:
            raise EvidenceError("tensor names must be distinct text of 1 to 1024 characters")
        if not isinstance(dtype_name, str) or dtype_name not in WIRE_DTYPES:
            raise EvidenceError(f"tensor {name!r} has a dtype outside the allow-list")
        shape = as_list(dims, "dims", MAX_RANK, EvidenceError)
        if any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < (1 << 31) for d in shape):
            raise EvidenceError(f"tensor {name!r} has malformed dims")
        dtype = WIRE_DTYPES[dtype_name]
        if not isinstance(data, bytes) or len(data) != math.prod(shape) * dtype.itemsize:
            raise EvidenceError(f"tensor {name!r}: its bytes do not match its dtype and dims")
        array = np.frombuffer(data, dtype=dtype).reshape(shape)
        if dtype.kind == "b" and array.size and int(array.view(np.uint8).max()) > 1:
            raise EvidenceError(f"bool tensor {name!r} holds values other than 0 and 1")
        arrays[name] = array.astype(dtype.newbyteorder("="))
    return arrays


def decode_evidence(raw: bytes) -> Evidence:
    """Parse evidence and check it: bounds, canonical form, the receipt's signature, the digests."""
    data = loads_bounded(raw, max_bytes=MAX_EVIDENCE_BYTES, what="evidence", error=EvidenceError)
    record = CborMap(data, what="evidence", error=EvidenceError)
    record.require_exactly({"v", "rc", "in", "out"})
    if record.integer("v", max_value=VERSION) != VERSION:
        raise EvidenceError("unsupported evidence version")
    if cbor2.dumps(data, canonical=True) != bytes(raw):
        raise EvidenceError("evidence is not in canonical CBOR")
    try:
        receipt = decode_receipt(record.bytes_("rc", max_len=MAX_EVIDENCE_BYTES))
    except ReceiptError as exc:
        raise EvidenceError(f"evidence receipt: {exc}") from exc
    inputs = _parse_tensors(record.list_("in", max_len=MAX_TENSORS))
    outputs = _parse_tensors(record.list_("out", max_len=MAX_TENSORS))
    if tensor_digest(inputs) != receipt.input_digest:
        raise EvidenceError("the evidence's input is not the one its receipt commits to")
    if tensor_digest(outputs) != receipt.output_digest:
        raise EvidenceError("the evidence's output is not the one its receipt commits to")
    return Evidence(receipt, inputs, outputs, bytes(raw))


def by_name(arrays: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
    """``arrays`` in sorted name order (frames are compared in order)."""
    return {n: arrays[n] for n in sorted(arrays)}


def verify(evidence: Evidence, runner: Runner | None, tolerance: Tolerance) -> EvidenceVerdict:
    """Re-execute the stage on the committed input with ``runner`` (None: this node cannot) and judge the
    committed output against it (under fp16 the re-executed output is rounded as it would have travelled)."""
    if runner is None:
        return EvidenceVerdict(Finding.UNVERIFIABLE)
    expected = as_received(runner(dict(evidence.inputs)), evidence.receipt.fp16)
    agree, diff = tolerance.agree(by_name(evidence.outputs), by_name(expected))
    return EvidenceVerdict(Finding.UNFOUNDED if agree else Finding.PROVEN, diff)
