"""What an assigning peer may make this node fetch and pin (finding 9).

An assignment makes this node fetch the plan it names and pin it. Without a bound, any peer could
make the node fetch and pin content up to ``[ipfs] store_max_bytes``. So the bytes pinned for each
assigner are recorded in the store (table ``assign_pins``, so the quota holds across restarts) and
an assignment may only fetch what is left of ``[policy] assign_quota_bytes`` for its assigner;
content already recorded for the same CID costs nothing again.
"""

from __future__ import annotations

from accel_node.store import AsyncStore


class AssignQuota:
    def __init__(self, store: AsyncStore, quota_bytes: int) -> None:
        self._store = store
        self.quota_bytes = quota_bytes

    async def left(self, assigner: str) -> int:
        """Bytes ``assigner`` may still make this node pin."""
        return max(0, self.quota_bytes - await self._store.assigned_bytes(assigner))

    async def record(self, cid: str, assigner: str, nbytes: int) -> None:
        await self._store.record_assigned(cid, assigner, nbytes)
