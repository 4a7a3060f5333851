""":class:`AuditLog`: the node's record of what was refused, caught, loaded and changed.

Protocols report :class:`p2p.events.SecurityEvent` through :meth:`AuditLog.sink`, synchronously and
from hot paths (a flooding peer makes one refusal per request), so the sink only appends to a
bounded queue: it never waits, never touches the disk, and when the queue is full it counts the
event as dropped (a flood must not grow the daemon's memory). One task, :meth:`AuditLog.run`,
writes the queue to the store in batches (one transaction each), chaining every record to the one
before it (:mod:`accel_node.audit.chain`), and writes a ``audit-dropped`` record saying how many
were lost once space returns. The node's own events (model loads, key, trust, policy and API-token
changes) come through :meth:`AuditLog.record`, the same queue.

Every ``checkpoint_every`` records, and when the task stops, the head (seq and hash) is signed with
the node's key, so that :meth:`AuditLog.verify` also catches a chain rewritten from some record on
or cut short. With ``max_records`` the oldest records are pruned; the last pruned record's hash
stays as the anchor the kept chain starts from, so it still verifies.

Call :meth:`sink` and :meth:`record` from the trio thread (they set a trio event).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio
from libp2p.crypto.keys import KeyPair
from trio_typing import TaskStatus

from accel_node.audit.chain import (
    GENESIS,
    MAX_REASON,
    ChainCheck,
    Problem,
    checkpoint_message,
    clean,
    details_text,
    record_hash,
    sanitise,
)
from accel_node.errors import StoreError
from accel_node.store import AsyncStore, AuditRow, CheckpointRow
from p2p.events import SecurityEvent

log = logging.getLogger(__name__)

# kinds of the node's own records (the protocols' kinds are in p2p.events)
DROPPED = "audit-dropped"
MODEL_LOAD = "model-load"
KEY_CHANGE = "key-change"
TRUST_CHANGE = "trust-change"
POLICY_CHANGE = "policy-change"
TOKEN_ROTATED = "api-token-rotated"  # noqa: S105 - a kind, not a secret
NODE = "accel-node"  # the protocol field of the node's own records

STOP_FLUSH_S = 5.0  # how long the stopping task may take to write what is still queued
VERIFY_PAGE = 2000


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int  # records checked (from the anchor on)
    anchor_seq: int  # records up to this seq were pruned (0: none)
    head_seq: int  # the newest record checked
    checkpoints: int  # signed checkpoints checked
    problem: Problem | None = None


class AuditLog:
    """Started with ``nursery.start(audit.run)``, before anything that reports to it; its final
    flush happens when it is cancelled, so it should be stopped after the services."""

    def __init__(
        self,
        store: AsyncStore,
        *,
        key_pair: KeyPair | None = None,
        queue_size: int = 4096,
        batch_size: int = 512,
        max_records: int = 0,
        checkpoint_every: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._key_pair = key_pair
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._max_records = max_records
        self._checkpoint_every = checkpoint_every
        self._clock = clock
        self._pending: deque[tuple[float, SecurityEvent]] = deque()
        self._inflight: list[tuple[float, SecurityEvent]] = []
        self._unreported = 0  # dropped since the last audit-dropped record
        self.dropped = 0  # dropped in total since start
        self._queued = 0  # events accepted in total
        self._handled = 0  # of those, written (or lost to a store failure)
        self._wake = trio.Event()
        self._progress = trio.Event()
        self._head: tuple[int, str] = (0, GENESIS)
        self._checkpointed = 0  # seq of the last signed checkpoint
        self._pruned_at = 0  # seq when retention was last applied
        self._running = False

    # -- reporting (synchronous, never blocks) ---------------------------------------------------

    def sink(self, event: SecurityEvent) -> None:
        """The node's :data:`p2p.events.EventSink`: queue ``event``, or count it as dropped."""
        if len(self._pending) >= self._queue_size:
            self.dropped += 1
            self._unreported += 1
            return
        self._pending.append((self._clock(), event))
        self._queued += 1
        if not self._wake.is_set():  # (setting a set event still wakes its parking lot: slow)
            self._wake.set()

    def record(
        self,
        kind: str,
        *,
        reason: str = "",
        peer: str | None = None,
        protocol: str = NODE,
        details: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        """Queue one of the node's own events (model load, key/trust/policy/token change)."""
        self.sink(SecurityEvent(kind, protocol, peer, reason, dict(details or {})))

    def policy_changed(self, reason: str, **details: str | int | float | bool) -> None:
        """For the policy (helper H3) and the lead: record that the owner's policy changed."""
        self.record(POLICY_CHANGE, reason=reason, details=details)

    async def flush(self) -> None:
        """Wait until everything queued before this call is written (at once when :meth:`run` is
        not running: nothing would write it)."""
        target = self._queued
        while self._running and self._handled < target:
            await self._progress.wait()

    @property
    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the newest record written."""
        return self._head

    # -- the writer task -----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        head = await self._store.audit_head()
        anchor = await self._store.audit_anchor()
        self._head = (head.seq, head.hash) if head else (anchor or (0, GENESIS))
        checkpoints = await self._store.audit_checkpoints()
        self._checkpointed = checkpoints[-1].seq if checkpoints else 0
        self._pruned_at = self._head[0]
        self._running = True
        task_status.started()
        try:
            while True:
                if not self._pending and not self._unreported:
                    self._wake = trio.Event()
                    await self._wake.wait()
                await self._write_batch()
        finally:
            try:
                with trio.move_on_after(STOP_FLUSH_S) as scope:
                    scope.shield = True
                    while self._inflight or self._pending or self._unreported:
                        await self._write_batch()
                    await self._checkpoint()
            finally:
                self._running = False
                self._progress.set()  # flush() waiters: nothing more will be written

    async def _write_batch(self) -> None:
        if not self._inflight:
            take = min(len(self._pending), self._batch_size)
            self._inflight = [self._pending.popleft() for _ in range(take)]
        entries = list(self._inflight)
        count = self._unreported
        if count:
            drop = SecurityEvent(
                DROPPED, NODE, None, f"dropped {count} events (queue full)", {"count": count}
            )
            entries.insert(0, (self._clock(), drop))
        try:
            await self._append(entries)
        except StoreError as exc:  # a row with the next seq exists (written by someone else): lost
            log.error("audit records not written", extra={"error": str(exc), "records": len(entries)})
            head = await self._store.audit_head()
            self._head = (head.seq, head.hash) if head else self._head
        else:
            self._unreported -= count
        done = len(self._inflight)
        self._inflight = []
        if self._head[0] - self._checkpointed >= self._checkpoint_every:
            await self._checkpoint()
        if self._max_records and self._head[0] - self._pruned_at >= max(1, self._max_records // 10):
            self._pruned_at = self._head[0]
            await self._store.prune_audit(self._max_records)
        self._handled += done
        self._progress.set()
        self._progress = trio.Event()

    async def _append(self, entries: list[tuple[float, SecurityEvent]]) -> None:
        seq, prev = self._head
        rows = []
        for at, event in entries:
            seq += 1
            details = sanitise(event.details)
            reason = clean(event.reason, MAX_REASON)
            kind, protocol = clean(event.kind, 64), clean(event.protocol, 128)
            peer = None if event.peer is None else clean(event.peer, 128)
            text = details_text(details)
            digest = record_hash(
                seq=seq,
                at=at,
                kind=kind,
                protocol=protocol,
                peer=peer,
                reason=reason,
                details=text,
                prev=prev,
            )
            rows.append(AuditRow(seq, at, kind, protocol, peer, reason, text, prev, digest))
            prev = digest
        await self._store.append_audit(rows)
        self._head = (seq, prev)

    async def _checkpoint(self) -> None:
        seq, head_hash = self._head
        if self._key_pair is None or seq <= self._checkpointed:
            return
        at = self._clock()
        signature = self._key_pair.private_key.sign(checkpoint_message(seq, head_hash, at))
        await self._store.add_audit_checkpoint(CheckpointRow(seq, head_hash, at, signature))
        self._checkpointed = seq

    # -- reading -------------------------------------------------------------------------------

    async def records(
        self, *, limit: int = 100, after: int | None = None, kind: str | None = None
    ) -> list[AuditRow]:
        """The ``limit`` newest records, or the first ``limit`` after seq ``after``; oldest first."""
        if after is None:
            return await self._store.audit_newest(limit, kind)
        return await self._store.audit_after(after, limit, kind)

    async def verify(self) -> Verification:
        """Walk the stored chain from its anchor and check the signed checkpoints; the first record
        that does not fit, if any."""
        anchor_seq, anchor_hash = await self._store.audit_anchor() or (0, GENESIS)
        checkpoints = await self._store.audit_checkpoints()
        check = ChainCheck(anchor_seq, anchor_hash)
        check.wanted = {c.seq for c in checkpoints}
        seq = anchor_seq
        while check.problem is None:
            rows = await self._store.audit_after(seq, VERIFY_PAGE)
            if not rows:
                break
            for row in rows:
                if not check.feed(row):
                    break
            seq = rows[-1].seq
        head_seq = check.expected_seq - 1
        problem = check.problem or self._check_checkpoints(checkpoints, check, anchor_seq, head_seq)
        return Verification(problem is None, check.checked, anchor_seq, head_seq, len(checkpoints), problem)

    def _check_checkpoints(
        self, checkpoints: list[CheckpointRow], check: ChainCheck, anchor_seq: int, head_seq: int
    ) -> Problem | None:
        public = self._key_pair.public_key if self._key_pair else None
        for c in checkpoints:
            if public is not None and not public.verify(checkpoint_message(c.seq, c.hash, c.at), c.signature):
                return Problem(c.seq, f"the checkpoint at record {c.seq} is not signed by this node's key")
            if c.seq > head_seq:
                return Problem(
                    head_seq + 1,
                    f"records {head_seq + 1}-{c.seq} missing: a signed checkpoint names record {c.seq}",
                )
            if c.seq > anchor_seq and check.hashes.get(c.seq) != c.hash:
                return Problem(
                    c.seq, f"record {c.seq} differs from the signed checkpoint (the chain was rewritten)"
                )
        return None
