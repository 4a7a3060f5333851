"""Signed stage receipts: what a stage server commits to for every RUN it computes.

A check a stage can recognise is a check a liar passes (issue 11, finding 1). So every stage server signs,
for *every* micro-batch it computes, a receipt with its libp2p identity key; receipts travel with the
activations (the RUN to stage i+1 carries those of stages <= i, the RESULT all of them) and the
requester can audit any stage afterwards (:mod:`accel_node.shard.audit`) against what the stage committed
to. A stage cannot tell which requests will be audited: all of them carry receipts, all look the same.

Receipt: canonical CBOR ``{"rc": {...}, "pubkey": bytes, "sig": bytes}``; ``sig`` is the signer's libp2p
signature over :data:`DOMAIN` + the canonical CBOR of the ``rc`` map, ``pubkey`` its public key
(protobuf), whose peer id is the signer. The ``rc`` map::

    v    1
    r    bytes(16)  request id
    m    text       model (plan) CID
    s    uint       stage index
    b    uint       micro-batch index
    f16  bool       activations travel as float16
    i    bytes(32)  digest of the stage's input tensors
    o    bytes(32)  digest of the stage's output tensors

Digests (:func:`tensor_digest`) are over the tensors *as the receiver decodes them*: under fp16
compression a float32 tensor is rounded to float16 and widened back to float32 first
(:func:`as_received`), so stage i's output digest equals stage i+1's input digest and the last one the
RESULT's. The digest is SHA-256 over a domain string, the count, and for each tensor in sorted name order
the canonical CBOR of ``[name, dtype, shape, nbytes]`` followed by its raw little-endian bytes.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.id import ID

from accel_node.shard.errors import ShardError
from accel_node.shard.limits import MAX_STAGES
from p2p.codec.cbor import CborMap, loads_bounded

Arrays = dict[str, np.ndarray[Any, Any]]

DOMAIN = b"accel-node/shard-receipt/1\x00"
DIGEST_DOMAIN = b"accel-node/tensors/1\x00"
VERSION = 1
DIGEST_BYTES = 32
REQUEST_ID_BYTES = 16
MAX_RECEIPT_BYTES = 1024
MAX_RECEIPTS = MAX_STAGES
MAX_PUBKEY_BYTES = 128
MAX_MODEL_CHARS = 256


class ReceiptError(ShardError):
    """A receipt that is malformed, oversize or not validly signed."""

    status = 502
    code = "bad_receipt"


def as_received(arrays: Mapping[str, np.ndarray[Any, Any]], fp16: bool) -> Arrays:
    """``arrays`` as the next hop decodes them: float32 rounded through float16 when ``fp16``."""
    if not fp16:
        return dict(arrays)
    return {n: a.astype(np.float16).astype(np.float32) if a.dtype == np.float32 else a
            for n, a in arrays.items()}  # fmt: skip


def tensor_digest(arrays: Mapping[str, np.ndarray[Any, Any]]) -> bytes:
    """The canonical SHA-256 digest of named tensors (see the module docstring)."""
    h = hashlib.sha256(DIGEST_DOMAIN)
    h.update(len(arrays).to_bytes(4, "little"))
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        wire = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
        h.update(cbor2.dumps([name, array.dtype.name, list(array.shape), wire.nbytes], canonical=True))
        h.update(wire.reshape(-1).view(np.uint8).data)
    return h.digest()


@dataclass(frozen=True)
class Receipt:
    """A verified receipt (only :func:`sign_receipt` and :func:`decode_receipt` make these); ``raw`` is
    its signed encoding, what travels and what evidence carries."""

    request_id: bytes
    model: str
    stage: int
    micro_batch: int
    fp16: bool
    input_digest: bytes
    output_digest: bytes
    signer: ID
    raw: bytes


def _signed_bytes(body: object) -> bytes:
    return DOMAIN + cbor2.dumps(body, canonical=True)


def sign_receipt(
    key_pair: KeyPair,
    *,
    request_id: bytes,
    model: str,
    stage: int,
    micro_batch: int,
    fp16: bool,
    input_digest: bytes,
    output_digest: bytes,
) -> Receipt:
    """Sign a receipt with ``key_pair`` (the stage server's identity)."""
    body = {"v": VERSION, "r": request_id, "m": model, "s": stage, "b": micro_batch, "f16": fp16,
            "i": input_digest, "o": output_digest}  # fmt: skip
    raw = cbor2.dumps(
        {"rc": body, "pubkey": key_pair.public_key.serialize(),
         "sig": key_pair.private_key.sign(_signed_bytes(body))},
        canonical=True,
    )  # fmt: skip
    if len(raw) > MAX_RECEIPT_BYTES:
        raise ReceiptError(f"a receipt of {len(raw)} bytes > {MAX_RECEIPT_BYTES}")
    return decode_receipt(raw)


def decode_receipt(raw: bytes) -> Receipt:
    """Parse and verify receipt bytes (bounds, structure, canonical form, signature)."""
    data = loads_bounded(raw, max_bytes=MAX_RECEIPT_BYTES, what="receipt", error=ReceiptError)
    outer = CborMap(data, what="receipt", error=ReceiptError)
    outer.require_exactly({"rc", "pubkey", "sig"})
    body = outer.map_("rc", max_len=8, what="receipt body")
    body.require_exactly({"v", "r", "m", "s", "b", "f16", "i", "o"})
    if body.integer("v", max_value=VERSION) != VERSION:
        raise ReceiptError("unsupported receipt version")
    receipt_fields = (
        body.bytes_("r", min_len=REQUEST_ID_BYTES, max_len=REQUEST_ID_BYTES),
        body.text("m", min_len=1, max_len=MAX_MODEL_CHARS),
        body.integer("s", max_value=MAX_STAGES - 1),
        body.integer("b", max_value=(1 << 63) - 1),
        body.boolean("f16"),
        body.bytes_("i", min_len=DIGEST_BYTES, max_len=DIGEST_BYTES),
        body.bytes_("o", min_len=DIGEST_BYTES, max_len=DIGEST_BYTES),
    )
    if cbor2.dumps(data, canonical=True) != bytes(raw):
        raise ReceiptError("receipt is not in canonical CBOR")
    pubkey = outer.bytes_("pubkey", min_len=1, max_len=MAX_PUBKEY_BYTES)
    sig = outer.bytes_("sig", min_len=1, max_len=MAX_PUBKEY_BYTES)
    try:
        public_key = deserialize_public_key(pubkey)
        signer = ID.from_pubkey(public_key)
        valid = public_key.verify(_signed_bytes(data["rc"]), sig)
    except Exception as exc:  # malformed keys and signatures raise several error types
        raise ReceiptError(f"receipt has a malformed key or signature: {exc}") from exc
    if not valid:
        raise ReceiptError("receipt signature is invalid")
    return Receipt(*receipt_fields, signer=signer, raw=bytes(raw))


@dataclass(frozen=True)
class ChainBreak:
    """Why a receipt chain does not hold, and whom it blames (the peers whose signed word breaks it)."""

    reason: str
    blame: tuple[ID, ...]


def _decode_chain(
    raw_receipts: tuple[bytes, ...], about: tuple[bytes, str, int, bool], route: tuple[tuple[ID, ...], ...]
) -> list[Receipt] | str:
    if len(raw_receipts) != len(route):
        return f"{len(raw_receipts)} receipts for {len(route)} stages"
    receipts: list[Receipt] = []
    request_id, model, micro_batch, fp16 = about
    for stage, raw in enumerate(raw_receipts):
        try:
            receipt = decode_receipt(raw)
        except ReceiptError as exc:
            return f"receipt of stage {stage}: {exc}"
        if (receipt.request_id, receipt.model, receipt.stage, receipt.micro_batch, receipt.fp16) != (
            request_id, model, stage, micro_batch, fp16
        ):  # fmt: skip
            return f"receipt of stage {stage} is about another request"
        if receipt.signer not in route[stage]:
            return f"receipt of stage {stage} is signed by a peer not in its route"
        receipts.append(receipt)
    return receipts


def check_chain(
    raw_receipts: tuple[bytes, ...],
    *,
    request_id: bytes,
    model: str,
    micro_batch: int,
    fp16: bool,
    route: tuple[tuple[ID, ...], ...],
    sent_digest: bytes,
    result_digest: bytes,
    result_sender: ID,
) -> list[Receipt] | ChainBreak:
    """The verified receipts of a delivered micro-batch, one per stage of ``route`` (in order), or why
    the chain breaks: a missing, malformed, misaddressed or foreign-signed receipt is blamed on the
    RESULT's sender (it delivered the chain); stage 0 committing to another input than was sent on stage
    0's signer; two stages whose signed digests disagree on both signers; a last output other than the
    RESULT on the last signer."""
    receipts = _decode_chain(raw_receipts, (request_id, model, micro_batch, fp16), route)
    if isinstance(receipts, str):
        return ChainBreak(receipts, (result_sender,))
    if receipts[-1].signer != result_sender:
        return ChainBreak("the last receipt is not the RESULT sender's", (result_sender,))
    if receipts[0].input_digest != sent_digest:
        return ChainBreak("stage 0 committed to another input than was sent", (receipts[0].signer,))
    for before, after in itertools.pairwise(receipts):
        if before.output_digest != after.input_digest:
            return ChainBreak(
                f"stages {before.stage} and {after.stage} committed to different activations",
                (before.signer, after.signer),
            )
    if receipts[-1].output_digest != result_digest:
        return ChainBreak("the last stage committed to another output than it delivered", (result_sender,))
    return receipts
