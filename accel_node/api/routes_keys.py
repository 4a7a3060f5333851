"""Routes about publisher keys and the trust store."""

from __future__ import annotations

from fastapi import APIRouter

from accel_node.api.context import ApiContext
from accel_node.api.routing import route
from accel_node.core import endpoints as E
from accel_node.core.schemas import NewKey, TrustedKey, TrustedKeys, TrustRequest


def key_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["keys"])
    keys = ctx.core.keys

    @route(router, E.KEYS_NEW, response_model=TrustedKey, status_code=201)
    async def new_key(body: NewKey) -> TrustedKey:
        """Create a publisher key held by this node (and trusted by it)."""
        return await keys.new_key(body.name)

    @route(router, E.KEYS, response_model=TrustedKeys)
    async def own_keys() -> TrustedKeys:
        """This node's own publisher keys."""
        return await keys.own_keys()

    @route(router, E.TRUST_ADD, response_model=TrustedKey, status_code=201)
    async def add_trust(body: TrustRequest) -> TrustedKey:
        """Trust manifests signed by a publisher's key."""
        return await keys.trust(body.public_key, body.name)

    @route(router, E.TRUST, response_model=TrustedKeys)
    async def list_trust() -> TrustedKeys:
        """Every trusted publisher key, own keys first."""
        return await keys.trusted()

    @route(router, E.TRUST_REMOVE, response_model=TrustedKey)
    async def remove_trust(name: str) -> TrustedKey:
        """Stop trusting a publisher key (by name or key id); own keys cannot be removed."""
        return await keys.untrust(name)

    return router
