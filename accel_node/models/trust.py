"""The trust store: which publisher keys this node accepts manifests from.

Public keys and names live in the node store (table ``publishers``); the private halves of the
node's own keys live in 0600 files (``HOME/keys``). A node trusts its own keys: creating a key adds
it to the trust store, and own keys cannot be removed from it. The store also remembers the highest
manifest version accepted per (publisher, name), which is what refuses rollbacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from accel_node.errors import StoreError
from accel_node.models.errors import PublisherKeyError, PublisherKeyNotFoundError
from accel_node.models.keys import (
    KeyFiles,
    PublisherKey,
    check_name,
    format_public_key,
    key_id,
    parse_public_key,
)
from accel_node.store import AsyncStore, PublisherRow


@dataclass(frozen=True)
class TrustedKey:
    name: str
    key_id: str
    public_key: str  # text form, ed25519:<base64url>
    own: bool

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "key_id": self.key_id, "public_key": self.public_key, "own": self.own}


def _trusted(row: PublisherRow) -> TrustedKey:
    return TrustedKey(row.name, row.key_id, format_public_key(row.public_key), row.own)


class TrustStore:
    def __init__(self, store: AsyncStore, key_files: KeyFiles) -> None:
        self._store = store
        self._files = key_files

    async def new_key(self, name: str) -> TrustedKey:
        """Create an own publisher key (private part in a 0600 file) and trust it."""
        check_name(name)
        existing = {t.name for t in await self.all()}
        if name in existing:
            raise PublisherKeyError(f"the name {name!r} is already used in the trust store")
        key = self._files.create(name)
        await self._add(key.key_id, name, key.public_key, own=True)
        return TrustedKey(name, key.key_id, format_public_key(key.public_key), True)

    def signing_key(self, name: str) -> PublisherKey:
        return self._files.load(name)

    async def add(self, public_key_text: str, name: str) -> TrustedKey:
        """Trust a publisher's public key under ``name``."""
        check_name(name)
        raw = parse_public_key(public_key_text)
        await self._add(key_id(raw), name, raw, own=False)
        return TrustedKey(name, key_id(raw), format_public_key(raw), False)

    async def _add(self, kid: str, name: str, raw: bytes, *, own: bool) -> None:
        try:
            await self._store.add_publisher(kid, name, raw, own=own)
        except StoreError as exc:
            raise PublisherKeyError(f"cannot trust key {kid} as {name!r}: {exc}") from exc

    async def all(self) -> list[TrustedKey]:
        return [_trusted(r) for r in await self._store.list_publishers()]

    async def own_keys(self) -> list[TrustedKey]:
        return [t for t in await self.all() if t.own]

    async def remove(self, name_or_key_id: str) -> TrustedKey:
        for trusted in await self.all():
            if name_or_key_id in (trusted.name, trusted.key_id):
                if trusted.own:
                    raise PublisherKeyError(f"{trusted.name!r} is this node's own key; own keys stay trusted")
                await self._store.remove_publisher(trusted.key_id)
                return trusted
        raise PublisherKeyNotFoundError(f"no trusted key named {name_or_key_id[:64]!r}")
