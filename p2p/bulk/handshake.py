"""Sans-IO handshake of a bulk channel: tickets granted over libp2p, proved over TCP.

1. Over an authenticated libp2p stream (Noise; the peer ids are the identities) the client sends a
   :class:`ChannelRequest` (purpose, mode, ciphers it accepts, its frame limit). The server answers
   a :class:`TicketGrant`: its TCP port, a random single-use ticket id, a random 32-byte secret
   (private: the libp2p stream is encrypted), the chosen cipher (in both modes: ``plain`` frames
   are authenticated too, see :mod:`p2p.bulk.framing`), its own frame limit and the ticket's
   lifetime; or a :class:`Refusal` with a reason ("busy: ..." over a limit).
2. The client connects to that port (at the IP it already reaches the peer at) and sends
   ``MAGIC | ticket id | client nonce | MAC_client``. The server takes the ticket out of its
   :class:`TicketBook` (unknown, expired or reused tickets end here), checks the MAC and answers
   ``MAGIC | server nonce | MAC_server``; anything wrong and it closes the socket without a word.
3. Both MACs are HMAC-SHA256 keyed with the ticket's secret over a :class:`Transcript` that binds
   the ticket, both peer ids, purpose, mode, cipher and both nonces, so each side proves it holds
   the secret that only the two libp2p-authenticated peers know: the socket belongs to that peer.
   Per-direction frame keys come from HKDF-SHA256 over the secret and the transcript.

Everything here is pure and bounded; the trio wrapper is ``p2p.bulk.service``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from libp2p.peer.id import ID

from p2p.bulk.errors import HandshakeError, RefusedError
from p2p.bulk.framing import CIPHERS, KEY_SIZE, MAX_PAYLOAD_LIMIT
from p2p.bulk.limits import TICKETS
from p2p.codec.cbor import CborMap, load_map
from p2p.resources import Limit, Reservation, ResourceLimitExceeded, ResourceManager

Mode = Literal["plain", "encrypted"]
MODES: tuple[Mode, ...] = ("plain", "encrypted")
VERSION = 1
MAX_CONTROL_MESSAGE = 1024
"""Bound on a request or response on the libp2p stream (CBOR, after a u16 length prefix)."""
CONTROL_LENGTH = struct.Struct(">H")
MAX_PURPOSE_LENGTH = 64
MAX_CIPHERS = 8
MAX_REASON_LENGTH = 200
TICKET_ID_SIZE = 16
SECRET_SIZE = 32
NONCE_SIZE = 32
MAC_SIZE = 32
MAGIC = b"ACBULK\x01\x00"
HELLO_SIZE = len(MAGIC) + TICKET_ID_SIZE + NONCE_SIZE + MAC_SIZE
REPLY_SIZE = len(MAGIC) + NONCE_SIZE + MAC_SIZE
_DOMAIN = b"accel-bulk/1"


def _decode_map(raw: bytes | bytearray, what: str) -> CborMap:
    doc = load_map(raw, max_bytes=MAX_CONTROL_MESSAGE, what=what, error=HandshakeError)
    if doc.get("v") != VERSION or isinstance(doc.get("v"), bool):
        raise HandshakeError(f"{what} is not a version {VERSION} map")
    return doc


def encode_control(doc: dict[str, Any]) -> bytes:
    """A control message with its u16 length prefix."""
    raw = cbor2.dumps({"v": VERSION, **doc}, canonical=True)
    if len(raw) > MAX_CONTROL_MESSAGE:
        raise HandshakeError(f"control message of {len(raw)} bytes exceeds {MAX_CONTROL_MESSAGE}")
    return CONTROL_LENGTH.pack(len(raw)) + raw


def check_purpose(purpose: str) -> str:
    if (
        not isinstance(purpose, str)
        or not 0 < len(purpose) <= MAX_PURPOSE_LENGTH
        or not purpose.isprintable()
    ):
        raise ValueError(f"a purpose is 1..{MAX_PURPOSE_LENGTH} printable characters, got {purpose!r}")
    return purpose


@dataclass(frozen=True, slots=True)
class ChannelRequest:
    """Client -> server on the libp2p stream: what the channel is for."""

    purpose: str
    mode: Mode
    ciphers: tuple[str, ...]
    max_payload: int

    def encode(self) -> bytes:
        return encode_control(
            {
                "purpose": self.purpose,
                "mode": self.mode,
                "ciphers": list(self.ciphers),
                "max": self.max_payload,
            }
        )

    @classmethod
    def decode(cls, raw: bytes | bytearray) -> ChannelRequest:
        what = "channel request"
        doc = _decode_map(raw, what)
        purpose = doc.text("purpose", max_len=MAX_CONTROL_MESSAGE)
        mode = doc.text("mode", max_len=MAX_CONTROL_MESSAGE)
        ciphers = doc.list_("ciphers", max_len=MAX_CONTROL_MESSAGE)
        max_payload = doc.integer("max")
        try:
            check_purpose(purpose)
        except ValueError as exc:
            raise HandshakeError(f"{what}: {exc}") from None
        if mode not in MODES:
            raise HandshakeError(f"{what}: unknown mode {mode[:20]!r}")
        if len(ciphers) > MAX_CIPHERS or not all(isinstance(c, str) and len(c) <= 32 for c in ciphers):
            raise HandshakeError(f"{what}: bad cipher list")
        if not 0 < max_payload <= MAX_PAYLOAD_LIMIT:
            raise HandshakeError(f"{what}: frame limit {max_payload} out of range")
        return cls(purpose, mode, tuple(ciphers), max_payload)


@dataclass(frozen=True, slots=True)
class TicketGrant:
    """Server -> client on the libp2p stream: where to connect and how to prove it."""

    port: int
    ticket_id: bytes
    secret: bytes
    cipher: str
    max_payload: int
    ttl_s: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """Server -> client on the libp2p stream: no channel, and why."""

    reason: str


def encode_response(response: TicketGrant | Refusal) -> bytes:
    if isinstance(response, Refusal):
        return encode_control({"ok": False, "error": response.reason[:MAX_REASON_LENGTH]})
    return encode_control(
        {
            "ok": True,
            "port": response.port,
            "ticket": response.ticket_id,
            "secret": response.secret,
            "cipher": response.cipher,
            "max": response.max_payload,
            "ttl_ms": int(response.ttl_s * 1000),
        }
    )


def decode_response(raw: bytes | bytearray) -> TicketGrant | Refusal:
    what = "channel response"
    doc = _decode_map(raw, what)
    if not doc.boolean("ok"):
        return Refusal(doc.text("error", max_len=MAX_CONTROL_MESSAGE)[:MAX_REASON_LENGTH])
    port = doc.integer("port")
    ticket_id = doc.bytes_("ticket", max_len=MAX_CONTROL_MESSAGE)
    secret = doc.bytes_("secret", max_len=MAX_CONTROL_MESSAGE)
    cipher = doc.text("cipher", max_len=MAX_CONTROL_MESSAGE)
    max_payload = doc.integer("max")
    ttl_ms = doc.integer("ttl_ms")
    if not 0 < port < 65536:
        raise HandshakeError(f"{what}: port {port} out of range")
    if len(ticket_id) != TICKET_ID_SIZE or len(secret) != SECRET_SIZE:
        raise HandshakeError(f"{what}: ticket or secret has the wrong size")
    if cipher not in CIPHERS:  # every channel is authenticated, "plain" ones too
        raise HandshakeError(f"{what}: server chose no cipher or an unknown one ({cipher[:32]!r})")
    if not 0 < max_payload <= MAX_PAYLOAD_LIMIT or not 0 < ttl_ms <= 3_600_000:
        raise HandshakeError(f"{what}: frame limit or ticket lifetime out of range")
    return TicketGrant(port, ticket_id, secret, cipher, max_payload, ttl_ms / 1000)


def choose_cipher(offered: Sequence[str]) -> str | None:
    """The first cipher in the client's preference order that we support."""
    return next((c for c in offered if c in CIPHERS), None)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A granted, not yet redeemed channel: who may redeem it, for what, until when."""

    ticket_id: bytes
    secret: bytes
    client: bytes
    """The client's peer id (binary), as authenticated by the libp2p connection."""
    purpose: str
    mode: Mode
    cipher: str
    client_max_payload: int
    expires_at: float


