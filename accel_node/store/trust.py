"""Trusted publisher keys (table ``publishers``) and the highest manifest version accepted per
(publisher, name) (table ``model_versions``), which is what refuses rollbacks."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from accel_node.errors import StoreError
from accel_node.store.db import Database
from accel_node.store.rows import Row


@dataclass(frozen=True)
class PublisherRow(Row):
    key_id: str
    name: str
    public_key: bytes  # raw Ed25519 public key
    own: bool  # one of this node's own keys (private half in HOME/keys)
    added_at: float


def _publisher(row: dict[str, Any]) -> PublisherRow:
    return PublisherRow(
        key_id=row["key_id"],
        name=row["name"],
        public_key=bytes(row["public_key"]),
        own=bool(row["own"]),
        added_at=row["added_at"],
    )


class Trust:
    def __init__(self, database: Database) -> None:
        self._db = database.db

    def add_publisher(self, key_id: str, name: str, public_key: bytes, *, own: bool) -> None:
        """Trust ``public_key`` under ``name``; raises StoreError if the name or key is taken."""
        try:
            self._db.table("publishers").insert(
                {
                    "key_id": key_id,
                    "name": name,
                    "public_key": public_key,
                    "own": int(own),
                    "added_at": time.time(),
                }
            )
        except sqlite3.IntegrityError as exc:
            taken = self._db.execute(
                "SELECT name FROM publishers WHERE key_id = ? OR name = ?", [key_id, name]
            ).fetchone()
            raise StoreError(f"already trusted as {taken[0]!r}" if taken else str(exc)) from exc

    def list_publishers(self) -> list[PublisherRow]:
        """Own keys first, then by name."""
        return [_publisher(r) for r in self._db.query("SELECT * FROM publishers ORDER BY own DESC, name")]

    def remove_publisher(self, name_or_key_id: str) -> PublisherRow | None:
        rows = list(
            self._db.query(
                "SELECT * FROM publishers WHERE name = ? OR key_id = ?", [name_or_key_id, name_or_key_id]
            )
        )
        if not rows:
            return None
        self._db.execute("DELETE FROM publishers WHERE key_id = ?", [rows[0]["key_id"]])
        return _publisher(rows[0])

    def publisher_key(self, key_id: str) -> bytes | None:
        row = self._db.execute("SELECT public_key FROM publishers WHERE key_id = ?", [key_id]).fetchone()
        return bytes(row[0]) if row else None

    def publisher_keys(self) -> dict[str, bytes]:
        """Every trusted key by key id: what verifying a manifest package looks keys up in."""
        rows = self._db.execute("SELECT key_id, public_key FROM publishers")
        return {row[0]: bytes(row[1]) for row in rows}

    def highest_model_version(self, publisher: str, name: str) -> int | None:
        row = self._db.execute(
            "SELECT version FROM model_versions WHERE publisher = ? AND name = ?", [publisher, name]
        ).fetchone()
        return int(row[0]) if row else None

    def model_versions(self) -> dict[tuple[str, str], int]:
        """The highest accepted version of every (publisher, name)."""
        rows = self._db.execute("SELECT publisher, name, version FROM model_versions")
        return {(row[0], row[1]): int(row[2]) for row in rows}

    def record_model_version(self, publisher: str, name: str, version: int) -> None:
        """Remember the highest version accepted for (publisher, name); never lowers it."""
        self._db.execute(
            "INSERT INTO model_versions (publisher, name, version, accepted_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (publisher, name) DO UPDATE SET version = max(version, excluded.version), "
            "accepted_at = excluded.accepted_at",
            [publisher, name, version, time.time()],
        )
