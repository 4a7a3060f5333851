"""Publisher keys and the trust store in process."""

from __future__ import annotations

from accel_node.core.schemas import TrustedKey, TrustedKeys
from accel_node.models.trust import TrustStore


class LocalKeys:
    def __init__(self, trust: TrustStore) -> None:
        self._trust = trust

    async def new_key(self, name: str) -> TrustedKey:
        return TrustedKey(**(await self._trust.new_key(name)).as_dict())

    async def own_keys(self) -> TrustedKeys:
        return TrustedKeys(keys=[TrustedKey(**k.as_dict()) for k in await self._trust.own_keys()])

    async def trust(self, public_key: str, name: str) -> TrustedKey:
        return TrustedKey(**(await self._trust.add(public_key, name)).as_dict())

    async def trusted(self) -> TrustedKeys:
        return TrustedKeys(keys=[TrustedKey(**k.as_dict()) for k in await self._trust.all()])

    async def untrust(self, name: str) -> TrustedKey:
        return TrustedKey(**(await self._trust.remove(name)).as_dict())