class TicketBook:
    """Outstanding tickets, bounded per peer and in total (``bulk.tickets`` on ``resources``); each
    one can be redeemed once, and expires ``ttl_s`` after it was granted."""

    def __init__(
        self,
        *,
        ttl_s: float = 5.0,
        max_per_peer: int = 8,
        max_total: int = 256,
        resources: ResourceManager | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.resources = resources if resources is not None else ResourceManager()
        self.resources.set_limit(TICKETS, Limit(max_per_peer, max_total))
        # In grant order, so expiry (one lifetime for all) only ever looks at the front.
        self._tickets: dict[bytes, tuple[Ticket, Reservation]] = {}

    def __len__(self) -> int:
        return len(self._tickets)

    def _expire(self, now: float) -> None:
        while self._tickets:
            ticket_id, (ticket, held) = next(iter(self._tickets.items()))
            if ticket.expires_at > now:
                return
            del self._tickets[ticket_id]
            held.release()

    def issue(self, client: bytes, request: ChannelRequest, cipher: str, now: float) -> Ticket:
        """A fresh ticket for ``client``; :class:`RefusedError` ("busy") when too many are outstanding."""
        self._expire(now)
        try:
            held = self.resources.reserve(TICKETS, str(ID(client)))
        except ResourceLimitExceeded as exc:
            raise RefusedError(f"busy: too many outstanding channel tickets ({exc})") from None
        ticket = Ticket(
            ticket_id=secrets.token_bytes(TICKET_ID_SIZE),
            secret=secrets.token_bytes(SECRET_SIZE),
            client=client,
            purpose=request.purpose,
            mode=request.mode,
            cipher=cipher,
            client_max_payload=request.max_payload,
            expires_at=now + self.ttl_s,
        )
        self._tickets[ticket.ticket_id] = (ticket, held)
        return ticket

    def redeem(self, ticket_id: bytes, now: float) -> Ticket:
        """Take the ticket out (whatever happens next, it cannot be used again)."""
        self._expire(now)
        entry = self._tickets.pop(ticket_id, None)
        if entry is None:
            raise HandshakeError("unknown, expired or already used ticket")
        entry[1].release()
        return entry[0]


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


@dataclass(frozen=True, slots=True)
class Transcript:
    """What both MACs and the frame keys are bound to (every field length-prefixed)."""

    ticket_id: bytes
    server: bytes
    client: bytes
    purpose: str
    mode: Mode
    cipher: str | None
    client_nonce: bytes

    def encode(self) -> bytes:
        return _DOMAIN + b"".join(
            _lp(part)
            for part in (
                self.ticket_id,
                self.server,
                self.client,
                self.purpose.encode(),
                self.mode.encode(),
                (self.cipher or "").encode(),
                self.client_nonce,
            )
        )


def _mac(secret: bytes, label: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, label + b"".join(parts), hashlib.sha256).digest()


def client_hello(secret: bytes, transcript: Transcript) -> bytes:
    """The client's first TCP message: ticket id, nonce and its proof of the secret."""
    mac = _mac(secret, b"client", transcript.encode())
    return MAGIC + transcript.ticket_id + transcript.client_nonce + mac


def parse_client_hello(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """``(ticket_id, client_nonce, mac)`` from a hello of exactly :data:`HELLO_SIZE` bytes."""
    if len(raw) != HELLO_SIZE or not raw.startswith(MAGIC):
        raise HandshakeError("not a bulk channel hello")
    pos = len(MAGIC)
    ticket_id = raw[pos : pos + TICKET_ID_SIZE]
    nonce = raw[pos + TICKET_ID_SIZE : pos + TICKET_ID_SIZE + NONCE_SIZE]
    return ticket_id, nonce, raw[-MAC_SIZE:]


def check_client_mac(secret: bytes, transcript: Transcript, mac: bytes) -> None:
    if not hmac.compare_digest(mac, _mac(secret, b"client", transcript.encode())):
        raise HandshakeError("the client's proof of the ticket secret is wrong")


def server_reply(secret: bytes, transcript: Transcript, server_nonce: bytes) -> bytes:
    """The server's answer: its nonce and its proof of the secret over the whole transcript."""
    return MAGIC + server_nonce + _mac(secret, b"server", transcript.encode(), server_nonce)


def check_server_reply(secret: bytes, transcript: Transcript, raw: bytes) -> bytes:
    """The server nonce from a valid reply; :class:`HandshakeError` otherwise."""
    if len(raw) != REPLY_SIZE or not raw.startswith(MAGIC):
        raise HandshakeError("not a bulk channel reply")
    nonce = raw[len(MAGIC) : len(MAGIC) + NONCE_SIZE]
    if not hmac.compare_digest(raw[-MAC_SIZE:], _mac(secret, b"server", transcript.encode(), nonce)):
        raise HandshakeError("the server's proof of the ticket secret is wrong")
    return nonce


def derive_keys(secret: bytes, transcript: Transcript, server_nonce: bytes) -> tuple[bytes, bytes]:
    """``(client_to_server, server_to_client)`` frame keys."""
    info = _DOMAIN + b" keys" + hashlib.sha256(transcript.encode()).digest()
    okm = HKDF(algorithm=hashes.SHA256(), length=2 * KEY_SIZE, salt=server_nonce, info=info).derive(secret)
    return okm[:KEY_SIZE], okm[KEY_SIZE:]


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)
