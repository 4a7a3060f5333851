"""The owner's policy: rules (table ``policy_rules``), revoked capability tokens
(``token_revocations``), the network's membership list (``policy_membership``, the signed bytes, one
row) and what assigners made this node pin (``assign_pins``: the quota per assigner is summed here,
so it holds across restarts)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from accel_node.store.db import Database
from accel_node.store.rows import Row


@dataclass(frozen=True)
class RuleRow(Row):
    subject: str  # a peer id or role:<name>
    action: str
    effect: str  # allow | deny
    added_at: float


@dataclass(frozen=True)
class RevocationRow(Row):
    token_id: str
    revoked_at: float


class PolicyRepo:
    def __init__(self, database: Database) -> None:
        self._db = database.db

    def rules(self) -> list[RuleRow]:
        return [
            RuleRow(r["subject"], r["action"], r["effect"], r["added_at"])
            for r in self._db.query("SELECT * FROM policy_rules ORDER BY subject, action")
        ]

    def replace_rules(self, rules: list[tuple[str, str, str]]) -> None:
        """Make the rules exactly ``rules`` (subject, action, effect); one transaction."""
        now = time.time()
        with self._db.conn:
            self._db.conn.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM policy_rules")
            for subject, action, effect in rules:
                self._db.execute(
                    "INSERT OR REPLACE INTO policy_rules (subject, action, effect, added_at) "
                    "VALUES (?, ?, ?, ?)",
                    [subject, action, effect, now],
                )

    def revocations(self) -> list[RevocationRow]:
        return [
            RevocationRow(r["token_id"], r["revoked_at"])
            for r in self._db.query("SELECT * FROM token_revocations ORDER BY revoked_at, token_id")
        ]

    def revoke(self, token_ids: list[str], *, forget_before: float) -> None:
        """Add revocations; drop those older than ``forget_before`` (no token lives that long)."""
        now = time.time()
        with self._db.conn:
            self._db.conn.execute("BEGIN IMMEDIATE")
            for token_id in token_ids:
                self._db.execute(
                    "INSERT OR IGNORE INTO token_revocations (token_id, revoked_at) VALUES (?, ?)",
                    [token_id, now],
                )
            self._db.execute("DELETE FROM token_revocations WHERE revoked_at < ?", [forget_before])

    def membership(self) -> bytes | None:
        row = self._db.execute("SELECT raw FROM policy_membership WHERE id = 1").fetchone()
        return bytes(row[0]) if row else None

    def set_membership(self, raw: bytes | None, version: int) -> None:
        if raw is None:
            self._db.execute("DELETE FROM policy_membership WHERE id = 1")
            return
        self._db.execute(
            "INSERT OR REPLACE INTO policy_membership (id, raw, version, set_at) VALUES (1, ?, ?, ?)",
            [raw, version, time.time()],
        )

    def assigned_bytes(self, assigner: str) -> int:
        row = self._db.execute(
            "SELECT COALESCE(SUM(bytes), 0) FROM assign_pins WHERE assigner = ?", [assigner]
        ).fetchone()
        return int(row[0])

    def record_assigned(self, cid: str, assigner: str, nbytes: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO assign_pins (cid, assigner, bytes, pinned_at) VALUES (?, ?, ?, ?)",
            [cid, assigner, nbytes, time.time()],
        )
