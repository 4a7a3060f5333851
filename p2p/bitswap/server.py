"""Answering peers' wants: a bounded, de-duplicated want list per peer, answered as a stream.

Why: a want message may name up to :data:`~p2p.bitswap.protocol.MAX_ENTRIES` CIDs and may name the
same one many times. Reading every wanted block into one list before sending (what this module
replaced) let one 45 KB message naming a public 256 KiB block 1024 times hold 256 MiB for as long
as the requester did not read. So, after the decision engine of boxo (Kubo's Bitswap:
``bitswap/server/internal/decision/engine.go`` and ``peer_ledger.go``, options
``MaxQueuedWantlistEntriesPerPeer``, default 1024, and ``MaxOutstandingBytesPerPeer``, 1 MiB):

- **A want list per peer** (:class:`PeerWants`), keyed by CID: a CID wanted twice, in one message
  or in two, is one entry (a want-block upgrades a queued want-have). A CANCEL removes the entry
  wherever it is (queued, being read, waiting to be written); a message with ``wantlist.full``
  replaces the list, so entries it no longer names are not sent. Entries past
  ``ServeLimits.wants_per_peer`` (or past ``wants_total`` for all peers together) are dropped,
  newest first, as boxo truncates an overflowing want list: no DONT_HAVE, which would claim we
  lack a block we have.
- **Answered as a stream**: one answer task per peer reads the wanted blocks one at a time, in a
  worker thread (the block store reads a file and hashes it), takes the block's size from the
  ``bitswap.bytes_in_flight`` resource (:meth:`~p2p.resources.ResourceManager.acquire`: it
  waits), and hands it to the peer's writer, which coalesces what is ready into one message
  (it stops adding at ``ServeLimits.message_bytes``; a block is never split) and releases the
  bytes once the message is written. A requester that does not read therefore holds its per-peer
  share of that resource plus the one block read while waiting for it, never the whole answer.
  Its writes stop at the muxer's flow-control window; py-libp2p's yamux gives up after 5 s
  without a window update, and after one retry on a fresh stream the answer is abandoned and the
  peer's list forgotten.
- **Bounded tasks**: at most one answer task per peer and ``answer_tasks.total`` in all (resource
  ``bitswap.answer_tasks``). A peer with wants while all are busy waits in a FIFO and is started
  when a task ends. A slow reader stalls only its own answer, until ``bytes_in_flight.total /
  per_peer`` of them (16 by default) hold the whole total: other answers then wait for one of
  them to be written or abandoned (seconds, see above).

Every limit hit is reported once per episode as a :data:`~p2p.events.LIMIT` security event.
Wants for blocks we do not have are answered (DONT_HAVE when asked for) and forgotten, unlike
boxo, which remembers them to send the block should it arrive later.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from libp2p.peer.id import ID
from trio_typing import TaskStatus

from p2p.bitswap.protocol import MAX_BLOCK_BYTES, Incoming, blocks_message
from p2p.content.cid import CID
from p2p.events import LIMIT, EventSink, SecurityEvent, drop
from p2p.resources import Limit, Reservation, ResourceManager

log = logging.getLogger(__name__)

PROTOCOL = "bitswap"
BYTES_IN_FLIGHT = "bitswap.bytes_in_flight"
ANSWER_TASKS = "bitswap.answer_tasks"
MIB = 1024 * 1024

BlockGetter = Callable[[bytes], bytes | None]
Sender = Callable[[ID, bytes], Awaitable[None]]


@dataclass(frozen=True)
class ServeLimits:
    """What answering one peer, and all of them, may cost (see the module docstring).

    ``bytes_in_flight.per_peer`` must hold the largest block (:data:`MAX_BLOCK_BYTES`): a block is
    never split, so a smaller share could never be taken.
    """

    wants_per_peer: int = 1024
    wants_total: int = 64 * 1024
    bytes_in_flight: Limit = field(default_factory=lambda: Limit(per_peer=2 * MIB, total=32 * MIB))
    answer_tasks: Limit = field(default_factory=lambda: Limit(per_peer=1, total=128))
    message_bytes: int = MIB

    def __post_init__(self) -> None:
        if self.wants_per_peer < 1 or self.wants_total < self.wants_per_peer or self.message_bytes < 1:
            raise ValueError("wants_per_peer and message_bytes must be >= 1, wants_total >= wants_per_peer")
        if self.bytes_in_flight.per_peer < MAX_BLOCK_BYTES:
            raise ValueError(f"bytes_in_flight.per_peer must be >= {MAX_BLOCK_BYTES} (one block)")
        if self.bytes_in_flight.total < self.bytes_in_flight.per_peer:
            raise ValueError("bytes_in_flight.total must be >= its per_peer share")
        if self.answer_tasks.per_peer < 1 or self.answer_tasks.total < 1:
            raise ValueError("answer_tasks limits must be >= 1")


@dataclass(eq=False)
class WantEntry:
    """One CID a peer wants from us; compared by identity (a re-want is a new entry)."""

    cid: CID
    want_have: bool
    send_dont_have: bool


class PeerWants:
    """One peer's outstanding wants: ``queued`` (not read yet) and ``taken`` (read, not yet
    written); at most ``limit`` entries in both together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._queued: OrderedDict[bytes, WantEntry] = OrderedDict()
        self._taken: dict[bytes, WantEntry] = {}
        self.limited = False  # a limit was hit and reported; reset when the list empties

    def __len__(self) -> int:
        return len(self._queued) + len(self._taken)

    @property
    def has_queued(self) -> bool:
        return bool(self._queued)

    def update(self, message: Incoming, room: int) -> int:
        """Apply a message's wants and cancels, adding at most ``room`` entries (what all peers'
        lists may still hold); the number of wants dropped over either limit."""
        if message.full:
            keep = {cid.encode() for cid, _, _ in message.wants}
            for table in (self._queued, self._taken):
                for key in [k for k in table if k not in keep]:
                    del table[key]
        for cid in message.cancels:
            self._queued.pop(cid.encode(), None)
            self._taken.pop(cid.encode(), None)
        dropped = 0
        for cid, want_have, send_dont_have in message.wants:
            key = cid.encode()
            queued = self._queued.get(key)
            if queued is not None:  # a duplicate: at most upgrade it to a want-block
                queued.want_have = queued.want_have and want_have
                queued.send_dont_have = queued.send_dont_have or send_dont_have
                continue
            taken = self._taken.get(key)
            if taken is not None and (want_have or not taken.want_have):
                continue  # already being answered at least as fully
            if len(self) >= self.limit or room <= 0:
                dropped += 1
                continue
            self._queued[key] = WantEntry(cid, want_have, send_dont_have)
            room -= 1
        return dropped

    def take(self) -> WantEntry | None:
        """The oldest queued entry, now being answered; None when none is queued."""
        if not self._queued:
            return None
        key, entry = self._queued.popitem(last=False)
        self._taken[key] = entry
        return entry

    def wanted(self, entry: WantEntry) -> bool:
        """Whether ``entry`` is still to be answered (not cancelled or replaced meanwhile)."""
        return self._taken.get(entry.cid.encode()) is entry

    def done(self, entry: WantEntry) -> None:
        if self.wanted(entry):
            del self._taken[entry.cid.encode()]
        if not self:
            self.limited = False

    def clear(self) -> None:
        self._queued.clear()
        self._taken.clear()
        self.limited = False


