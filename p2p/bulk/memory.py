"""In-memory channels: the real framing without sockets, for tests and for channels to the node itself.

- :func:`memory_stream_pair`: two connected :class:`trio.abc.HalfCloseableStream` ends over bounded trio
  memory channels (a sender waits while ``max_chunks`` writes are unread: back-pressure like TCP's).
- :func:`memory_channel_pair`: two connected :class:`~p2p.bulk.channel.Channel` ends on such a stream
  pair, with the same :class:`~p2p.bulk.framing.FrameEncoder`/:class:`~p2p.bulk.framing.FrameDecoder`,
  payload limits and AEAD (fresh random keys per direction; sealed in ``encrypted`` mode, authenticated in
  ``plain`` mode) as a TCP channel, so that a framing bug shows in memory tests too.
- :class:`MemoryNetwork` and :class:`MemoryTransport`: a registry of in-memory nodes, each a
  :class:`~p2p.bulk.seam.ChannelTransport` that refuses channels like
  :class:`~p2p.bulk.service.BulkService` does and runs handlers as tasks it owns (start
  :meth:`MemoryTransport.run`); a node that is not running is unreachable.

Nothing here touches the clock: under ``trio.testing.MockClock`` the only time that passes is the time
the code under test waits for.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio
from libp2p.peer.id import ID
from multiaddr import Multiaddr
from trio_typing import TaskStatus

from p2p.bulk.channel import Channel
from p2p.bulk.errors import HandshakeError, RefusedError
from p2p.bulk.framing import AES_256_GCM, DEFAULT_MAX_PAYLOAD, KEY_SIZE, FrameDecoder, FrameEncoder
from p2p.bulk.handlers import HandlerTable, Route
from p2p.bulk.handshake import Mode, check_purpose
from p2p.bulk.limits import CHANNELS, BulkLimits
from p2p.bulk.seam import FrameChannel, Handler
from p2p.resources import Reservation, ResourceLimitExceeded, ResourceManager
from p2p.tasks import FailureHook, OwnedTasks

MAX_CHUNKS = 16
"""Unread writes an in-memory stream buffers before its sender waits."""


class MemoryStream(trio.abc.HalfCloseableStream):
    """One end of :func:`memory_stream_pair`. Closing it is seen by the other end as end-of-file (on
    receive) and as a broken stream (on send)."""

    def __init__(
        self, send: trio.MemorySendChannel[bytes], receive: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        self._send = send
        self._receive = receive
        self._pending = b""
        self._eof_sent = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_sent:
            raise trio.ClosedResourceError("send_eof() was called on this stream")
        chunk = bytes(data)
        if not chunk:
            await trio.lowlevel.checkpoint()
            return
        try:
            await self._send.send(chunk)
        except trio.BrokenResourceError as exc:
            raise trio.BrokenResourceError("the other end of the memory stream is closed") from exc

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        self._eof_sent = True
        self._send.close()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self._pending:
            try:
                self._pending = await self._receive.receive()
            except trio.EndOfChannel:
                return b""
        size = len(self._pending) if max_bytes is None else max_bytes
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    async def aclose(self) -> None:
        self._send.close()  # both ends at once, even in a cancelled scope
        self._receive.close()
        await trio.lowlevel.checkpoint()


def memory_stream_pair(max_chunks: int = MAX_CHUNKS) -> tuple[MemoryStream, MemoryStream]:
    """Two connected in-memory stream ends."""
    a_to_b_send, a_to_b_receive = trio.open_memory_channel[bytes](max_chunks)
    b_to_a_send, b_to_a_receive = trio.open_memory_channel[bytes](max_chunks)
    return MemoryStream(a_to_b_send, b_to_a_receive), MemoryStream(b_to_a_send, a_to_b_receive)


def memory_channel_pair(
    opener: ID,
    acceptor: ID,
    purpose: str,
    *,
    mode: Mode = "encrypted",
    cipher: str = AES_256_GCM,
    opener_max_payload: int = DEFAULT_MAX_PAYLOAD,
    acceptor_max_payload: int = DEFAULT_MAX_PAYLOAD,
    max_chunks: int = MAX_CHUNKS,
) -> tuple[Channel, Channel]:
    """Two connected channels, ``opener``'s end first (its ``peer_id`` is ``acceptor``) and then
    ``acceptor``'s. Each side refuses frames over its own ``*_max_payload``, as over TCP."""
    check_purpose(purpose)
    a_stream, b_stream = memory_stream_pair(max_chunks)
    seal = mode == "encrypted"
    a_to_b, b_to_a = os.urandom(KEY_SIZE), os.urandom(KEY_SIZE)
    a = Channel(
        a_stream,
        peer_id=acceptor,
        purpose=purpose,
        mode=mode,
        cipher=cipher,
        encoder=FrameEncoder(max_payload=acceptor_max_payload, cipher=cipher, key=a_to_b, encrypt=seal),
        decoder=FrameDecoder(max_payload=opener_max_payload, cipher=cipher, key=b_to_a, encrypt=seal),
    )
    b = Channel(
        b_stream,
        peer_id=opener,
        purpose=purpose,
        mode=mode,
        cipher=cipher,
        encoder=FrameEncoder(max_payload=opener_max_payload, cipher=cipher, key=b_to_a, encrypt=seal),
        decoder=FrameDecoder(max_payload=acceptor_max_payload, cipher=cipher, key=a_to_b, encrypt=seal),
    )
    return a, b


