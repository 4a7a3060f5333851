"""Signed records and their DHT validator: every forgery the issue names is refused."""

from __future__ import annotations

import time
from pathlib import Path

import cbor2
import pytest
from libp2p.peer.id import ID

from accel_node.store import AsyncStore, Replay
from p2p.dht import SignedRecordValidator, record_key
from p2p.errors import RecordError
from p2p.identity import generate_identity, peer_id_of
from p2p.records import CLOCK_SKEW_S, MAX_LIFETIME_S, MAX_RECORD_BYTES, decode_record, sign_record

VALIDATOR = SignedRecordValidator("accel", ["cap"])


def future(seconds: int = 60) -> int:
    return int(time.time()) + seconds


def key_of(peer_id: ID) -> str:
    return record_key("accel", "cap", peer_id)


def test_valid_record_round_trips_through_the_validator() -> None:
    kp = generate_identity()
    record = sign_record(kp, kind="cap", seq=7, expires_at=future(), body={"hw": {"cores": 2}})
    VALIDATOR.validate(key_of(peer_id_of(kp)), record.raw)
    decoded = decode_record(record.raw, expect_kind="cap", expect_peer=peer_id_of(kp))
    assert (decoded.seq, decoded.body, decoded.peer_id) == (7, {"hw": {"cores": 2}}, peer_id_of(kp))


def test_forged_signature_is_refused() -> None:
    kp = generate_identity()
    record = sign_record(kp, kind="cap", seq=1, expires_at=future(), body={"name": "honest"})
    data = cbor2.loads(record.raw)
    data["body"] = {"name": "forged"}  # content changed after signing
    with pytest.raises(RecordError, match="signature is invalid"):
        VALIDATOR.validate(key_of(peer_id_of(kp)), cbor2.dumps(data, canonical=True))
    data = cbor2.loads(record.raw)
    data["sig"] = bytes(64)
    with pytest.raises(RecordError, match="signature is invalid"):
        decode_record(cbor2.dumps(data))


def test_record_signed_by_another_peer_is_refused() -> None:
    victim, attacker = generate_identity(), generate_identity()
    # The attacker signs a record about itself and publishes it under the victim's key...
    record = sign_record(attacker, kind="cap", seq=1, expires_at=future(), body={})
    with pytest.raises(RecordError, match="expected"):
        VALIDATOR.validate(key_of(peer_id_of(victim)), record.raw)
    # ...or claims to be the victim while signing with its own key.
    data = cbor2.loads(record.raw)
    data["peer"] = peer_id_of(victim).to_bytes()
    with pytest.raises(RecordError, match="not the claimed peer's"):
        VALIDATOR.validate(key_of(peer_id_of(victim)), cbor2.dumps(data, canonical=True))


def test_expired_record_is_refused() -> None:
    kp = generate_identity()
    record = sign_record(kp, kind="cap", seq=1, expires_at=int(time.time()) - 1, body={})
    with pytest.raises(RecordError, match="expired"):
        VALIDATOR.validate(key_of(peer_id_of(kp)), record.raw)


def test_record_expiring_too_far_ahead_is_refused() -> None:
    # issue 11, finding 10: a record valid until 2^63 s was accepted (and stored by the DHT that long).
    kp = generate_identity()
    now = time.time()
    for expires in (1 << 62, int(now + MAX_LIFETIME_S + CLOCK_SKEW_S) + 2):
        record = sign_record(kp, kind="cap", seq=1, expires_at=expires, body={})
        with pytest.raises(RecordError, match="ahead"):
            decode_record(record.raw, now=now)
        with pytest.raises(RecordError, match="ahead"):
            VALIDATOR.validate(key_of(peer_id_of(kp)), record.raw)
    at_bound = sign_record(
        kp, kind="cap", seq=1, expires_at=int(now + MAX_LIFETIME_S + CLOCK_SKEW_S), body={}
    )
    assert decode_record(at_bound.raw, now=now).seq == 1  # a clock a little ahead is tolerated
    short = sign_record(kp, kind="cap", seq=1, expires_at=int(now) + 1000, body={})
    with pytest.raises(RecordError, match="ahead"):
        decode_record(short.raw, now=now, max_lifetime_s=600)  # a kind may bound its records tighter


