"""Routes about the audit log and the API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from accel_node.api.context import ApiContext
from accel_node.api.routing import route
from accel_node.core import endpoints as E
from accel_node.core.schemas import AuditRecords, AuditVerification, TokenRotated, TokenRotateRequest


def audit_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["audit"])
    audit = ctx.core.audit
    node = ctx.core.node

    @route(router, E.AUDIT, response_model=AuditRecords)
    async def tail(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: Annotated[
            int | None, Query(ge=0, description="Only records after this seq, oldest first")
        ] = None,
        kind: Annotated[str | None, Query(max_length=64)] = None,
    ) -> AuditRecords:
        """The newest audit records (or the first ones after seq ``after``), oldest first."""
        return await audit.tail(limit=limit, after=after, kind=kind)

    @route(router, E.AUDIT_VERIFY, response_model=AuditVerification)
    async def verify() -> AuditVerification:
        """Walk the hash chain and the signed checkpoints; the first record that does not fit."""
        return await audit.verify()

    @route(router, E.API_TOKEN_ROTATE, response_model=TokenRotated)
    async def rotate(body: TokenRotateRequest) -> TokenRotated:
        """Replace the admin (or read-only) API token file; the old token is refused at once."""
        return await node.rotate_token(body.scope)

    return router
