"""The node's audit log: append-only, hash-chained records of security-relevant events.

- :mod:`.chain`: what a record's hash covers (its seq, contents and the hash before it) and the
  walk that names the first record that was edited, deleted, inserted or moved.
- :mod:`.log`: :class:`AuditLog`, the service: a non-blocking :data:`p2p.events.EventSink` for the
  protocols (:meth:`AuditLog.sink`), :meth:`AuditLog.record` for the node's own events, the writer
  task, signed checkpoints of the head, retention, and :meth:`AuditLog.verify`.

Records live in the store (:mod:`accel_node.store.audit`); this package decides what they mean.
"""

from accel_node.audit.chain import GENESIS, Problem
from accel_node.audit.log import (
    DROPPED,
    KEY_CHANGE,
    MODEL_LOAD,
    POLICY_CHANGE,
    TOKEN_ROTATED,
    TRUST_CHANGE,
    AuditLog,
    Verification,
)

__all__ = [
    "DROPPED",
    "GENESIS",
    "KEY_CHANGE",
    "MODEL_LOAD",
    "POLICY_CHANGE",
    "TOKEN_ROTATED",
    "TRUST_CHANGE",
    "AuditLog",
    "Problem",
    "Verification",
]
