"""Measured runs of models (table ``measurements``): benchmark sweeps and sampled live requests.
They are history: kept when the model is removed, and never updated."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from accel_node.store.db import Database
from accel_node.store.rows import Row


@dataclass(frozen=True)
class MeasurementRow(Row):
    id: int
    model_cid: str
    variant: str
    batch: int
    threads: int | None
    seq_len: int | None
    latency_ms: float  # median
    latency_p90_ms: float | None
    throughput: float  # items (rows) per second
    peak_rss_bytes: int | None
    fingerprint: str | None  # hardware fingerprint of the machine that measured
    source: str  # bench | live
    created_at: float


_COLUMNS = tuple(MeasurementRow.__dataclass_fields__)


class Measurements:
    def __init__(self, database: Database) -> None:
        self._db = database.db

    def record(self, rows: list[dict[str, Any]]) -> None:
        """Insert measurements, each a dict of the table's columns (``id`` and ``created_at`` are set
        here; an unknown column is an error)."""
        now = time.time()
        self._db.table("measurements").insert_all(
            [{"created_at": now, **row} for row in rows], alter=False, pk="id"
        )

    def all(self, model_cid: str | None = None, *, limit: int = 1000) -> list[MeasurementRow]:
        """Newest first, optionally only those of ``model_cid``."""
        where, args = ("WHERE model_cid = ?", [model_cid]) if model_cid else ("", [])
        rows = self._db.query(f"SELECT * FROM measurements {where} ORDER BY id DESC LIMIT ?", [*args, limit])  # noqa: S608
        return [MeasurementRow(**{column: row[column] for column in _COLUMNS}) for row in rows]
