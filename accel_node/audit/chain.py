"""What a record's hash covers, and checking a chain of records.

Each record's ``hash`` is the SHA-256 of its canonical encoding, which includes its ``seq`` and the
``prev`` hash of the record before it (the first record follows the anchor: :data:`GENESIS`, or the
last pruned record). So editing a record changes its hash; deleting, inserting or reordering
records breaks the ``seq`` run or the ``prev`` links. :class:`ChainCheck` walks rows in seq order
and names the first one that does not fit.

A chain alone cannot show that all of it was rewritten consistently, or that its newest records
were cut off: the node therefore signs checkpoints (seq and hash of the head) with its own key,
and :func:`checkpoint_message` is what is signed.

The encoding is a JSON array of the fields in a fixed order, no spaces (floats as Python writes
them, which round-trips through SQLite's REAL exactly); ``details`` enters as the text stored (JSON
with sorted keys of the sanitised details, :func:`sanitise` and :func:`details_text`), so even a
change of its spacing shows.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from accel_node.store import AuditRow

GENESIS = "0" * 64  # the prev hash of the very first record
MAX_REASON = 500
MAX_TEXT = 200  # one details value
MAX_DETAILS = 24  # keys of one record's details
Scalar = str | int | float | bool | None


def canonical(
    *,
    seq: int,
    at: float,
    kind: str,
    protocol: str,
    peer: str | None,
    reason: str,
    details: str,
    prev: str,
) -> bytes:
    """A JSON array of the fields in a fixed order (``details`` as its stored, canonical text)."""
    fields = [seq, at, kind, protocol, peer, reason, details, prev]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def record_hash(
    *, seq: int, at: float, kind: str, protocol: str, peer: str | None, reason: str, details: str, prev: str
) -> str:
    """Hex SHA-256 of :func:`canonical` of the fields."""
    encoded = canonical(
        seq=seq, at=at, kind=kind, protocol=protocol, peer=peer, reason=reason, details=details, prev=prev
    )
    return hashlib.sha256(encoded).hexdigest()


def details_text(details: Mapping[str, Scalar]) -> str:
    return json.dumps(dict(details), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


_CONTROL = {i: "?" for i in [*range(32), 127]}  # no terminal escapes from a peer's text into `audit tail`


def clean(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, control characters replaced."""
    text = text[:limit]
    return text if text.isprintable() else text.translate(_CONTROL)


def _scalar(value: object) -> Scalar:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return clean(str(value), MAX_TEXT)


def sanitise(details: Mapping[str, object]) -> dict[str, Scalar]:
    """Short scalars only: the first keys, long text cut, non-finite floats and other objects as text."""
    return {clean(str(k), 64): _scalar(v) for k, v in list(details.items())[:MAX_DETAILS]}


def row_hash(row: AuditRow) -> str:
    """The hash ``row``'s contents call for."""
    return record_hash(
        seq=row.seq,
        at=row.at,
        kind=row.kind,
        protocol=row.protocol,
        peer=row.peer,
        reason=row.reason,
        details=row.details,
        prev=row.prev,
    )


def checkpoint_message(seq: int, head_hash: str, at: float) -> bytes:
    """The bytes a checkpoint's signature covers (domain-separated from anything else the key signs)."""
    return b"accel-node audit checkpoint\n" + json.dumps([seq, head_hash, at]).encode("ascii")


@dataclass(frozen=True)
class Problem:
    seq: int  # the first record that does not fit (or the seq a checkpoint expected)
    message: str


class ChainCheck:
    """Rows fed in seq order from the anchor on; :attr:`problem` is set at the first that does not
    fit, and later rows are not looked at."""

    def __init__(self, anchor_seq: int, anchor_hash: str) -> None:
        self.expected_seq = anchor_seq + 1
        self.prev_hash = anchor_hash
        self.hashes: dict[int, str] = {}  # seq -> hash, for the checkpoints (only those asked for)
        self.wanted: set[int] = set()
        self.checked = 0
        self.problem: Problem | None = None

    def feed(self, row: AuditRow) -> bool:
        """Check one row; False once the chain is broken."""
        if self.problem is not None:
            return False
        if row.seq > self.expected_seq:
            missing = (
                f"{self.expected_seq}"
                if row.seq == self.expected_seq + 1
                else (f"{self.expected_seq}-{row.seq - 1}")
            )
            self.problem = Problem(
                self.expected_seq, f"record {missing} missing (deleted) before record {row.seq}"
            )
        elif row.seq < self.expected_seq:
            self.problem = Problem(row.seq, f"record {row.seq} is out of order")
        elif row_hash(row) != row.hash:
            self.problem = Problem(
                row.seq, f"record {row.seq} was altered: its contents do not match its hash"
            )
        elif row.prev != self.prev_hash:
            self.problem = Problem(
                row.seq,
                f"record {row.seq} does not follow record {row.seq - 1} (its prev hash differs: a record "
                "before it was deleted, inserted or moved)",
            )
        if self.problem is not None:
            return False
        if row.seq in self.wanted:
            self.hashes[row.seq] = row.hash
        self.expected_seq = row.seq + 1
        self.prev_hash = row.hash
        self.checked += 1
        return True
