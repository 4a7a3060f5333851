"""The audit log in process: reading its records and checking its chain."""

from __future__ import annotations

import json

from pydantic import ValidationError

from accel_node.audit import AuditLog
from accel_node.core.schemas import AuditQuery, AuditRecord, AuditRecords, AuditVerification
from accel_node.errors import InvalidRequestError
from accel_node.store import AuditRow


def _record(row: AuditRow) -> AuditRecord:
    try:
        details = json.loads(row.details)
    except ValueError:  # a tampered row: shown as text (verify names it)
        details = {"unreadable": row.details[:200]}
    return AuditRecord(
        seq=row.seq,
        at=row.at,
        kind=row.kind,
        protocol=row.protocol,
        peer=row.peer,
        reason=row.reason,
        details=details if isinstance(details, dict) else {"unreadable": str(details)[:200]},
        prev=row.prev,
        hash=row.hash,
    )


class LocalAudit:
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    async def tail(
        self, *, limit: int = 100, after: int | None = None, kind: str | None = None
    ) -> AuditRecords:
        try:  # the bounds the HTTP query has, refused alike
            query = AuditQuery(limit=limit, after=after, kind=kind)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise InvalidRequestError(f"invalid request: {problems}") from exc
        await self._audit.flush()  # what was reported before this call is in the answer
        rows = await self._audit.records(limit=query.limit, after=query.after, kind=query.kind)
        return AuditRecords(
            records=[_record(r) for r in rows], head_seq=self._audit.head[0], dropped=self._audit.dropped
        )

    async def verify(self) -> AuditVerification:
        await self._audit.flush()
        result = await self._audit.verify()
        problem = result.problem
        return AuditVerification(
            ok=result.ok,
            records=result.records,
            anchor_seq=result.anchor_seq,
            head_seq=result.head_seq,
            checkpoints=result.checkpoints,
            bad_seq=problem.seq if problem else None,
            problem=problem.message if problem else None,
        )
