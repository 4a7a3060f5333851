"""Shard plans known here (table ``shard_plans``, the signed plan bytes) and the stages this node
serves (table ``shard_served``), so that a restarted node serves them again."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from accel_node.store.db import Database
from accel_node.store.rows import Row


@dataclass(frozen=True)
class PlanRow(Row):
    plan_cid: str
    model_cid: str
    raw: bytes  # the signed plan, as published
    planner: str  # peer id of the node that made it
    created_at: float


@dataclass(frozen=True)
class ServedRow(Row):
    plan_cid: str
    stage: int
    model_cid: str
    started_at: float


def _plan(row: dict[str, Any]) -> PlanRow:
    return PlanRow(
        plan_cid=row["plan_cid"],
        model_cid=row["model_cid"],
        raw=bytes(row["raw"]),
        planner=row["planner"],
        created_at=row["created_at"],
    )


class Shards:
    def __init__(self, database: Database) -> None:
        self._db = database.db

    def save_plan(self, plan_cid: str, *, model_cid: str, raw: bytes, planner: str) -> None:
        row = {"plan_cid": plan_cid, "model_cid": model_cid, "raw": raw, "planner": planner,
               "created_at": time.time()}  # fmt: skip
        self._db.table("shard_plans").upsert(row, pk="plan_cid")

    def forget_plan(self, plan_cid: str) -> None:
        """Drop a plan that is not served (an assignment that failed)."""
        self._db.execute(
            "DELETE FROM shard_plans WHERE plan_cid = ? "
            "AND plan_cid NOT IN (SELECT plan_cid FROM shard_served)",
            [plan_cid],
        )

    def get_plan(self, plan_cid: str) -> PlanRow | None:
        rows = list(self._db.query("SELECT * FROM shard_plans WHERE plan_cid = ?", [plan_cid]))
        return _plan(rows[0]) if rows else None

    def list_plans(self, model_cid: str | None = None) -> list[PlanRow]:
        """Newest first, optionally only the plans of ``model_cid``."""
        where, args = ("WHERE model_cid = ?", [model_cid]) if model_cid else ("", [])
        rows = self._db.query(f"SELECT * FROM shard_plans {where} ORDER BY created_at DESC", args)  # noqa: S608
        return [_plan(r) for r in rows]

    def set_served(self, plan_cid: str, stage: int, *, model_cid: str, served: bool) -> None:
        if served:
            row = {"plan_cid": plan_cid, "stage": stage, "model_cid": model_cid, "started_at": time.time()}
            self._db.table("shard_served").upsert(row, pk=("plan_cid", "stage"))
        else:
            self._db.execute("DELETE FROM shard_served WHERE plan_cid = ? AND stage = ?", [plan_cid, stage])

    def list_served(self) -> list[ServedRow]:
        rows = self._db.query("SELECT * FROM shard_served ORDER BY model_cid, plan_cid, stage")
        return [ServedRow(r["plan_cid"], r["stage"], r["model_cid"], r["started_at"]) for r in rows]
