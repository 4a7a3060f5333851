"""Installed models (table ``models``): one row per manifest CID, with the verified manifest."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from accel_node.store.db import Database
from accel_node.store.rows import Row


@dataclass(frozen=True)
class ModelRow(Row):
    cid: str  # of the signed manifest package
    name: str
    version: int
    publisher: str  # key id
    size: int  # bytes of all files
    manifest: dict[str, Any]  # Manifest.to_map()
    local: bool  # published here (rather than fetched)
    installed_at: float


def _model(row: dict[str, Any]) -> ModelRow:
    return ModelRow(
        cid=row["cid"],
        name=row["name"],
        version=row["version"],
        publisher=row["publisher"],
        size=row["size"],
        manifest=json.loads(row["manifest"]),
        local=bool(row["local"]),
        installed_at=row["installed_at"],
    )


class Models:
    def __init__(self, database: Database) -> None:
        self._db = database.db

    def record(self, cid: str, manifest: dict[str, Any], *, local: bool) -> None:
        size = sum(int(f["size"]) for f in manifest["files"])
        row = {key: manifest[key] for key in ("name", "version", "publisher")}
        row.update(
            cid=cid, size=size, manifest=json.dumps(manifest), local=int(local), installed_at=time.time()
        )
        self._db.table("models").upsert(row, pk="cid")

    def get(self, cid: str) -> ModelRow | None:
        rows = list(self._db.query("SELECT * FROM models WHERE cid = ?", [cid]))
        return _model(rows[0]) if rows else None

    def all(self) -> list[ModelRow]:
        return [_model(r) for r in self._db.query("SELECT * FROM models ORDER BY name, version")]

    def delete(self, cid: str) -> None:
        self._db.execute("DELETE FROM models WHERE cid = ?", [cid])
