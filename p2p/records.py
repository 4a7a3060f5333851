"""Signed, expiring records: the envelope every record a node publishes about itself travels in.

Wire format: a CBOR map (canonical encoding) with exactly these keys::

    kind        text   what the body is ("cap" for capability records, "presence", ...)
    peer        bytes  the publisher's peer id (multihash bytes)
    seq         uint   sequence number; a newer record of the same kind has a higher one
    expires_at  uint   unix time (s) after which the record is void
    body        map    kind-specific content
    pubkey      bytes  the publisher's libp2p public key (protobuf encoding)
    sig         bytes  signature by that key over DOMAIN + canonical CBOR of the other six keys

:func:`decode_record` refuses anything oversize, malformed, signed by a key that is not the
claimed peer's, badly signed, expired, or expiring too far ahead; callers never see an unverified record.

Expiry is bounded above because a record is a claim its publisher can no longer take back: one valid for
a year would outlive any correction (a new sequence number only replaces it where the new one arrives)
and would sit in every DHT store that accepted it (a stored value lives until its ``expires_at``). A
record may expire at most :data:`MAX_LIFETIME_S` after the verifier's *now*, plus :data:`CLOCK_SKEW_S`
for clocks that disagree. The default is twice the longest refresh period a node may be configured with
(capability records: ``[p2p] cap_refresh_s`` <= 1 day, valid twice that); a kind with a shorter life
passes its own bound (``max_lifetime_s``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import cbor2
from libp2p.crypto.keys import KeyPair, PublicKey
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.id import ID

from p2p.codec.cbor import load_map
from p2p.errors import RecordError

DOMAIN = b"accel-node/record/v1\n"
MAX_RECORD_BYTES = 16 * 1024
MAX_PUBKEY_BYTES = 128
MAX_SIG_BYTES = 128
FIELDS = frozenset({"kind", "peer", "seq", "expires_at", "body", "pubkey", "sig"})
MAX_SEQ = (1 << 63) - 1
MAX_KIND_CHARS = 64
MAX_PEER_BYTES = 128
MAX_LIFETIME_S = 2 * 86_400
"""Longest a record may still be valid when it is verified (see the module docstring)."""
CLOCK_SKEW_S = 300
"""How far the publisher's clock may run ahead of the verifier's."""


@dataclass(frozen=True)
class SignedRecord:
    """A verified record (only :func:`decode_record` and :func:`sign_record` make these)."""

    kind: str
    peer_id: ID
    seq: int
    expires_at: int
    body: dict[str, Any]
    raw: bytes

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


def _signed_bytes(unsigned: dict[str, Any]) -> bytes:
    return DOMAIN + cbor2.dumps(unsigned, canonical=True)


def sign_record(
    key_pair: KeyPair, *, kind: str, seq: int, expires_at: int, body: dict[str, Any]
) -> SignedRecord:
    """Create and sign a record of ``kind`` for the owner of ``key_pair``."""
    if not 0 <= seq <= MAX_SEQ:
        raise RecordError(f"sequence number {seq} out of range")
    peer_id = ID.from_pubkey(key_pair.public_key)
    unsigned = {
        "kind": kind,
        "peer": peer_id.to_bytes(),
        "seq": seq,
        "expires_at": int(expires_at),
        "body": body,
        "pubkey": key_pair.public_key.serialize(),
    }
    signature = key_pair.private_key.sign(_signed_bytes(unsigned))
    raw = cbor2.dumps({**unsigned, "sig": signature}, canonical=True)
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError(f"record is {len(raw)} bytes; the limit is {MAX_RECORD_BYTES}")
    return SignedRecord(kind, peer_id, seq, int(expires_at), body, raw)


def _parse(raw: bytes, max_bytes: int) -> dict[Any, Any]:
    fields = load_map(raw, max_bytes=max_bytes, what="record", error=RecordError)
    fields.require_exactly(FIELDS)
    fields.text("kind", max_len=MAX_KIND_CHARS)
    fields.bytes_("peer", max_len=MAX_PEER_BYTES)
    fields.integer("seq", max_value=MAX_SEQ)
    fields.integer("expires_at")
    fields.map_("body")
    fields.bytes_("pubkey", max_len=MAX_PUBKEY_BYTES)
    fields.bytes_("sig", max_len=MAX_SIG_BYTES)
    return fields.data


def decode_record(
    raw: bytes,
    *,
    expect_kind: str | None = None,
    expect_peer: ID | None = None,
    now: float | None = None,
    max_bytes: int = MAX_RECORD_BYTES,
    max_lifetime_s: float = MAX_LIFETIME_S,
) -> SignedRecord:
    """Parse and verify ``raw``; raises :class:`RecordError` on anything but a valid record (one that
    expires more than ``max_lifetime_s`` + :data:`CLOCK_SKEW_S` after ``now`` included)."""
    data = _parse(raw, max_bytes)
    kind = data["kind"]
    if expect_kind is not None and kind != expect_kind:
        raise RecordError(f"expected a {expect_kind!r} record, got {kind!r}")
    try:
        peer_id = ID(data["peer"])
        public_key: PublicKey = deserialize_public_key(data["pubkey"])
    except Exception as exc:
        raise RecordError("record has a malformed peer id or public key") from exc
    if ID.from_pubkey(public_key) != peer_id:
        raise RecordError("record is signed by a key that is not the claimed peer's")
    if expect_peer is not None and peer_id != expect_peer:
        raise RecordError(f"record is from {peer_id}, expected {expect_peer}")
    unsigned = {k: v for k, v in data.items() if k != "sig"}
    try:
        valid = public_key.verify(_signed_bytes(unsigned), data["sig"])
    except Exception:  # malformed signatures raise instead of returning False
        valid = False
    if not valid:
        raise RecordError("record signature is invalid")
    current = time.time() if now is None else now
    if current >= data["expires_at"]:
        raise RecordError("record has expired")
    if data["expires_at"] > current + max_lifetime_s + CLOCK_SKEW_S:
        raise RecordError(f"record expires more than {max_lifetime_s:.0f} s ahead")
    return SignedRecord(kind, peer_id, data["seq"], data["expires_at"], data["body"], bytes(raw))
