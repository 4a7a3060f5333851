"""Capability tokens: an issuer's signed leave for one peer to perform some actions until a time.

A token body (canonical CBOR) holds ``v`` (1), ``iss`` (the issuer's raw Ed25519 public key),
``sub`` (the subject's peer id), ``act`` (sorted action names), ``iat``/``exp`` (Unix seconds) and
``nonce`` (16 random bytes); it travels in a :mod:`signed <accel_node.policy.signed>` envelope.
Text form: ``acceltoken1:<base64url of the envelope>``. The token id is the nonce in hex: what
``accel-node policy token revoke`` names and the revocation list stores.

A token is accepted (:func:`check`) only when, in this order: it decodes within bounds; its issuer
is trusted (this node's own identity key, or a key listed in ``[policy] issuer_keys``); its
signature verifies; it is not expired (and was not issued in the future, beyond a small clock
skew); its subject is the authenticated peer presenting it (a token shown by anyone else is
refused: replaying a stolen token gains nothing); and it is not revoked.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from accel_node.policy.actions import ACTIONS
from accel_node.policy.errors import TokenError, bad_signature
from accel_node.policy.signed import (
    KEY_BYTES,
    Signer,
    envelope,
    from_text,
    open_envelope,
    seal,
    to_text,
    verify,
)

DOMAIN = b"accel-node capability token v1\x00"
TEXT_PREFIX = "acceltoken1:"
MAX_TOKEN_BYTES = 1024
MAX_TTL_S = 366 * 86400
NONCE_BYTES = 16
CLOCK_SKEW_S = 300
MAX_PEER_ID_LEN = 128


def _malformed(message: str) -> TokenError:
    return TokenError(f"capability token: {message}", reason="malformed")


@dataclass(frozen=True)
class CapabilityToken:
    issuer: bytes
    subject: str
    actions: frozenset[str]
    issued_at: int
    expires_at: int
    nonce: bytes
    raw_body: bytes
    signature: bytes

    @property
    def id(self) -> str:
        return self.nonce.hex()

    def encode(self) -> bytes:
        return envelope(self.raw_body, self.signature)

    def text(self) -> str:
        return to_text(TEXT_PREFIX, self.encode())


def issue(
    signer: Signer,
    issuer: bytes,
    *,
    subject: str,
    actions: Iterable[str],
    ttl_s: int,
    now: float,
    nonce: bytes | None = None,
) -> CapabilityToken:
    """Sign a token for ``subject``; raises :class:`TokenError` for unknown actions or a bad ttl."""
    wanted = sorted(set(actions))
    unknown = [a for a in wanted if a not in ACTIONS]
    if not wanted or unknown:
        raise TokenError(f"token actions must be some of {', '.join(ACTIONS)}", reason="malformed")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise TokenError(f"token ttl must be 1..{MAX_TTL_S} s", reason="malformed")
    if not subject or len(subject) > MAX_PEER_ID_LEN:
        raise TokenError("token subject must be a peer id", reason="malformed")
    nonce = nonce or secrets.token_bytes(NONCE_BYTES)
    issued_at = int(now)
    body = {
        "v": 1,
        "iss": issuer,
        "sub": subject,
        "act": wanted,
        "iat": issued_at,
        "exp": issued_at + ttl_s,
        "nonce": nonce,
    }
    raw, signature = seal(body, domain=DOMAIN, signer=signer)
    return CapabilityToken(
        issuer, subject, frozenset(wanted), issued_at, issued_at + ttl_s, nonce, raw, signature
    )


def decode(raw: bytes) -> CapabilityToken:
    """The token in ``raw`` (bounded decoding, every field checked); its signature is NOT checked."""
    body, signature, m = open_envelope(raw, max_bytes=MAX_TOKEN_BYTES, what="token", error=_malformed)
    m.require_exactly({"v", "iss", "sub", "act", "iat", "exp", "nonce"})
    if m.integer("v", min_value=0, max_value=1 << 16) != 1:
        raise _malformed("unknown version")
    actions = m.list_("act", max_len=len(ACTIONS))
    if not actions or any(not isinstance(a, str) or a not in ACTIONS for a in actions):
        raise _malformed("unknown action")
    return CapabilityToken(
        issuer=m.bytes_("iss", max_len=KEY_BYTES, min_len=KEY_BYTES),
        subject=m.text("sub", max_len=MAX_PEER_ID_LEN, min_len=1),
        actions=frozenset(actions),
        issued_at=m.integer("iat", min_value=0, max_value=1 << 40),
        expires_at=m.integer("exp", min_value=0, max_value=1 << 40),
        nonce=m.bytes_("nonce", max_len=NONCE_BYTES, min_len=NONCE_BYTES),
        raw_body=body,
        signature=signature,
    )


def parse(text: str) -> CapabilityToken:
    """A token from its text form."""
    return decode(from_text(TEXT_PREFIX, text, max_bytes=MAX_TOKEN_BYTES, error=_malformed))


def check(
    token: CapabilityToken,
    *,
    trusted_issuers: Collection[bytes],
    presenter: str,
    now: float,
    revoked: Callable[[str], bool],
) -> None:
    """Accept ``token`` as presented by ``presenter`` at ``now``, or raise :class:`TokenError`."""
    if token.issuer not in trusted_issuers:
        raise TokenError(
            "capability token from an issuer this node does not trust", reason="untrusted issuer"
        )
    if not verify(token.issuer, DOMAIN, token.raw_body, token.signature):
        raise bad_signature("capability token")
    if token.expires_at <= now:
        raise TokenError(f"capability token {token.id} has expired", reason="expired")
    if token.issued_at > now + CLOCK_SKEW_S or token.expires_at - token.issued_at > MAX_TTL_S:
        raise TokenError(f"capability token {token.id} has implausible times", reason="malformed")
    if token.subject != presenter:
        raise TokenError(
            f"capability token {token.id} names another peer than the one presenting it",
            reason="wrong subject",
        )
    if revoked(token.id):
        raise TokenError(f"capability token {token.id} is revoked", reason="revoked")
