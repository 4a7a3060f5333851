"""Routes about publisher keys and the trust store."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from accel_node.api.context import ApiContext


class TrustedKey(BaseModel):
    name: str
    key_id: str
    public_key: str = Field(description="ed25519:<base64url>")
    own: bool = Field(description="A key this node holds the private half of (always trusted)")


class TrustedKeys(BaseModel):
    keys: list[TrustedKey]


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64)


class TrustRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    public_key: str = Field(max_length=128, description="ed25519:<base64url>")
    name: str = Field(max_length=64)


def key_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["keys"])
    trust = ctx.trust

    @router.post("/v1/keys", response_model=TrustedKey, status_code=201)
    async def new_key(body: NewKey) -> TrustedKey:
        """Create a publisher key held by this node (and trusted by it)."""
        return TrustedKey(**(await trust.new_key(body.name)).as_dict())

    @router.get("/v1/keys", response_model=TrustedKeys)
    async def own_keys() -> TrustedKeys:
        """This node's own publisher keys."""
        return TrustedKeys(keys=[TrustedKey(**k.as_dict()) for k in await trust.own_keys()])

    @router.post("/v1/trust", response_model=TrustedKey, status_code=201)
    async def add_trust(body: TrustRequest) -> TrustedKey:
        """Trust manifests signed by a publisher's key."""
        return TrustedKey(**(await trust.add(body.public_key, body.name)).as_dict())

    @router.get("/v1/trust", response_model=TrustedKeys)
    async def list_trust() -> TrustedKeys:
        """Every trusted publisher key, own keys first."""
        return TrustedKeys(keys=[TrustedKey(**k.as_dict()) for k in await trust.all()])

    @router.delete("/v1/trust/{name}", response_model=TrustedKey)
    async def remove_trust(name: str) -> TrustedKey:
        """Stop trusting a publisher key (by name or key id); own keys cannot be removed."""
        return TrustedKey(**(await trust.remove(name)).as_dict())

    return router
