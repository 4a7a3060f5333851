"""The owner's policy in process."""

from __future__ import annotations

from accel_node.core.schemas import PolicyPut, PolicyView
from accel_node.policy import PolicyService, PolicyUpdate, Rule


class LocalPolicy:
    def __init__(self, policy: PolicyService) -> None:
        self._policy = policy

    async def get(self) -> PolicyView:
        return PolicyView.model_validate(self._policy.view())

    async def put(self, update: PolicyPut) -> PolicyView:
        rules = None if update.rules is None else [Rule(r.subject, r.action, r.effect) for r in update.rules]
        await self._policy.update(
            PolicyUpdate(rules=rules, revoke=update.revoke, membership=update.membership)
        )
        return await self.get()
