"""A bulk channel: framed messages over a byte stream, after the handshake.

Thin trio wrapper around :mod:`p2p.bulk.framing` that implements :class:`~p2p.bulk.seam.FrameChannel`
over any :class:`trio.abc.HalfCloseableStream`. On a TCP socket (a :class:`trio.SocketStream`) sends
are vectored (``sendmsg`` of the header and the caller's buffers, so a plain frame's payload is never
copied) and receives go straight into the frame's buffer for large bodies; on other streams (the
in-memory ones of :mod:`p2p.bulk.memory`) the same frames go through ``send_all``/``receive_some``.
One task may send while another receives; concurrent sends (or receives) are serialised by a lock
each, so frames never interleave.

Every frame is authenticated (:mod:`p2p.bulk.framing`): a received frame comes from the peer the
handshake authenticated. One that fails authentication may have been injected on the path, so it is
nobody's fault: the channel reports a :data:`~p2p.events.BAD_SIGNATURE` event, closes, and the
receive raises :class:`~p2p.bulk.errors.FrameAuthenticationError` (callers must not blame the peer).
``last_activity`` (trio time of the last frame either way) lets the acceptor close idle channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import trio
from libp2p.peer.id import ID

from p2p.bulk.errors import BulkError, ChannelClosed, FrameAuthenticationError
from p2p.bulk.framing import Buffer, Frame, FrameDecoder, FrameEncoder
from p2p.bulk.handshake import Mode
from p2p.bulk.seam import DATA
from p2p.events import BAD_SIGNATURE, EventSink, SecurityEvent, drop

__all__ = ["DATA", "Channel"]


class Channel:
    """One side of an established channel to ``peer_id`` for ``purpose``."""

    def __init__(
        self,
        stream: trio.abc.HalfCloseableStream,
        *,
        peer_id: ID,
        purpose: str,
        mode: Mode,
        cipher: str | None,
        encoder: FrameEncoder,
        decoder: FrameDecoder,
        events: EventSink = drop,
    ) -> None:
        self.peer_id = peer_id
        self.purpose = purpose
        self.mode: Mode = mode
        self.cipher = cipher
        self._stream = stream
        self._sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._encoder = encoder
        self._decoder = decoder
        self._events = events
        self.last_activity = trio.current_time()
        self._send_lock = trio.Lock()
        self._recv_lock = trio.Lock()
        self.bytes_sent = 0
        self.bytes_received = 0

    @property
    def encrypted(self) -> bool:
        return self.mode == "encrypted"

    @property
    def authenticated(self) -> bool:
        """Always true: every frame of a channel carries an AEAD tag (see the module docstring)."""
        return True

    @property
    def max_send_payload(self) -> int:
        """The largest payload the peer accepts in one frame."""
        return self._encoder.max_payload

    # -- sending --------------------------------------------------------------------------------

    async def send(self, payload: Buffer, *, frame_type: int = DATA) -> None:
        """Send one frame. Raises :class:`FrameError` if ``payload`` exceeds the peer's limit."""
        await self.send_parts((payload,), frame_type=frame_type)

    async def send_parts(self, parts: Sequence[Buffer], *, frame_type: int = DATA) -> None:
        """Send one frame whose payload is the concatenation of ``parts`` (not joined when plain)."""
        async with self._send_lock:
            buffers = self._encoder.encode_parts(frame_type, parts)
            try:
                await self._write(buffers)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise BulkError(f"bulk channel to {self.peer_id} broke while sending: {exc}") from exc
            self.bytes_sent += sum(memoryview(p).nbytes for p in parts)
            self.last_activity = trio.current_time()

    async def _write(self, buffers: list[Buffer]) -> None:
        views = [memoryview(b).cast("B") for b in buffers if len(b)]
        if self._sock is None:
            if views:
                await self._stream.send_all(views[0] if len(views) == 1 else b"".join(views))
            return
        sock = self._sock
        while views:
            sent = await sock.sendmsg(views) if len(views) > 1 else await sock.send(views[0])
            while sent:
                if sent >= len(views[0]):
                    sent -= len(views[0])
                    views.pop(0)
                else:
                    views[0] = views[0][sent:]
                    sent = 0

    async def send_eof(self) -> None:
        """Close our sending side; the peer's :meth:`receive` then raises :class:`ChannelClosed`."""
        async with self._send_lock:
            try:
                await self._stream.send_eof()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise BulkError(f"bulk channel to {self.peer_id} broke: {exc}") from exc

    # -- receiving ------------------------------------------------------------------------------

    async def receive(self) -> Frame:
        """The next frame. :class:`ChannelClosed` at a clean end, :class:`FrameError` for bad input."""
        async with self._recv_lock:
            while (frame := self._decoder.next_frame()) is None:
                await self._read_more()
            self.bytes_received += len(frame.payload)
            self.last_activity = trio.current_time()
            return frame

    async def receive_view(self) -> tuple[int, memoryview]:
        """The next frame as ``(type, payload)`` without copying the payload out of the channel's
        receive buffer: the view is valid only until the next receive on this channel."""
        async with self._recv_lock:
            while (item := self._decoder.next_view()) is None:
                await self._read_more()
            self.bytes_received += len(item[1])
            self.last_activity = trio.current_time()
            return item

    async def _read_more(self) -> None:
        buffer = self._decoder.get_buffer()
        try:
            if self._sock is not None:
                received = await self._sock.recv_into(buffer)
            else:
                data = await self._stream.receive_some(len(buffer))
                received = len(data)
                buffer[:received] = data
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise BulkError(f"bulk channel to {self.peer_id} broke while receiving: {exc}") from exc
        if received == 0:
            self._decoder.eof()
            raise ChannelClosed(f"{self.peer_id} closed the bulk channel")
        try:
            self._decoder.buffer_updated(received)
        except FrameAuthenticationError as exc:
            await self._unauthenticated(exc)
            raise

    async def _unauthenticated(self, exc: FrameAuthenticationError) -> None:
        self._events(
            SecurityEvent(
                BAD_SIGNATURE,
                "bulk",
                str(self.peer_id),
                "a bulk frame failed authentication; channel closed, peer not blamed",
                {"purpose": self.purpose, "mode": self.mode, "frame": self._decoder.frames},
            )
        )
        with trio.CancelScope(shield=True):
            await self._stream.aclose()

    def __aiter__(self) -> Channel:
        return self

    async def __anext__(self) -> Frame:
        try:
            return await self.receive()
        except ChannelClosed:
            raise StopAsyncIteration from None

    # -- closing --------------------------------------------------------------------------------

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
