"""The Bitswap service: serve blocks to peers, fetch blocks from peers, verify every block.

Wire contract (as Kubo implements it): each side *sends* only on streams it opened itself and
*reads* every stream the other side opened. So a want arriving on a peer's stream is answered on
our own outbound stream to that peer, which is kept open and reused.

Serving is :class:`~p2p.bitswap.server.WantServer`'s: de-duplicated, bounded want lists per peer,
answered as a stream with bounded bytes in flight (see that module).

Fetching: each wanted CID is asked of one provider at a time (want-block with send-dont-have);
a DONT_HAVE, a timeout or a dropped peer moves it to the next provider. A received block's CID is
computed from its bytes, so a block is accepted only if it is one we are waiting for. A late
block (one we asked that peer for, now or recently, that came from another provider first or
after its fetch ended) is dropped without blame, and so is an unasked one while we ask that peer
for nothing of its kind. A block that arrives while a want of the same CID version and codec is
outstanding at that peer, and hashes to no CID asked of it, is the wrong answer to that want (a
tampered block looks exactly like that) and counts as a bad block against the peer: Bitswap runs
on Noise-secured streams, so the wrong bytes are that peer's own.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from trio_typing import TaskStatus

from p2p.bitswap.errors import FetchError, ProtocolError
from p2p.bitswap.protocol import (
    PROTOCOLS,
    FrameReader,
    Incoming,
    parse_message,
    want_message,
)
from p2p.bitswap.server import PROTOCOL, BlockGetter, ServeLimits, WantServer
from p2p.content.cid import CID
from p2p.events import BAD_CONTENT, REFUSED, EventSink, SecurityEvent, drop
from p2p.penalties import PenaltyBox
from p2p.resources import ResourceManager

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
WANT_TIMEOUT_S = 10.0
RECENT_ASKS = 16384  # (peer, CID) pairs remembered after their want ended, to recognise late blocks

__all__ = ["BitswapService", "BlockGetter", "ServeLimits"]


@dataclass
class _Want:
    """A block we are waiting for: who was asked, how often, until when."""

    cid: CID
    provider: int
    attempts: int
    deadline: float


class BitswapService:
    """Serves ``get_block(cid_bytes)`` to peers and fetches blocks for us.

    ``resources`` holds the serving limits (``bitswap.bytes_in_flight``, ``bitswap.answer_tasks``,
    declared from ``limits``); ``events`` hears of limits hit, malformed messages and bad blocks.
    ``allow(peer)`` says whose wants are answered (the owner's policy for content); a peer it refuses
    still delivers the blocks this node asked it for.
    """

    def __init__(
        self,
        host: IHost,
        get_block: BlockGetter,
        penalties: PenaltyBox | None = None,
        *,
        resources: ResourceManager | None = None,
        limits: ServeLimits | None = None,
        events: EventSink = drop,
        allow: Callable[[ID], bool] | None = None,
    ) -> None:
        self.host = host
        self.allow = allow
        self._out: dict[ID, INetStream] = {}
        self._out_locks: dict[ID, trio.Lock] = {}
        self._waiting: dict[bytes, trio.MemorySendChannel[tuple[ID, CID, bytes | None]]] = {}
        self._asked: dict[ID, dict[bytes, CID]] = {}  # wants outstanding at each provider
        self._recent: OrderedDict[tuple[ID, bytes], None] = OrderedDict()  # asked, want ended
        self.penalties = penalties or PenaltyBox()
        self._events = events
        self.server = WantServer(get_block, self._send, resources=resources, limits=limits, events=events)
        self.blocks_received = 0
        self.late_blocks = 0  # blocks dropped because nobody waits for them any more (or ever did)

    @property
    def blocks_sent(self) -> int:
        return self.server.blocks_sent

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.server.run)
            for protocol in PROTOCOLS:
                self.host.set_stream_handler(protocol, self._handle_stream)
            task_status.started()

    # -- inbound -----------------------------------------------------------------------------

    async def _handle_stream(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        reader = FrameReader()
        try:
            while True:
                data = await stream.read(READ_CHUNK)
                if not data:
                    break
                for frame in reader.feed(data):
                    self._handle_message(peer, parse_message(frame))
        except ProtocolError as exc:
            self.penalties.penalise(peer, "malformed-message")
            self._events(SecurityEvent(REFUSED, PROTOCOL, str(peer), f"malformed message: {exc}"))
            log.info("bitswap protocol error", extra={"peer_id": str(peer), "error": str(exc)})
            await stream.reset()
        except Exception as exc:  # the stream broke; the peer may open another
            log.debug("bitswap stream ended", extra={"peer_id": str(peer), "error": str(exc)})

    def _handle_message(self, peer: ID, message: Incoming) -> None:
        for cid, data in message.blocks:
            self._deliver(peer, cid, data)
        for cid in message.dont_haves:
            self._deliver(peer, cid, None)
        if self.allow is None or self.allow(peer):
            self.server.on_message(peer, message)

    def _deliver(self, peer: ID, cid: CID, data: bytes | None) -> None:
        key = cid.encode()
        channel = self._waiting.get(key)
        if channel is None:
            if data is not None:
                self._unwanted_block(peer, cid)
            return
        # A full or closed channel means that fetch has ended; the block is simply not needed.
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            channel.send_nowait((peer, cid, data))

    def _unwanted_block(self, peer: ID, cid: CID) -> None:
        """A block nobody waits for: late or unasked (dropped), or a wrong answer (penalised)."""
        asked = self._asked.get(peer, {})
        key = cid.encode()
        answers_a_want = any(w.version == cid.version and w.codec == cid.codec for w in asked.values())
        if key in asked or (peer, key) in self._recent or not answers_a_want:
            self.late_blocks += 1
            log.debug("dropped a block nobody waits for", extra={"peer_id": str(peer)})
            return
        self.penalties.penalise(peer, "bad-block")
        self._events(
            SecurityEvent(
                BAD_CONTENT,
                PROTOCOL,
                str(peer),
                "a block answering our want matches no CID asked of this peer",
                {"penalised": True},
            )
        )
        log.warning("discarded a block that matches no CID we asked for", extra={"peer_id": str(peer)})

    def _asking(self, peer: ID, cid: CID) -> None:
        self._asked.setdefault(peer, {})[cid.encode()] = cid

    def _asked_done(self, peer: ID, cid: CID) -> None:
        asked = self._asked.get(peer)
        if asked is None or asked.pop(cid.encode(), None) is None:
            return
        if not asked:
            del self._asked[peer]
        self._recent[(peer, cid.encode())] = None
        self._recent.move_to_end((peer, cid.encode()))
        while len(self._recent) > RECENT_ASKS:
            self._recent.popitem(last=False)

    # -- outbound ----------------------------------------------------------------------------

    async def _send(self, peer: ID, data: bytes) -> None:
        lock = self._out_locks.setdefault(peer, trio.Lock())
        async with lock:
            for attempt in (1, 2):
                stream = self._out.get(peer)
                try:
                    if stream is None:
                        stream = await self.host.new_stream(peer, list(PROTOCOLS))
                        self._out[peer] = stream
                    await stream.write(data)
                    return
                except Exception as exc:  # a stale stream: open a fresh one once
                    self._out.pop(peer, None)
                    if stream is not None:
                        with trio.move_on_after(1):
                            await _quiet_reset(stream)
                    if attempt == 2:
                        raise FetchError(f"cannot send to {peer}: {exc}") from exc

    async def fetch(
        self, cids: Sequence[CID], providers: Sequence[ID], *, timeout_s: float = WANT_TIMEOUT_S
    ) -> AsyncIterator[tuple[CID, bytes]]:
        """Yield ``(cid, bytes)`` for every CID, in arrival order, each verified against its CID.

        Raises :class:`FetchError` when a block is refused by (or times out at) every provider.
        """
        providers = self._usable(providers)
        send, receive = trio.open_memory_channel[tuple[ID, CID, bytes | None]](
            len(cids) * (len(providers) + 1) + 16
        )
        pending: dict[bytes, _Want] = {}
        for i, cid in enumerate(cids):
            if cid.encode() in self._waiting or cid.encode() in pending:
                raise FetchError("the same block is already being fetched")
            pending[cid.encode()] = _Want(cid, i % len(providers), 0, trio.current_time() + timeout_s)
            self._waiting[cid.encode()] = send
        try:
            await self._want(list(pending.values()), providers)
            while pending:
                with trio.move_on_at(min(w.deadline for w in pending.values())):
                    peer, cid, data = await receive.receive()
                    want = pending.get(cid.encode())
                    if want is None:
                        continue
                    if data is not None and cid.matches(data):
                        del pending[cid.encode()]
                        del self._waiting[cid.encode()]  # later copies are late blocks
                        self._asked_done(providers[want.provider], cid)
                        self.blocks_received += 1
                        yield cid, data
                    elif providers[want.provider] == peer:
                        await self._next_provider(
                            want, providers, timeout_s, reason=f"{peer} does not have it"
                        )
                    continue
                now = trio.current_time()
                for want in [w for w in pending.values() if w.deadline <= now]:
                    await self._next_provider(want, providers, timeout_s, reason="timed out")
        finally:
            for cid in cids:
                if self._waiting.get(cid.encode()) is send:
                    del self._waiting[cid.encode()]
            for want in pending.values():
                self._asked_done(providers[want.provider], want.cid)
            if pending:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await self._cancel([w.cid for w in pending.values()], providers)

    def _usable(self, providers: Sequence[ID]) -> list[ID]:
        """The providers not penalised too often for bad blocks or malformed messages."""
        if not providers:
            raise FetchError("no providers to fetch from")
        usable = [p for p in providers if not self.penalties.excluded(p)]
        if not usable:
            raise FetchError(
                f"every provider ({len(providers)}) was penalised for sending bad blocks or messages"
            )
        return usable

    async def _want(self, wants: Sequence[_Want], providers: Sequence[ID]) -> None:
        by_peer: dict[int, list[CID]] = {}
        for want in wants:
            by_peer.setdefault(want.provider, []).append(want.cid)
            self._asking(providers[want.provider], want.cid)
        for index, cids in by_peer.items():
            try:
                await self._send(providers[index], want_message(cids))
            except FetchError as exc:
                log.info("provider unreachable", extra={"peer_id": str(providers[index]), "error": str(exc)})

    async def _next_provider(
        self, want: _Want, providers: Sequence[ID], timeout_s: float, *, reason: str
    ) -> None:
        want.attempts += 1
        if want.attempts >= len(providers):
            raise FetchError(
                f"block {want.cid.encode().hex()} is not available from any of "
                f"{len(providers)} provider(s): {reason}"
            )
        self._asked_done(providers[want.provider], want.cid)
        want.provider = (want.provider + 1) % len(providers)
        want.deadline = trio.current_time() + timeout_s
        await self._want([want], providers)

    async def _cancel(self, cids: list[CID], providers: Sequence[ID]) -> None:
        for peer in providers:
            try:
                await self._send(peer, want_message(cids, cancel=True))
            except FetchError:
                continue


async def _quiet_reset(stream: INetStream) -> None:
    with contextlib.suppress(Exception):  # already broken; nothing to add
        await stream.reset()
