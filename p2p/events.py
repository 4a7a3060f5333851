"""Security events: what a protocol refused or caught, reported to whoever keeps the record.

``p2p`` never imports ``accel_node``, yet the node's audit log must hear of every connection or
request a protocol refused, every signature or CID that failed, every resource limit that was hit.
So protocols take an :data:`EventSink` (a plain callable; the default drops events) and report a
:class:`SecurityEvent`; the node hands them the audit log's sink.

Sinks are called synchronously from protocol code and must not block (the audit log queues and
writes from its own task). Events name peers and protocols, never secrets; ``reason`` is for the
operator and is never sent to a peer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# kinds of events (stable strings: the audit log stores them)
REFUSED = "refused"  # a connection, channel or request refused (limit, policy, malformed)
LIMIT = "limit"  # a resource limit was hit
POLICY_DENIED = "policy-denied"  # the owner's policy does not allow this peer this action
BAD_SIGNATURE = "bad-signature"  # a signature or token did not verify
BAD_CONTENT = "bad-content"  # bytes did not match their CID, or a record/manifest was malformed
CHEATING = "cheating"  # authenticated evidence that a peer lied (e.g. a wrong stage result)
TOKEN_USED = "token-used"  # noqa: S105 # a capability token was accepted for an action
PENALISED = "penalised"  # a peer was penalised (with the reason)


@dataclass(frozen=True)
class SecurityEvent:
    """One security-relevant event; ``details`` holds short scalar facts (no secrets, no blobs)."""

    kind: str
    protocol: str
    peer: str | None = None
    reason: str = ""
    details: Mapping[str, str | int | float | bool] = field(default_factory=dict)


EventSink = Callable[[SecurityEvent], None]


def drop(event: SecurityEvent) -> None:
    """The default sink: nobody keeps a record."""
