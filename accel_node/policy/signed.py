"""Signed envelopes: canonical CBOR bodies signed with Ed25519, decoded with bounds.

Tokens and membership lists share one shape, ``{"body": <canonical CBOR bytes>, "sig": <64 bytes>}``;
the signature covers a domain string (one per kind of document, so a token can never pass for a
membership list) followed by the body bytes exactly as sent. The body is decoded only after the
envelope's size is checked, and its fields are only trusted after :func:`verify` passed.

Keys are raw 32-byte Ed25519 public keys (PyNaCl); the text form ``ed25519:<base64url>`` is the one
publisher keys use (:mod:`accel_node.models.keys`). The node's own libp2p identity key is an Ed25519
key too, so it signs tokens directly (:func:`identity_signer`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cbor2
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from accel_node.policy.errors import PolicyError
from p2p.codec.cbor import CborMap, load_map

if TYPE_CHECKING:
    from libp2p.crypto.keys import KeyPair

Signer = Callable[[bytes], bytes]
KEY_PREFIX = "ed25519:"
SIGNATURE_BYTES = 64
KEY_BYTES = 32


def canonical(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


def seal(body: dict[str, Any], *, domain: bytes, signer: Signer) -> tuple[bytes, bytes]:
    """The canonical body bytes and their signature (over ``domain + body``)."""
    raw = canonical(body)
    return raw, signer(domain + raw)


def envelope(raw_body: bytes, signature: bytes) -> bytes:
    return canonical({"body": raw_body, "sig": signature})


def open_envelope(
    raw: bytes, *, max_bytes: int, what: str, error: Callable[[str], Exception]
) -> tuple[bytes, bytes, CborMap]:
    """(body bytes, signature, decoded body) of an envelope; nothing verified yet."""
    outer = load_map(raw, max_bytes=max_bytes, what=what, error=error)
    outer.require_exactly({"body", "sig"})
    body = outer.bytes_("body", max_len=max_bytes)
    signature = outer.bytes_("sig", max_len=SIGNATURE_BYTES, min_len=SIGNATURE_BYTES)
    inner = load_map(body, max_bytes=max_bytes, what=f"{what} body", error=error)
    return body, signature, inner


def verify(public_key: bytes, domain: bytes, raw_body: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(public_key).verify(domain + raw_body, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def identity_signer(key_pair: KeyPair) -> tuple[bytes, Signer]:
    """This node's identity as an issuer: its raw public key and a signer."""
    return key_pair.public_key.to_bytes(), key_pair.private_key.sign


def format_key(public_key: bytes) -> str:
    return KEY_PREFIX + base64.urlsafe_b64encode(public_key).decode("ascii").rstrip("=")


def parse_key(text: str) -> bytes:
    """``ed25519:<base64url>`` to 32 raw bytes; :class:`PolicyError` otherwise."""
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX) or len(text) > 128:
        raise PolicyError(f"a public key looks like {KEY_PREFIX}<base64url>, got {str(text)[:80]!r}")
    body = text[len(KEY_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError as exc:
        raise PolicyError("public key is not valid base64url") from exc
    if len(raw) != KEY_BYTES:
        raise PolicyError(f"an Ed25519 public key has {KEY_BYTES} bytes, this one {len(raw)}")
    return raw


def to_text(prefix: str, raw: bytes) -> str:
    return prefix + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def from_text(prefix: str, text: str, *, max_bytes: int, error: Callable[[str], Exception]) -> bytes:
    text = text.strip()
    if not text.startswith(prefix) or len(text) > len(prefix) + (max_bytes * 4) // 3 + 4:
        raise error(f"expected text starting with {prefix!r} of at most {max_bytes} bytes")
    body = text[len(prefix) :]
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError as exc:
        raise error("not valid base64url") from exc
