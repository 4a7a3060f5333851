"""Shard messages over bulk channels, and the reused channels ("links") to next hops.

- :class:`MessageChannel` sends and receives whole :mod:`~accel_node.shard.wire` messages on one
  :class:`p2p.bulk.Channel`: a message larger than the peer's frame limit is split into parts, and a lock
  keeps the parts of one message together, so many tasks can share the channel. A ``budget`` bounds
  the bytes it may hold for a message in parts (:class:`~accel_node.shard.parts.Reassembler`).
- :class:`Link` is the opening side of a channel: requests (RUN, RESULT) go out with a fresh tag and the
  answer (ACK, FAIL) comes back matched by tag, so many requests are multiplexed on one channel and
  answered in any order. A reader task feeds the answers to their waiters; when the channel breaks every
  waiter gets :class:`ShardLinkError`.
- :class:`LinkPool` keeps one link per (peer, purpose), opens it on first use (one opener at a time per
  peer) through a :class:`~p2p.bulk.ChannelOpener` and holds it open as a task it owns until it breaks,
  idles for ``idle_close_s`` or the pool stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import trio
from libp2p.peer.id import ID
from trio_typing import TaskStatus

from accel_node.shard.errors import ShardLinkError, ShardWireError
from accel_node.shard.parts import Budget, Reassembler, split_frames
from accel_node.shard.wire import DEFAULT_LIMITS, Kind, Message, WireLimits, decode_message, encode_message
from p2p.bulk import BulkError, ChannelClosed, ChannelOpener, FrameChannel, FrameError
from p2p.tasks import FailureHook, OwnedTasks

log = logging.getLogger(__name__)


class MessageChannel:
    """Whole shard messages over one bulk channel (see the module docstring)."""

    def __init__(
        self, channel: FrameChannel, limits: WireLimits = DEFAULT_LIMITS, *, budget: Budget | None = None
    ) -> None:
        self.channel = channel
        self.peer_id = channel.peer_id
        self.limits = limits
        self._reassembler = Reassembler(limits.max_message_bytes, budget=budget)
        self._send_lock = trio.Lock()
        self.broken: str | None = None
        self.messages_sent = 0
        self.messages_received = 0

    async def send(self, message: Message) -> None:
        """Send ``message`` (split into parts when needed). Raises :class:`ShardWireError` when it cannot
        be encoded and :class:`p2p.bulk.BulkError` when the channel breaks."""
        encoded = encode_message(message, self.limits)
        async with self._send_lock:
            if self.broken is not None:
                raise BulkError(f"channel to {self.peer_id} is unusable: {self.broken}")
            try:
                for frame_type, parts in split_frames(encoded, self.channel.max_send_payload):
                    await self.channel.send_parts(parts, frame_type=frame_type)
            except BaseException as exc:  # cut short (cancelled or broken): the stream is out of step
                self.broken = f"a send was cut short ({type(exc).__name__})"
                with trio.CancelScope(shield=True):
                    await self.channel.aclose()
                raise
            self.messages_sent += 1

    async def receive(self) -> Message:
        """The next message. :class:`ShardWireError` for a malformed one (the channel stays usable);
        :class:`p2p.bulk.ChannelClosed` at a clean end; other :class:`p2p.bulk.BulkError` (including a
        frame over the channel's own limit, after which the channel is unusable) when it broke."""
        while True:
            try:
                frame = await self.channel.receive()
            except BulkError:
                self._reassembler.close()  # the channel is over: give back a half message's bytes
                raise
            data = self._reassembler.feed(frame.type, frame.payload)
            if data is not None:
                message = decode_message(data, self.limits)
                self.messages_received += 1
                return message

    def discard(self) -> None:
        """Drop a message half received (its bytes are given back to the budget)."""
        self._reassembler.close()

    async def aclose(self) -> None:
        self.discard()
        await self.channel.aclose()


@dataclass
class Waiter:
    """Where the answer to one request arrives (``event`` is set with ``reply`` or ``error``)."""

    tag: int
    event: trio.Event
    reply: Message | None = None
    error: str | None = None

    def answer(self, peer: ID) -> Message:
        """The answer; :class:`ShardLinkError` if the link broke instead."""
        if self.reply is None:
            raise ShardLinkError(f"channel to {peer} broke: {self.error or 'no answer'}")
        return self.reply


class Link:
    """The opening side of a channel to ``peer_id``: tagged requests, answers matched by tag."""

    def __init__(self, channel: MessageChannel, purpose: str) -> None:
        self.channel = channel
        self.peer_id = channel.peer_id
        self.purpose = purpose
        self._waiters: dict[int, Waiter] = {}
        self._next_tag = 1
        self.closed: str | None = None  # why the link is no longer usable
        self.last_used = trio.current_time()

    @property
    def pending(self) -> int:
        return len(self._waiters)

    async def submit(self, message: Message) -> Waiter:
        """Send ``message`` with a fresh tag; the :class:`Waiter` its answer will be delivered to. Call
        :meth:`finish` with it when done waiting. Raises :class:`ShardLinkError` if the link is broken."""
        if self.closed is not None:
            raise ShardLinkError(f"link to {self.peer_id} is closed: {self.closed}")
        tag = self._next_tag
        self._next_tag += 1
        self.last_used = trio.current_time()
        waiter = Waiter(tag, trio.Event())
        self._waiters[tag] = waiter
        try:
            await self.channel.send(replace(message, tag=tag))
        except BaseException as exc:
            self.finish(waiter)
            if isinstance(exc, BulkError):
                self.close(f"send failed: {exc}")
                raise ShardLinkError(f"channel to {self.peer_id} broke: {exc}") from exc
            raise
        return waiter

    def finish(self, waiter: Waiter) -> None:
        """Stop waiting for ``waiter``'s answer (a late one is dropped)."""
        self._waiters.pop(waiter.tag, None)

    async def request(self, message: Message, *, timeout_s: float) -> Message:
        """Send ``message``; the peer's ACK or FAIL for it.

        Raises :class:`ShardLinkError` when the link is or becomes broken and :class:`trio.TooSlowError`
        after ``timeout_s`` (the link stays open; a late answer is dropped).
        """
        with trio.fail_after(timeout_s):
            waiter = await self.submit(message)
            try:
                await waiter.event.wait()
            finally:
                self.finish(waiter)
        return waiter.answer(self.peer_id)

    def close(self, reason: str) -> None:
        """Mark the link unusable and fail every waiter (the pool closes the channel)."""
        if self.closed is None:
            self.closed = reason
        for waiter in self._waiters.values():
            if not waiter.event.is_set():
                waiter.error = reason
                waiter.event.set()

    async def read_answers(self, on_malformed: Callable[[ID, str], None]) -> None:
        """Deliver answers to their waiters until the channel ends (returns; never raises)."""
        reason = "closed by the peer"
        try:
            while True:
                message = await self.channel.receive()
                if message.kind not in (Kind.ACK, Kind.FAIL):
                    raise ShardWireError(f"expected ACK or FAIL, got {message.kind.name}")
                waiter = self._waiters.get(message.tag)
                if waiter is not None and not waiter.event.is_set():
                    waiter.reply = message
                    waiter.event.set()
        except ChannelClosed:
            pass
        except (ShardWireError, FrameError) as exc:  # the peer sent garbage: stop talking to it here
            reason = f"malformed answer: {exc}"
            on_malformed(self.peer_id, reason)
        except BulkError as exc:
            reason = str(exc)
        finally:
            self.close(reason)


class LinkPool:
    """One reused :class:`Link` per (peer, purpose); see the module docstring. Start :meth:`run` first.

    Owns, while :meth:`run` runs, one task per open link (it holds the channel and reads the
    answers); a link's failure ends that link only, and one outside its handling is logged and
    passed to ``on_failure``. All links close when the pool stops.
    """

    def __init__(
        self,
        opener: ChannelOpener,
        *,
        limits: WireLimits = DEFAULT_LIMITS,
        open_timeout_s: float = 10.0,
        idle_close_s: float = 300.0,
        on_malformed: Callable[[ID, str], None] | None = None,
        on_failure: FailureHook | None = None,
    ) -> None:
        self.opener = opener
        self.limits = limits
        self.open_timeout_s = open_timeout_s
        self.idle_close_s = idle_close_s
        self._on_malformed = on_malformed or (lambda _peer, _reason: None)
        self._links: dict[tuple[ID, str], Link] = {}
        self._opening: dict[tuple[ID, str], trio.Lock] = {}
        self._tasks = OwnedTasks("shard-links", on_failure=on_failure)
        self.opened = 0

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the links open until cancelled (they all close then)."""
        async with self._tasks.open():
            try:
                task_status.started()
                while True:
                    await trio.sleep(max(1.0, self.idle_close_s / 4))
                    await self._close_idle()
            finally:
                for link in self._links.values():
                    link.close("the link pool stopped")

    def links(self) -> list[Link]:
        return list(self._links.values())

    async def _close_idle(self) -> None:
        """Close links with nothing pending that carried nothing for ``idle_close_s``."""
        now = trio.current_time()
        for link in list(self._links.values()):
            if link.pending == 0 and now - link.last_used >= self.idle_close_s:
                link.close("idle")
                await link.channel.aclose()  # its reader ends, and the link leaves the pool

    async def get(self, peer: ID, purpose: str) -> Link:
        """The open link to ``peer`` for ``purpose``, opened now if there is none."""
        key = (peer, purpose)
        link = self._links.get(key)
        if link is not None and link.closed is None:
            return link
        lock = self._opening.setdefault(key, trio.Lock())
        async with lock:
            link = self._links.get(key)
            if link is not None and link.closed is None:
                return link
            if not self._tasks.running:
                raise ShardLinkError("the link pool is not running")
            try:
                opened: Link = await self._tasks.start("link", self._hold, peer, purpose)
            except BulkError as exc:
                raise ShardLinkError(f"cannot open a {purpose} channel to {peer}: {exc}") from exc
            return opened

    async def _hold(self, peer: ID, purpose: str, *, task_status: TaskStatus[Link]) -> None:
        key = (peer, purpose)
        started = False
        link: Link | None = None
        try:
            async with self.opener.open(peer, purpose, encrypted=True, timeout_s=self.open_timeout_s) as chan:
                link = Link(MessageChannel(chan, self.limits), purpose)
                self._links[key] = link
                self.opened += 1
                task_status.started(link)
                started = True
                await link.read_answers(self._on_malformed)
        except BulkError:
            if not started:
                raise
        except Exception as exc:  # a link's failure must never take the pool down
            if not started:
                raise ShardLinkError(f"cannot open a {purpose} channel to {peer}: {exc}") from exc
            log.info("shard link failed", extra={"peer_id": str(peer), "error": str(exc)})
        finally:
            if link is not None:
                link.close("channel closed")
                if self._links.get(key) is link:
                    del self._links[key]
