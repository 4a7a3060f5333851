"""Publisher keys and the trust store in process."""

from __future__ import annotations

from accel_node.audit import KEY_CHANGE, TRUST_CHANGE, AuditLog
from accel_node.core.schemas import TrustedKey, TrustedKeys
from accel_node.models.trust import TrustStore


class LocalKeys:
    def __init__(self, trust: TrustStore, audit: AuditLog) -> None:
        self._trust = trust
        self._audit = audit

    async def _audited(self, kind: str, reason: str, key: TrustedKey) -> TrustedKey:
        self._audit.record(kind, reason=reason, details={"name": key.name, "key_id": key.key_id})
        await self._audit.flush()
        return key

    async def new_key(self, name: str) -> TrustedKey:
        key = TrustedKey(**(await self._trust.new_key(name)).as_dict())
        return await self._audited(KEY_CHANGE, "publisher key created", key)

    async def own_keys(self) -> TrustedKeys:
        return TrustedKeys(keys=[TrustedKey(**k.as_dict()) for k in await self._trust.own_keys()])

    async def trust(self, public_key: str, name: str) -> TrustedKey:
        key = TrustedKey(**(await self._trust.add(public_key, name)).as_dict())
        return await self._audited(TRUST_CHANGE, "publisher key trusted", key)

    async def trusted(self) -> TrustedKeys:
        return TrustedKeys(keys=[TrustedKey(**k.as_dict()) for k in await self._trust.all()])

    async def untrust(self, name: str) -> TrustedKey:
        key = TrustedKey(**(await self._trust.remove(name)).as_dict())
        return await self._audited(TRUST_CHANGE, "publisher key no longer trusted", key)
