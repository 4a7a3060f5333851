"""Content blocks over bulk channels (purpose ``blocks/1``): the protocol and the server.

Protocol on one channel (``plain`` by default: blocks are public and verified against their CIDs;
every frame is still authenticated, so a bad block is evidence against the provider)::

    client -> server   WANT    CBOR array of binary CIDs (at most MAX_WANTS_PER_FRAME)
                       END     no more wants
    server -> client   BLOCKS  u16 count | count x u32 size (MISSING: not here) | the blocks' bytes
                       ERROR   a reason (UTF-8), then the server closes

Answers come in want order, one entry per wanted CID, so blocks carry no CIDs: the client knows
which CID each must hash to. Several blocks share a frame (the server sends what one disk read
batch gave it, vectored, without copying), so per-frame costs are paid per batch, not per block.
The server reads blocks in a worker thread (``get_block`` may touch the disk), one batch ahead of
the one it is sending; TCP flow control and a small queue of want frames bound its memory.

The client, :class:`p2p.bulk.fetch.BlockFetcher`, verifies every block against its CID.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence

import cbor2
import trio
from libp2p.peer.id import ID

from p2p.bulk.errors import ChannelClosed, FrameError
from p2p.bulk.seam import ChannelAcceptor, FrameChannel
from p2p.codec.cbor import load_list
from p2p.content.cid import CID
from p2p.content.errors import InvalidCIDError

log = logging.getLogger(__name__)

BLOCKS_PURPOSE = "blocks/1"
WANT, END, BLOCKS, ERROR = 1, 2, 3, 5
MAX_WANTS_PER_FRAME = 1024
MAX_BLOCKS_PER_FRAME = 1024
MISSING = 0xFFFFFFFF
_COUNT = struct.Struct(">H")
MAX_WANT_FRAME_BYTES = 128 * 1024
MAX_ERROR_BYTES = 512

BlockGetter = Callable[[bytes], bytes | None]
"""``get_block(binary_cid) -> bytes | None``; may block (disk): it runs in a worker thread."""


def encode_wants(cids: Sequence[CID]) -> bytes:
    if len(cids) > MAX_WANTS_PER_FRAME:
        raise ValueError(f"at most {MAX_WANTS_PER_FRAME} wants per frame, got {len(cids)}")
    return cbor2.dumps([cid.encode() for cid in cids])


def decode_wants(payload: bytes) -> list[CID]:
    """The CIDs of a WANT frame; :class:`FrameError` for anything malformed or over the bounds."""
    items = load_list(
        payload,
        max_bytes=MAX_WANT_FRAME_BYTES,
        max_len=MAX_WANTS_PER_FRAME,
        what="want frame",
        error=FrameError,
    )
    if not all(isinstance(item, bytes) for item in items):
        raise FrameError("a want frame may only hold binary CIDs")
    try:
        return [CID.decode(item) for item in items]
    except InvalidCIDError as exc:
        raise FrameError(f"want frame holds an invalid CID: {exc}") from exc


def encode_blocks(blocks: Sequence[bytes | None]) -> list[bytes]:
    """The parts of one BLOCKS frame (a table, then the blocks themselves, not copied)."""
    if not 0 < len(blocks) <= MAX_BLOCKS_PER_FRAME:
        raise ValueError(f"a BLOCKS frame holds 1..{MAX_BLOCKS_PER_FRAME} entries, got {len(blocks)}")
    sizes = [MISSING if b is None else len(b) for b in blocks]
    table = _COUNT.pack(len(blocks)) + struct.pack(f">{len(blocks)}I", *sizes)
    return [table, *(b for b in blocks if b)]


def decode_blocks(payload: bytes | memoryview) -> list[bytes | None]:
    """The entries of a BLOCKS frame (None: the server does not have it); :class:`FrameError` if
    the table is malformed or does not add up to the payload exactly."""
    if len(payload) < _COUNT.size:
        raise FrameError("BLOCKS frame without a count")
    (count,) = _COUNT.unpack_from(payload)
    end = _COUNT.size + 4 * count
    if not 0 < count <= MAX_BLOCKS_PER_FRAME or len(payload) < end:
        raise FrameError(f"BLOCKS frame with a bad count ({count})")
    sizes = struct.unpack_from(f">{count}I", payload, _COUNT.size)
    if sum(size for size in sizes if size != MISSING) != len(payload) - end:
        raise FrameError("BLOCKS frame sizes do not add up to its length")
    view = memoryview(payload)
    out: list[bytes | None] = []
    for size in sizes:
        if size == MISSING:
            out.append(None)
        else:
            out.append(bytes(view[end : end + size]))
            end += size
    return out


# -- server ---------------------------------------------------------------------------------------


class BlockServer:
    """Answers ``blocks/1`` channels from ``get_block``; register it with :func:`serve_blocks`."""

    def __init__(
        self,
        get_block: BlockGetter,
        *,
        read_ahead: int = 8,
        queued_want_frames: int = 8,
        allow: Callable[[ID], bool] | None = None,
    ) -> None:
        self._get_block = get_block
        self.allow = allow  # whom to serve (the owner's policy for content); None: everyone
        self.read_ahead = max(1, read_ahead)
        self.queued_want_frames = max(1, queued_want_frames)
        self.blocks_sent = 0
        self.bytes_sent = 0

    async def handle(self, channel: FrameChannel, peer_id: ID) -> None:
        if self.allow is not None and not self.allow(peer_id):
            await channel.aclose()
            return
        wants_in, wants_out = trio.open_memory_channel[list[CID]](self.queued_want_frames)
        loaded_in, loaded_out = trio.open_memory_channel[list[bytes | None]](1)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_wants, channel, wants_in)
                nursery.start_soon(self._load, wants_out, loaded_in)
                await self._send(channel, loaded_out)
        except* FrameError as group:
            reason = str(group.exceptions[0])
            log.info("bad blocks request", extra={"peer_id": str(peer_id), "error": reason})
            with trio.move_on_after(1):
                await channel.send(reason.encode()[:MAX_ERROR_BYTES], frame_type=ERROR)

    async def _read_wants(self, channel: FrameChannel, wants: trio.MemorySendChannel[list[CID]]) -> None:
        async with wants:
            while True:
                try:
                    frame = await channel.receive()
                except ChannelClosed:
                    return  # the client went away without END: answer what it asked, then stop
                if frame.type == END:
                    return
                if frame.type != WANT:
                    raise FrameError(f"unexpected frame type {frame.type} from the client")
                await wants.send(decode_wants(frame.payload))

    async def _load(
        self,
        wants: trio.MemoryReceiveChannel[list[CID]],
        loaded: trio.MemorySendChannel[list[bytes | None]],
    ) -> None:
        # Reads ``read_ahead`` blocks per thread hop; one batch waits while the previous one is sent.
        async with wants, loaded:
            async for cids in wants:
                for start in range(0, len(cids), self.read_ahead):
                    chunk = cids[start : start + self.read_ahead]
                    await loaded.send(await trio.to_thread.run_sync(self._get_many, chunk))

    def _get_many(self, cids: list[CID]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for cid in cids:
            try:
                out.append(self._get_block(cid.encode()))
            except Exception as exc:  # a corrupt or unreadable block is a block we do not have
                log.warning("cannot read a block to serve", extra={"cid": str(cid), "error": str(exc)})
                out.append(None)
        return out

    async def _send(
        self, channel: FrameChannel, loaded: trio.MemoryReceiveChannel[list[bytes | None]]
    ) -> None:
        room = channel.max_send_payload - _COUNT.size
        async with loaded:
            async for blocks in loaded:
                frame: list[bytes | None] = []
                size = 0
                for block in blocks:
                    # A block too large for the peer's frame limit is one we cannot give it.
                    data = None if block is not None and len(block) + 4 > room else block
                    cost = 4 + (len(data) if data is not None else 0)
                    if frame and (size + cost > room or len(frame) == MAX_BLOCKS_PER_FRAME):
                        await self._send_frame(channel, frame)
                        frame, size = [], 0
                    frame.append(data)
                    size += cost
                if frame:
                    await self._send_frame(channel, frame)

    async def _send_frame(self, channel: FrameChannel, blocks: list[bytes | None]) -> None:
        await channel.send_parts(encode_blocks(blocks), frame_type=BLOCKS)
        sent = [b for b in blocks if b is not None]
        self.blocks_sent += len(sent)
        self.bytes_sent += sum(map(len, sent))


def serve_blocks(
    bulk: ChannelAcceptor,
    get_block: BlockGetter,
    *,
    purpose: str = BLOCKS_PURPOSE,
    read_ahead: int = 8,
    allow: Callable[[ID], bool] | None = None,
) -> BlockServer:
    """Serve ``get_block`` to peers that open ``purpose`` channels (plain or encrypted) and that
    ``allow`` admits (everyone when None)."""
    server = BlockServer(get_block, read_ahead=read_ahead, allow=allow)
    bulk.set_handler(purpose, server.handle)
    return server
