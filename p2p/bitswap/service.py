"""The Bitswap service: serve blocks to peers, fetch blocks from peers, verify every block.

Wire contract (as Kubo implements it): each side *sends* only on streams it opened itself and
*reads* every stream the other side opened. So a want arriving on a peer's stream is answered on
our own outbound stream to that peer, which is kept open and reused.

Fetching: each wanted CID is asked of one provider at a time (want-block with send-dont-have);
a DONT_HAVE, a timeout or a dropped peer moves it to the next provider. A received block is only
accepted if it hashes to a CID we are waiting for; anything else is discarded and counted against
the peer that sent it.
"""

from __future__ import annotations

import contextlib
import logging
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
    blocks_message,
    parse_message,
    want_message,
)
from p2p.content.cid import CID
from p2p.penalties import PenaltyBox

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
MAX_BLOCKS_PER_MESSAGE_BYTES = 1024 * 1024
WANT_TIMEOUT_S = 10.0


BlockGetter = Callable[[bytes], bytes | None]


@dataclass
class _Want:
    """A block we are waiting for: who was asked, how often, until when."""

    cid: CID
    provider: int
    attempts: int
    deadline: float


class BitswapService:
    """Serves ``get_block(cid_bytes)`` to peers and fetches blocks for us."""

    def __init__(self, host: IHost, get_block: BlockGetter, penalties: PenaltyBox | None = None) -> None:
        self.host = host
        self._get_block = get_block
        self._out: dict[ID, INetStream] = {}
        self._out_locks: dict[ID, trio.Lock] = {}
        self._waiting: dict[bytes, trio.MemorySendChannel[tuple[ID, CID, bytes | None]]] = {}
        self.penalties = penalties or PenaltyBox()
        self.blocks_sent = 0
        self.blocks_received = 0

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for protocol in PROTOCOLS:
            self.host.set_stream_handler(protocol, self._handle_stream)
        task_status.started()
        await trio.sleep_forever()

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
                    await self._handle_message(peer, parse_message(frame))
        except ProtocolError as exc:
            self.penalties.penalise(peer, "malformed-message")
            log.info("bitswap protocol error", extra={"peer_id": str(peer), "error": str(exc)})
            await stream.reset()
        except Exception as exc:  # the stream broke; the peer may open another
            log.debug("bitswap stream ended", extra={"peer_id": str(peer), "error": str(exc)})

    async def _handle_message(self, peer: ID, message: Incoming) -> None:
        for cid, data in message.blocks:
            self._deliver(peer, cid, data)
        for cid in message.dont_haves:
            self._deliver(peer, cid, None)
        if message.wants:
            await self._answer_wants(peer, message.wants)

    def _deliver(self, peer: ID, cid: CID, data: bytes | None) -> None:
        channel = self._waiting.get(cid.encode())
        if channel is None:
            if data is not None:
                # Not something we asked for (or bytes that hash to no wanted CID): discard.
                self.penalties.penalise(peer, "bad-block")
                log.warning("discarded a block nobody asked for", extra={"peer_id": str(peer)})
            return
        # A full or closed channel means that fetch has ended; the block is simply not needed.
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            channel.send_nowait((peer, cid, data))

    async def _answer_wants(self, peer: ID, wants: list[tuple[CID, bool, bool]]) -> None:
        found: list[tuple[CID, bytes]] = []
        haves: list[CID] = []
        dont_haves: list[CID] = []
        for cid, want_have, send_dont_have in wants:
            data = await trio.to_thread.run_sync(self._get_block, cid.encode())
            if data is None:
                if send_dont_have:
                    dont_haves.append(cid)
            elif want_have:
                haves.append(cid)
            else:
                found.append((cid, data))
        batch: list[tuple[CID, bytes]] = []
        size = 0
        for cid, data in found:
            if batch and size + len(data) > MAX_BLOCKS_PER_MESSAGE_BYTES:
                await self._send(peer, blocks_message(batch))
                batch, size = [], 0
            batch.append((cid, data))
            size += len(data)
        if batch or haves or dont_haves:
            await self._send(peer, blocks_message(batch, haves=haves, dont_haves=dont_haves))
        self.blocks_sent += len(found)

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
