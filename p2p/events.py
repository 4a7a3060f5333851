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

import math
from collections.abc import Callable, Hashable, Mapping
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


class EventThrottle:
    """Lets through at most one event per key every ``every_s`` seconds, so that a flood of refused
    requests does not flood the audit log; the next one let through learns how many were left out.

    Keys are bounded by ``max_keys``: when full, keys quiet for ``every_s`` are forgotten first, then
    all of them. Times come from the caller (``now``), on whichever clock it keeps.
    """

    def __init__(self, *, every_s: float = 10.0, max_keys: int = 4096) -> None:
        self.every_s = every_s
        self.max_keys = max_keys
        self._last: dict[Hashable, tuple[float, int]] = {}  # last let through, left out since

    def admit(self, key: Hashable, now: float) -> int | None:
        """None when an event for ``key`` is to be left out (it is counted); else how many were left
        out since the last one let through."""
        last, suppressed = self._last.get(key, (-math.inf, 0))
        if now - last < self.every_s:
            self._last[key] = (last, suppressed + 1)
            return None
        if len(self._last) >= self.max_keys:
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self.every_s}
            if len(self._last) >= self.max_keys:
                self._last.clear()
        self._last[key] = (now, 0)
        return suppressed
