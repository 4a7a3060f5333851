"""What the repositories return: frozen dataclasses, one per kind of row.

Callers read attributes instead of indexing dicts, so a renamed column is a type error rather than
a ``KeyError`` at run time. :meth:`Row.as_dict` gives back the dict the API has always rendered
(the same field names, in column order, with JSON columns decoded).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def json_or_none(text: str | None) -> Any:
    """A nullable JSON column, decoded."""
    return None if text is None else json.loads(text)
