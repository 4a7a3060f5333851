"""The node's SQLite store: the only package that opens the database file.

- :mod:`.db`: opening the file (WAL, pragmas) and the migrations keyed on ``PRAGMA user_version``.
- One repository per domain, each returning typed rows (:mod:`.rows`): :mod:`.peers` (peers,
  capability records, heartbeats, penalties, link performance), :mod:`.meta` (node meta, hardware
  profiles), :mod:`.trust` (publisher keys, accepted versions), :mod:`.models` (installed models),
  :mod:`.variants` (analyses, precision variants), :mod:`.measurements`, :mod:`.shards` (plans,
  served stages), :mod:`.audit` (the hash-chained audit log, its anchor and signed checkpoints),
  :mod:`.policy` (rules, token revocations, membership, assignment quotas).
- :mod:`.facade`: :class:`AsyncStore`, what the rest of the node uses; it runs every call on one
  worker thread, one at a time.
"""

from accel_node.store.audit import AuditRow, CheckpointRow
from accel_node.store.db import MIGRATIONS, SCHEMA_VERSION
from accel_node.store.facade import AsyncStore
from accel_node.store.measurements import MeasurementRow
from accel_node.store.models import ModelRow
from accel_node.store.peers import PeerRecord, Replay
from accel_node.store.policy import RevocationRow, RuleRow
from accel_node.store.shards import PlanRow, ServedRow
from accel_node.store.trust import PublisherRow
from accel_node.store.variants import VariantRow

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "AsyncStore",
    "AuditRow",
    "CheckpointRow",
    "MeasurementRow",
    "ModelRow",
    "PeerRecord",
    "PlanRow",
    "PublisherRow",
    "Replay",
    "RevocationRow",
    "RuleRow",
    "ServedRow",
    "VariantRow",
]
