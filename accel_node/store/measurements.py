"""Measured runs of models (table ``measurements``): benchmark sweeps and sampled live requests.
They are history: kept when the model is removed, and never updated."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from accel_node.store.db import Database
from accel_node.store.rows import Row, json_or_none


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
    dims: dict[str, int] | None = None  # symbolic dim name -> value the run used
    features: dict[str, Any] | None = None  # accel_node.predict.types.Workload.to_dict()
    hardware: dict[str, Any] | None = None  # accel_node.predict.types.HardwareFeatures.to_dict()
    op_times: dict[str, float] | None = None  # ONNX operator type -> mean ms per run (ORT profiler)


_COLUMNS = tuple(MeasurementRow.__dataclass_fields__)
JSON_COLUMNS = ("dims", "features", "hardware", "op_times")


def _encode(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: json.dumps(value, sort_keys=True) if key in JSON_COLUMNS and value is not None else value
        for key, value in row.items()
    }


def _decode(row: dict[str, Any]) -> MeasurementRow:
    return MeasurementRow(
        **{
            column: json_or_none(row[column]) if column in JSON_COLUMNS else row[column]
            for column in _COLUMNS
        }
    )


class Measurements:
    def __init__(self, database: Database) -> None:
        self._db = database.db

    def record(self, rows: list[dict[str, Any]]) -> None:
        """Insert measurements, each a dict of the table's columns (``id`` and ``created_at`` are set
        here; an unknown column is an error; the JSON columns take dicts)."""
        now = time.time()
        self._db.table("measurements").insert_all(
            [{"created_at": now, **_encode(row)} for row in rows], alter=False, pk="id"
        )

    def all(self, model_cid: str | None = None, *, limit: int = 1000) -> list[MeasurementRow]:
        """Newest first, optionally only those of ``model_cid``."""
        where, args = ("WHERE model_cid = ?", [model_cid]) if model_cid else ("", [])
        rows = self._db.query(f"SELECT * FROM measurements {where} ORDER BY id DESC LIMIT ?", [*args, limit])  # noqa: S608
        return [_decode(row) for row in rows]

    def count(self) -> int:
        """How many measurements there are (the predictor retrains when enough new ones arrived)."""
        return int(self._db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])

    def since(self, after_id: int, *, limit: int = 100_000) -> list[MeasurementRow]:
        """Measurements with an id above ``after_id``, oldest first (training sets, retraining)."""
        query = "SELECT * FROM measurements WHERE id > ? ORDER BY id LIMIT ?"
        rows = self._db.query(query, [after_id, limit])
        return [_decode(row) for row in rows]