@dataclass
class _Answer:
    """One answer on its way to the writer: a block (with its share of bytes) or a presence."""

    entry: WantEntry
    data: bytes | None  # None: a presence (HAVE when entry.want_have, else DONT_HAVE)
    have: bool
    reservation: Reservation | None = None

    def release(self) -> None:
        if self.reservation is not None:
            self.reservation.release()


class WantServer:
    """Answers peers' wants from ``get_block`` through ``send``; see the module docstring."""

    def __init__(
        self,
        get_block: BlockGetter,
        send: Sender,
        *,
        resources: ResourceManager | None = None,
        limits: ServeLimits | None = None,
        events: EventSink = drop,
    ) -> None:
        self.limits = limits or ServeLimits()
        self.resources = resources or ResourceManager()
        self.resources.set_limit(BYTES_IN_FLIGHT, self.limits.bytes_in_flight)
        self.resources.set_limit(ANSWER_TASKS, self.limits.answer_tasks)
        self._get_block = get_block
        self._send = send
        self._events = events
        self._wants: dict[ID, PeerWants] = {}
        self._wants_held = 0  # entries in all peers' lists
        self._answering: set[ID] = set()
        self._ready: deque[ID] = deque()  # peers with wants, waiting for an answer task
        self._nursery: trio.Nursery | None = None
        self.blocks_sent = 0
        self.blocks_read = 0  # blocks read from the store to answer wants
        self.bytes_read = 0

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    @property
    def wants_held(self) -> int:
        """Entries in all peers' want lists together (bounded by ``limits.wants_total``)."""
        return self._wants_held

    def pending(self, peer: ID) -> int:
        """The entries of ``peer``'s want list (queued or being answered)."""
        wants = self._wants.get(peer)
        return 0 if wants is None else len(wants)

    def on_message(self, peer: ID, message: Incoming) -> None:
        """Apply a message's wants, cancels and ``full`` flag; start answering if there is work."""
        if not (message.wants or message.cancels or message.full):
            return
        wants = self._wants.get(peer)
        if wants is None:
            if not message.wants:
                return
            wants = self._wants[peer] = PeerWants(self.limits.wants_per_peer)
        before = len(wants)
        dropped = wants.update(message, self.limits.wants_total - self._wants_held)
        self._wants_held += len(wants) - before
        if dropped:
            self._report_limit(peer, wants, "bitswap.wants", f"{dropped} want(s) over the limit dropped")
        if wants.has_queued:
            self._schedule(peer)
        elif not wants and peer not in self._answering:
            del self._wants[peer]

    # -- answer tasks ---------------------------------------------------------------------------

    def _schedule(self, peer: ID) -> None:
        if peer in self._answering or peer in self._ready or self._nursery is None:
            return
        slot = self.resources.try_reserve(ANSWER_TASKS, str(peer))
        if slot is None:
            self._ready.append(peer)
            self._report_limit(peer, self._wants[peer], ANSWER_TASKS, "all answer tasks busy; queued")
            return
        self._answering.add(peer)
        self._nursery.start_soon(self._answer, peer, slot)

    async def _answer(self, peer: ID, slot: Reservation) -> None:
        wants = self._wants[peer]
        send, receive = trio.open_memory_channel[_Answer](math.inf)  # bounded by the reservations
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, peer, wants, receive)
                async with send:
                    await self._read(peer, wants, send)
        except Exception as exc:  # e.g. the peer cannot be written to: forget its wants
            log.info("bitswap answer abandoned", extra={"peer_id": str(peer), "error": str(exc)})
            self._wants_held -= len(wants)
            wants.clear()
        finally:
            while True:  # answers never written give their bytes back
                try:
                    receive.receive_nowait().release()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            slot.release()
            self._answering.discard(peer)
            if wants.has_queued:
                self._schedule(peer)
            elif not wants:
                self._wants.pop(peer, None)
            while self._ready and self.resources.used(ANSWER_TASKS) < self.limits.answer_tasks.total:
                other = self._ready.popleft()
                waiting = self._wants.get(other)
                if waiting is not None and waiting.has_queued:
                    self._schedule(other)

    async def _read(self, peer: ID, wants: PeerWants, out: trio.MemorySendChannel[_Answer]) -> None:
        scope = str(peer)
        while (entry := wants.take()) is not None:
            data = await trio.to_thread.run_sync(self._get_block, entry.cid.encode())
            if data is not None and len(data) > MAX_BLOCK_BYTES:
                data = None  # no peer would accept it
            if data is not None:
                self.blocks_read += 1
                self.bytes_read += len(data)
            if not wants.wanted(entry):
                continue  # cancelled while it was read
            if data is None or entry.want_have:
                if data is None and not entry.send_dont_have:
                    self._done(wants, entry)
                else:
                    out.send_nowait(_Answer(entry, None, have=data is not None))
                continue
            reservation = await self.resources.acquire(BYTES_IN_FLIGHT, scope, len(data))
            if not wants.wanted(entry):
                reservation.release()
                continue
            out.send_nowait(_Answer(entry, data, have=True, reservation=reservation))

    async def _write(self, peer: ID, wants: PeerWants, answers: trio.MemoryReceiveChannel[_Answer]) -> None:
        async for first in answers:
            batch, size = [first], len(first.data or b"")
            with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
                while size < self.limits.message_bytes:
                    answer = answers.receive_nowait()
                    batch.append(answer)
                    size += len(answer.data or b"")
            try:
                live = [a for a in batch if wants.wanted(a.entry)]  # cancels honoured until now
                blocks = [(a.entry.cid, a.data) for a in live if a.data is not None]
                haves = [a.entry.cid for a in live if a.data is None and a.have]
                dont_haves = [a.entry.cid for a in live if a.data is None and not a.have]
                if live:
                    await self._send(peer, blocks_message(blocks, haves=haves, dont_haves=dont_haves))
                    self.blocks_sent += len(blocks)
            finally:
                for answer in batch:
                    answer.release()
                    self._done(wants, answer.entry)

    def _done(self, wants: PeerWants, entry: WantEntry) -> None:
        before = len(wants)
        wants.done(entry)
        self._wants_held -= before - len(wants)

    def _report_limit(self, peer: ID, wants: PeerWants, resource: str, reason: str) -> None:
        log.info("bitswap limit", extra={"peer_id": str(peer), "resource": resource, "reason": reason})
        if not wants.limited:
            wants.limited = True
            self._events(SecurityEvent(LIMIT, PROTOCOL, str(peer), reason, {"resource": resource}))
