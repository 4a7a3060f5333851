"""What is derived from an installed model: its analyses at given symbolic dims (table
``model_analysis``) and its precision variants (table ``model_variants``, one per kind)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from accel_node.store.db import Database
from accel_node.store.rows import Row, json_or_none


@dataclass(frozen=True)
class VariantRow(Row):
    cid: str  # of the variant's ONNX file
    parent: str  # model CID it was derived from
    variant: str  # int8, fp16, ...
    accuracy: Any  # measured accuracy delta against the parent (JSON), None if not measured
    size: int
    created_at: float


def _variant(row: dict[str, Any]) -> VariantRow:
    return VariantRow(
        cid=row["cid"],
        parent=row["parent"],
        variant=row["variant"],
        accuracy=json_or_none(row["accuracy"]),
        size=row["size"],
        created_at=row["created_at"],
    )


class Derived:
    def __init__(self, database: Database) -> None:
        self._db = database.db

    def save_analysis(self, cid: str, dims: dict[str, int], data: dict[str, Any]) -> None:
        key = json.dumps(dims, sort_keys=True)
        row = {"cid": cid, "dims": key, "data": json.dumps(data), "created_at": time.time()}
        self._db.table("model_analysis").upsert(row, pk=("cid", "dims"))

    def get_analysis(self, cid: str, dims: dict[str, int]) -> dict[str, Any] | None:
        """The analysis saved for ``dims`` (the order of its keys does not matter)."""
        key = json.dumps(dims, sort_keys=True)
        query = "SELECT data FROM model_analysis WHERE cid = ? AND dims = ?"
        row = self._db.execute(query, [cid, key]).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def save_variant(
        self, cid: str, *, parent: str, variant: str, accuracy: dict[str, Any], size: int
    ) -> None:
        """Record a built variant; it replaces any earlier variant of the same kind of ``parent``."""
        row = {
            "cid": cid,
            "parent": parent,
            "variant": variant,
            "accuracy": json.dumps(accuracy),
            "size": size,
            "created_at": time.time(),
        }
        self._db.execute("DELETE FROM model_variants WHERE parent = ? AND variant = ?", [parent, variant])
        self._db.table("model_variants").upsert(row, pk="cid")

    def list_variants(self, parent: str) -> list[VariantRow]:
        rows = self._db.query("SELECT * FROM model_variants WHERE parent = ? ORDER BY variant", [parent])
        return [_variant(r) for r in rows]

    def get_variant(self, parent: str, variant: str) -> VariantRow | None:
        return next((v for v in self.list_variants(parent) if v.variant == variant), None)

    def delete_model_data(self, cid: str) -> None:
        """Forget what was derived from a removed model (analysis, variants); measurements stay."""
        self._db.execute("DELETE FROM model_analysis WHERE cid = ?", [cid])
        self._db.execute("DELETE FROM model_variants WHERE parent = ?", [cid])
