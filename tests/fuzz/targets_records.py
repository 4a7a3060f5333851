"""Fuzz targets of signed records: the envelope, DHT record values, capability and presence records.

Mutated signed bytes rarely survive the signature check, so each record kind has two targets: the
signed bytes as received (``*_record``: envelope, signer, signature, expiry, then the body) and the
body alone as the decoded envelope hands it over (``*_body``: CBOR, then the body's own validation).
"""

from __future__ import annotations

import functools
from typing import Any

import cbor2
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from pydantic import ValidationError

from accel_node.capability import CapabilityBody
from accel_node.presence import Heartbeat
from p2p.addrs import parse_peer_addr
from p2p.codec.cbor import loads_bounded
from p2p.codec.errors import CodecError
from p2p.dht import SignedRecordValidator, parse_record_key, record_key
from p2p.errors import InvalidAddressError, RecordError
from p2p.records import MAX_RECORD_BYTES, decode_record, sign_record
from tests.fuzz.harness import accepting, target

NOW = 1_700_000_000
EXPIRES = 4_000_000_000
NAMESPACE = "accel"


@functools.cache
def key_pair() -> KeyPair:
    return create_new_key_pair(b"fuzz-record-key-0123456789abcdef")


def peer_id() -> ID:
    return ID.from_pubkey(key_pair().public_key)


def capability_body() -> dict[str, Any]:
    return {
        "name": "fuzz-node",
        "version": "0.1.0",
        "addrs": [f"/ip4/127.0.0.1/tcp/4001/p2p/{peer_id()}"],
        "hw": {
            "peak_gflops": 120.5,
            "mem_bw_gbs": 20.0,
            "mem_total_gb": 16.0,
            "mem_free_gb": 8.0,
            "cpu": "x86_64",
            "cores": 8,
            "gpus": [{"name": "gpu", "memory_gb": 24.0, "fp16_tflops": 80.0}],
            "profiled": True,
        },
        "models": ["bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"],
        "shards": [{"model": "m", "stage": 1, "plan": "p", "queue_depth": 2, "busy": 0.5}],
        "load": {"queue_depth": 0, "utilisation": 0.25},
    }


def heartbeat_body() -> dict[str, Any]:
    return {
        "load": {"queue_depth": 3, "utilisation": 0.5},
        "addrs": [f"/ip4/10.0.0.1/tcp/4001/p2p/{peer_id()}", "/dns4/example.org/tcp/1/p2p/QmBad", "/ip6/::1"],
    }


def signed(kind: str, body: dict[str, Any], seq: int = 7) -> bytes:
    return sign_record(key_pair(), kind=kind, seq=seq, expires_at=EXPIRES, body=body).raw


# -- the envelope and DHT values ---------------------------------------------------------------------------


def _record_seeds() -> list[bytes]:
    return [signed("cap", capability_body()), signed("presence", heartbeat_body()), signed("x", {})]


@target("record", _record_seeds, max_len=MAX_RECORD_BYTES + 64)
def fuzz_record(data: bytes) -> None:
    with accepting(RecordError):
        record = decode_record(data, now=NOW)
        assert record.raw == data


def _dht_seeds() -> list[bytes]:
    key = record_key(NAMESPACE, "cap", peer_id()).encode()
    return [key + b"\x00" + value for value in _record_seeds()]


@target("dht_value", _dht_seeds, max_len=MAX_RECORD_BYTES + 256)
def fuzz_dht_value(data: bytes) -> None:
    """A DHT put or get answer as the validator sees it: ``key \\0 value`` (the key comes from the peer
    too)."""
    key_bytes, _, value = data.partition(b"\x00")
    key = key_bytes.decode("utf-8", "replace")
    validator = SignedRecordValidator(NAMESPACE, ["cap", "presence"])
    with accepting(RecordError):
        parse_record_key(key, NAMESPACE)
    with accepting(RecordError):
        validator.validate(key, value)
    with accepting(RecordError):
        index = validator.select(key, [value, value[: len(value) // 2]])
        assert index in (0, 1)


# -- capability records ----------------------------------------------------------------------------


def _capability_record_seeds() -> list[bytes]:
    return [signed("cap", capability_body())]


@target("capability_record", _capability_record_seeds, max_len=MAX_RECORD_BYTES + 64)
def fuzz_capability_record(data: bytes) -> None:
    """What CapabilityService.fetch does with a record the DHT returned: verify it, validate its body."""
    with accepting(RecordError, ValidationError):
        record = decode_record(data, expect_kind="cap", expect_peer=peer_id(), now=NOW)
        CapabilityBody.model_validate(record.body)


def _capability_body_seeds() -> list[bytes]:
    return [cbor2.dumps(capability_body(), canonical=True)]


@target("capability_body", _capability_body_seeds, max_len=MAX_RECORD_BYTES)
def fuzz_capability_body(data: bytes) -> None:
    with accepting(CodecError, ValidationError):
        body = loads_bounded(data, max_bytes=MAX_RECORD_BYTES, what="record body")
        if isinstance(body, dict):
            parsed = CapabilityBody.model_validate(body)
            parsed.model_dump(mode="json")  # what the peer table stores


# -- presence records ------------------------------------------------------------------------------


def _accept_heartbeat(body: Any) -> None:
    """The checks of PresenceService.accept after the envelope: the body, then each address."""
    heartbeat = Heartbeat.model_validate(body)
    for text in heartbeat.addrs:
        with accepting(InvalidAddressError):
            parse_peer_addr(text)
    heartbeat.load.model_dump(mode="json")


def _presence_record_seeds() -> list[bytes]:
    return [signed("presence", heartbeat_body())]


@target("presence_record", _presence_record_seeds, max_len=MAX_RECORD_BYTES + 64)
def fuzz_presence_record(data: bytes) -> None:
    with accepting(RecordError, ValidationError):
        record = decode_record(data, expect_kind="presence", now=NOW)
        _accept_heartbeat(record.body)


def _presence_body_seeds() -> list[bytes]:
    return [cbor2.dumps(heartbeat_body(), canonical=True)]


@target("presence_body", _presence_body_seeds, max_len=4096)
def fuzz_presence_body(data: bytes) -> None:
    with accepting(CodecError, ValidationError):
        body = loads_bounded(data, max_bytes=MAX_RECORD_BYTES, what="record body")
        if isinstance(body, dict):
            _accept_heartbeat(body)