def test_oversize_record_is_refused_on_both_ends() -> None:
    kp = generate_identity()
    with pytest.raises(RecordError, match="limit"):
        sign_record(kp, kind="cap", seq=1, expires_at=future(), body={"pad": "x" * MAX_RECORD_BYTES})
    huge = cbor2.dumps({"pad": b"x" * (MAX_RECORD_BYTES + 1)})
    with pytest.raises(RecordError, match="limit"):
        VALIDATOR.validate(key_of(peer_id_of(kp)), huge)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xff\x00garbage", cbor2.dumps([1, 2, 3]), cbor2.dumps({"kind": "cap"}), "text-not-bytes"],
)
def test_malformed_records_are_refused(raw: bytes) -> None:
    with pytest.raises(RecordError):
        VALIDATOR.validate(key_of(peer_id_of(generate_identity())), raw)


def test_wrong_field_types_are_refused() -> None:
    kp = generate_identity()
    data = cbor2.loads(sign_record(kp, kind="cap", seq=1, expires_at=future(), body={}).raw)
    for field, bad in (("seq", "1"), ("seq", -1), ("expires_at", True), ("body", [1]), ("peer", "text")):
        broken = dict(data, **{field: bad})
        with pytest.raises(RecordError):
            decode_record(cbor2.dumps(broken))


def test_unknown_kind_and_bad_keys_are_refused() -> None:
    kp = generate_identity()
    record = sign_record(kp, kind="other", seq=1, expires_at=future(), body={})
    with pytest.raises(RecordError, match="unknown record kind"):
        VALIDATOR.validate(record_key("accel", "other", peer_id_of(kp)), record.raw)
    for key in ("/accel/cap", "/accel/cap/not-a-peer-id", "/other/cap/x/y", "accel/cap/x"):
        with pytest.raises(RecordError):
            VALIDATOR.validate(key, record.raw)


def test_select_prefers_the_highest_sequence_and_skips_invalid() -> None:
    kp = generate_identity()
    key = key_of(peer_id_of(kp))
    old = sign_record(kp, kind="cap", seq=1, expires_at=future(), body={}).raw
    new = sign_record(kp, kind="cap", seq=2, expires_at=future(), body={}).raw
    assert VALIDATOR.select(key, [old, new]) == 1
    assert VALIDATOR.select(key, [new, old]) == 0
    assert VALIDATOR.select(key, [b"junk", old]) == 1


async def test_replayed_older_sequence_is_refused_by_the_peer_table(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    expires = float(future())
    assert await store.record_capability("peer", {"load": None}, seq=5, expires_at=expires, addrs=[]) is None
    # The same record again is accepted; an older one is a replay.
    assert await store.record_capability("peer", {"load": None}, seq=5, expires_at=expires, addrs=[]) is None
    replay = await store.record_capability("peer", {"load": None}, seq=4, expires_at=expires, addrs=[])
    assert replay == Replay(held_seq=5)
    peer = await store.get_peer("peer")
    assert peer is not None and peer.cap_seq == 5
    assert await store.record_heartbeat("peer", seq=3, expires_at=expires, load={}, addrs=[]) is None
    replay = await store.record_heartbeat("peer", seq=3, expires_at=expires, load={}, addrs=[])
    assert replay == Replay(held_seq=3)
    await store.close()


async def test_expired_records_are_swept_from_the_peer_table(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    now = time.time()
    await store.record_capability("gone", {"load": None}, seq=1, expires_at=now + 1, addrs=[])
    await store.record_capability("alive", {"load": None}, seq=1, expires_at=now + 100, addrs=[])
    assert await store.expire_records(now + 2) == ["gone"]
    gone, alive = await store.get_peer("gone"), await store.get_peer("alive")
    assert gone is not None and gone.capability is None and not gone.live(now + 2)
    assert alive is not None and alive.capability is not None and alive.live(now + 2)