class MemoryNetwork:
    """The in-memory nodes that can reach each other, by peer id."""

    def __init__(self) -> None:
        self.nodes: dict[ID, MemoryTransport] = {}

    def transport(
        self,
        peer_id: ID,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        idle_timeout_s: float | None = None,
        limits: BulkLimits | None = None,
    ) -> MemoryTransport:
        """A new node ``peer_id`` on this network (reachable once its :meth:`~MemoryTransport.run`
        has started)."""
        if peer_id in self.nodes:
            raise ValueError(f"{peer_id} is already on this memory network")
        node = MemoryTransport(
            self, peer_id, max_payload=max_payload, idle_timeout_s=idle_timeout_s, limits=limits
        )
        self.nodes[peer_id] = node
        return node


class MemoryTransport:
    """One node of a :class:`MemoryNetwork`; see the module docstring.

    Owns (while :meth:`run` runs) the handler tasks of the channels opened to it; ``on_failure``
    hears of one that failed outside the handler (a handler's own failure is logged by the
    handler table and ends only its channel). ``idle_timeout_s`` closes served channels that carry
    no frame for that long, and ``limits`` (when given) bounds the channels each peer and all peers
    together may have open to this node (``bulk.channels``; over it an open is refused "busy"), as
    :class:`~p2p.bulk.service.BulkService` does.
    """

    def __init__(
        self,
        network: MemoryNetwork,
        peer_id: ID,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        idle_timeout_s: float | None = None,
        on_failure: FailureHook | None = None,
        limits: BulkLimits | None = None,
    ) -> None:
        self.network = network
        self.resources: ResourceManager | None = None
        if limits is not None:
            self.resources = ResourceManager()
            limits.declare(self.resources)
        self.idle_timeout_s = idle_timeout_s
        self.peer_id = peer_id
        self.max_payload = max_payload
        self.handlers = HandlerTable()
        self._tasks = OwnedTasks("memory-bulk", on_failure=on_failure)
        self.opened = 0
        self.addrs: dict[ID, list[Multiaddr]] = {}

    @property
    def local_id(self) -> ID:
        return self.peer_id

    def set_handler(self, purpose: str, handler: Handler, *, require_encryption: bool = False) -> None:
        self.handlers.set(purpose, handler, require_encryption=require_encryption)

    def remove_handler(self, purpose: str) -> None:
        self.handlers.remove(purpose)

    def advertised_addrs(self) -> list[Multiaddr]:
        return []

    def learn_addrs(self, peer_id: ID, addrs: Sequence[Multiaddr]) -> None:
        if addrs and peer_id != self.peer_id and not self.addrs.get(peer_id):
            self.addrs[peer_id] = list(addrs)

    @property
    def running(self) -> bool:
        return self._tasks.running

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept channels until cancelled; the handlers' channels are cancelled with it (a crash)."""
        async with self._tasks.open():
            task_status.started()
            await trio.sleep_forever()

    async def _serve(
        self, route: Route, channel: Channel, peer_id: ID, reservation: Reservation | None = None
    ) -> None:
        try:
            await self.handlers.serve(route, channel, peer_id, idle_timeout_s=self.idle_timeout_s)
        finally:
            if reservation is not None:
                reservation.release()

    @asynccontextmanager
    async def open(
        self, peer_id: ID, purpose: str, *, encrypted: bool = True, timeout_s: float = 10.0
    ) -> AsyncIterator[FrameChannel]:
        """A channel to the node ``peer_id`` of the network (this one included); see
        :meth:`p2p.bulk.seam.ChannelOpener.open`."""
        check_purpose(purpose)
        mode: Mode = "encrypted" if encrypted else "plain"
        target = self.network.nodes.get(peer_id)
        if target is None or not target.running:
            raise HandshakeError(f"cannot reach {peer_id} on the memory network")
        reason = target.handlers.refusal(purpose, mode)
        route = target.handlers.get(purpose)
        if reason is not None or route is None:
            raise RefusedError(f"{peer_id} refused a {mode} bulk channel for {purpose!r}: {reason}")
        reservation = None
        if target.resources is not None:
            try:
                reservation = target.resources.reserve(CHANNELS, str(self.peer_id))
            except ResourceLimitExceeded as exc:
                raise RefusedError(f"{peer_id} is busy: {exc}") from exc
        ours, theirs = memory_channel_pair(
            self.peer_id,
            peer_id,
            purpose,
            mode=mode,
            opener_max_payload=self.max_payload,
            acceptor_max_payload=target.max_payload,
        )
        target._tasks.spawn("handler", target._serve, route, theirs, self.peer_id, reservation)
        self.opened += 1
        try:
            yield ours
        finally:
            await ours.aclose()
