"""The owner's policy in process."""

from __future__ import annotations

from accel_node.audit import AuditLog
from accel_node.core.schemas import PolicyPut, PolicyView
from accel_node.policy import PolicyService, PolicyUpdate, Rule


class LocalPolicy:
    """Reads and changes the policy; every change is recorded in the audit log."""

    def __init__(self, policy: PolicyService, audit: AuditLog) -> None:
        self._policy = policy
        self._audit = audit

    async def get(self) -> PolicyView:
        return PolicyView.model_validate(self._policy.view())

    async def put(self, update: PolicyPut) -> PolicyView:
        rules = None if update.rules is None else [Rule(r.subject, r.action, r.effect) for r in update.rules]
        await self._policy.update(
            PolicyUpdate(rules=rules, revoke=update.revoke, membership=update.membership)
        )
        self._audit.policy_changed(
            "policy changed through the control API",
            rules=-1 if rules is None else len(rules),
            revoked=len(update.revoke),
            membership="unchanged"
            if update.membership is None
            else ("removed" if not update.membership else "set"),
        )
        return await self.get()
