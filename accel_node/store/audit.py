"""The audit log's rows (table ``audit_log``), its anchor (``audit_anchor``) and signed checkpoints
(``audit_checkpoints``).

This repository stores and reads rows verbatim; what a row's hash covers and how the chain is
checked belong to :mod:`accel_node.audit`. Rows are only ever appended (a batch per transaction) or
pruned from the oldest end, in which case the last pruned row's seq and hash become the anchor the
kept chain starts from, so that what is left still verifies.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from accel_node.errors import StoreError
from accel_node.store.db import Database
from accel_node.store.rows import Row

COLUMNS = ("seq", "at", "kind", "protocol", "peer", "reason", "details", "prev", "hash")


@dataclass(frozen=True)
class AuditRow(Row):
    seq: int
    at: float  # unix time the event happened
    kind: str
    protocol: str
    peer: str | None
    reason: str
    details: str  # JSON object of short scalars, as written (decoded by the audit package)
    prev: str  # hex sha256 of the record before (or of the anchor)
    hash: str  # hex sha256 of this record's canonical encoding


@dataclass(frozen=True)
class CheckpointRow(Row):
    seq: int
    hash: str
    at: float
    signature: bytes


def _row(row: sqlite3.Row | tuple[Any, ...]) -> AuditRow:
    return AuditRow(*row)


class AuditRecords:
    def __init__(self, database: Database) -> None:
        self._conn = database.conn

    def append(self, rows: list[AuditRow]) -> None:
        """Insert ``rows`` in one transaction; a seq already taken is a StoreError (nothing written)."""
        if not rows:
            return
        marks = ", ".join("?" * len(COLUMNS))
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES ({marks})",  # noqa: S608
                    [tuple(getattr(r, c) for c in COLUMNS) for r in rows],
                )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"audit record {rows[0].seq} cannot be appended: {exc}") from exc

    def head(self) -> AuditRow | None:
        """The newest row."""
        found = self._conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM audit_log ORDER BY seq DESC LIMIT 1"  # noqa: S608
        ).fetchone()
        return _row(found) if found else None

    def anchor(self) -> tuple[int, str] | None:
        """``(seq, hash)`` of the last pruned row, or None when nothing was ever pruned."""
        found = self._conn.execute("SELECT seq, hash FROM audit_anchor WHERE id = 1").fetchone()
        return (int(found[0]), str(found[1])) if found else None

    def after(self, seq: int, limit: int, kind: str | None = None) -> list[AuditRow]:
        """Up to ``limit`` rows with a seq above ``seq``, oldest first (of ``kind`` if given)."""
        where, args = ("seq > ? AND kind = ?", [seq, kind]) if kind else ("seq > ?", [seq])
        query = f"SELECT {', '.join(COLUMNS)} FROM audit_log WHERE {where} ORDER BY seq LIMIT ?"  # noqa: S608
        return [_row(r) for r in self._conn.execute(query, [*args, limit])]

    def newest(self, limit: int, kind: str | None = None) -> list[AuditRow]:
        """The ``limit`` newest rows (of ``kind`` if given), oldest first."""
        where, args = ("WHERE kind = ?", [kind]) if kind else ("", [])
        query = f"SELECT {', '.join(COLUMNS)} FROM audit_log {where} ORDER BY seq DESC LIMIT ?"  # noqa: S608
        return [_row(r) for r in reversed(self._conn.execute(query, [*args, limit]).fetchall())]

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM audit_log").fetchone()[0])

    def prune(self, keep: int) -> int:
        """Delete all but the ``keep`` newest rows, the last deleted one becoming the anchor; the
        number of rows deleted."""
        head = self.head()
        if head is None:
            return 0
        cut = head.seq - keep
        found = self._conn.execute(
            "SELECT seq, hash FROM audit_log WHERE seq <= ? ORDER BY seq DESC LIMIT 1", [cut]
        )
        last = found.fetchone()
        if last is None:
            return 0
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                [last[0], last[1]],
            )
            deleted = self._conn.execute("DELETE FROM audit_log WHERE seq <= ?", [last[0]]).rowcount
            self._conn.execute("DELETE FROM audit_checkpoints WHERE seq <= ?", [last[0]])
        return int(deleted)

    def add_checkpoint(self, checkpoint: CheckpointRow) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO audit_checkpoints (seq, hash, at, signature) VALUES (?, ?, ?, ?)",
            [checkpoint.seq, checkpoint.hash, checkpoint.at, checkpoint.signature],
        )

    def checkpoints(self) -> list[CheckpointRow]:
        """Every signed checkpoint, oldest first."""
        rows = self._conn.execute("SELECT seq, hash, at, signature FROM audit_checkpoints ORDER BY seq")
        return [CheckpointRow(int(r[0]), str(r[1]), float(r[2]), bytes(r[3])) for r in rows]
