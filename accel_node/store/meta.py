"""Small facts about the node itself, as key/value text (table ``meta``), and the hardware profiles
measured on this machine (table ``hardware_profiles``, one per fingerprint and mode)."""

from __future__ import annotations

import json
from typing import Any

from accel_node.store.db import Database


class Meta:
    def __init__(self, database: Database) -> None:
        self._db = database.db

    def set(self, key: str, value: str) -> None:
        self._db.table("meta").upsert({"key": key, "value": value}, pk="key")

    def get(self, key: str) -> str | None:
        rows = list(self._db.query("SELECT value FROM meta WHERE key = ?", [key]))
        return str(rows[0]["value"]) if rows else None


class Profiles:
    """Profiles are kept as the JSON the profiler produced: the hardware package owns their shape."""

    def __init__(self, database: Database) -> None:
        self._db = database.db

    def save(self, fingerprint: str, mode: str, created_at: float, data: dict[str, Any]) -> None:
        self._db.table("hardware_profiles").upsert(
            {"fingerprint": fingerprint, "mode": mode, "created_at": created_at, "data": json.dumps(data)},
            pk=("fingerprint", "mode"),
        )

    def latest(self, fingerprint: str) -> dict[str, Any] | None:
        """The newest stored profile (any mode) taken on hardware with ``fingerprint``."""
        rows = list(
            self._db.query(
                "SELECT data FROM hardware_profiles WHERE fingerprint = ? ORDER BY created_at DESC LIMIT 1",
                [fingerprint],
            )
        )
        return dict(json.loads(rows[0]["data"])) if rows else None
