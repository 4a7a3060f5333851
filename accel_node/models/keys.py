"""Publisher keys: Ed25519 (PyNaCl), identified by a short key id derived from the public key.

Text form of a public key: ``ed25519:<base64url, no padding>``; key id: the first 16 bytes of
SHA-256 over the raw public key, hex. Private keys live in files of mode 0600 under the node home
(``keys/<name>.key``), never in the database or in logs.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError as NaclBadSignature
from nacl.signing import SigningKey, VerifyKey

from accel_node.models.errors import PublisherKeyError
from p2p.identity import write_private_file

PREFIX = "ed25519:"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def key_id(public_key: bytes) -> str:
    return hashlib.sha256(public_key).digest()[:16].hex()


def format_public_key(public_key: bytes) -> str:
    return PREFIX + base64.urlsafe_b64encode(public_key).decode("ascii").rstrip("=")


def parse_public_key(text: str) -> bytes:
    """Parse ``ed25519:<base64url>``; raises :class:`PublisherKeyError` with the reason."""
    if not isinstance(text, str) or not text.startswith(PREFIX) or len(text) > 128:
        raise PublisherKeyError(f"public key must look like {PREFIX}<base64url>, got {str(text)[:80]!r}")
    body = text[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError as exc:
        raise PublisherKeyError("public key is not valid base64url") from exc
    if len(raw) != 32:
        raise PublisherKeyError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return raw


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise PublisherKeyError(f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return name


@dataclass(frozen=True)
class PublisherKey:
    """A private publisher key held by this node."""

    name: str
    signing_key: SigningKey

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self.signing_key.sign(message).signature)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(public_key).verify(message, signature)
    except (NaclBadSignature, ValueError, TypeError):
        return False
    return True


class KeyFiles:
    """Private publisher keys as files ``<dir>/<name>.key`` (raw 32-byte seeds, mode 0600)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / f"{check_name(name)}.key"

    def create(self, name: str) -> PublisherKey:
        path = self.path(name)
        if path.exists():
            raise PublisherKeyError(f"a key named {name!r} already exists")
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = SigningKey.generate()
        write_private_file(path, bytes(key))
        return PublisherKey(name, key)

    def load(self, name: str) -> PublisherKey:
        path = self.path(name)
        try:
            seed = path.read_bytes()
        except FileNotFoundError:
            raise PublisherKeyError(
                f"no key named {name!r}; create one with 'accel-node keys new {name}'"
            ) from None
        if len(seed) != 32:
            raise PublisherKeyError(f"key file {path} is corrupt")
        return PublisherKey(name, SigningKey(seed))

    def names(self) -> list[str]:
        if not self.directory.exists():
            return []
        return sorted(p.stem for p in self.directory.glob("*.key") if NAME_RE.fullmatch(p.stem))
