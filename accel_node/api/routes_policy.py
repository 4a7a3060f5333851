"""Routes about the owner's policy (who may use this node for what)."""

from __future__ import annotations

from fastapi import APIRouter

from accel_node.api.context import ApiContext
from accel_node.api.routing import route
from accel_node.core import endpoints as E
from accel_node.core.schemas import PolicyPut, PolicyView


def policy_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["policy"])
    policy = ctx.core.policy

    @route(router, E.POLICY, response_model=PolicyView)
    async def show_policy() -> PolicyView:
        """The policy in effect: mode, default actions, rules, revoked tokens, membership list."""
        return await policy.get()

    @route(router, E.POLICY_PUT, response_model=PolicyView)
    async def put_policy(body: PolicyPut) -> PolicyView:
        """Change the policy: replace the rules, revoke tokens, install or remove the membership list."""
        return await policy.put(body)

    return router
