"""Fetching content blocks over bulk channels (``blocks/1``, see :mod:`p2p.bulk.blocks`).

:meth:`BlockFetcher.fetch` is an async context manager (``async with fetcher.fetch(cids, providers)
as blocks: async for cid, data in blocks:``): the fetch's tasks live in a nursery its block opens
and are cancelled when the caller leaves it, so no task outlives the caller (an async generator
cannot own a nursery safely). It runs one worker per provider. The want list is split into a share per
provider up front (all start at once, even on a small fetch); a provider that runs dry steals from
the end of the largest share left, and a block a provider lacks goes back to the queue for the
others. Each worker keeps a window of wants in flight (the server never idles waiting for the next
want), receives on the event loop into the channel's reused buffer, and hands blocks, a batch at a
time, to a verifier task that hashes them in a worker thread (hashlib releases the GIL on large
buffers), so hashing overlaps receiving. A block that does not match its CID is discarded and
ends that provider's part in the fetch; it is held against the provider (``on_bad_block(peer_id)``,
a :data:`~p2p.events.BAD_CONTENT` event) only because the frame that carried it authenticated, so
it really came from that peer. A frame that fails authentication (injected on the path, say) ends
the channel and blames nobody (the channel reports it). Blocks that
no provider had are listed in the :class:`BlocksNotFoundError` raised at the end, after every found
block was yielded, so the caller can fetch those another way (Bitswap, which Kubo peers speak).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
from libp2p.peer.id import ID

from p2p.bulk.blocks import (
    BLOCKS,
    BLOCKS_PURPOSE,
    END,
    ERROR,
    MAX_ERROR_BYTES,
    MAX_WANTS_PER_FRAME,
    WANT,
    decode_blocks,
    encode_wants,
)
from p2p.bulk.errors import BlocksNotFoundError, BulkError, ChannelClosed, FrameError
from p2p.bulk.seam import ChannelOpener, FrameChannel
from p2p.content.cid import CID, SHA2_256
from p2p.events import BAD_CONTENT, EventSink, SecurityEvent, drop

log = logging.getLogger(__name__)

BadBlockCallback = Callable[[ID], object]
"""Called with the peer that sent a block not matching its CID; may be async."""


@dataclass(eq=False)
class _Want:
    cid: CID
    index: int
    tried: set[ID] = field(default_factory=set)


class _WantQueue:
    """Wants not yet resolved, shared by the provider workers of one fetch.

    The list is split up front into one contiguous share per provider, so that every provider
    starts at once even on a small fetch; a provider that runs out of its own share steals from the
    end of the largest remaining one, and wants a provider lacks (or failed) go to a retry list
    for the providers that have not been asked yet.
    """

    def __init__(self, wants: list[_Want], providers: Sequence[ID]) -> None:
        per = -(-len(wants) // max(1, len(providers)))
        self._shares = {peer: deque(wants[i * per : (i + 1) * per]) for i, peer in enumerate(providers)}
        self._retry: list[_Want] = []
        self._providers = set(providers)
        self._gone: set[ID] = set()
        self.missing: list[_Want] = []
        self.open = len(wants)
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _has_candidate(self, want: _Want) -> bool:
        return bool(self._providers - want.tried - self._gone)

    def _give_up(self, want: _Want) -> None:
        self.missing.append(want)
        self.open -= 1

    def _take_now(self, peer: ID, limit: int, steal: bool) -> list[_Want]:
        batch = [w for w in self._retry if peer not in w.tried][:limit]
        if batch:
            taken = set(map(id, batch))
            self._retry = [w for w in self._retry if id(w) not in taken]
        own = self._shares.get(peer)
        while len(batch) < limit and own:
            batch.append(own.popleft())
        if steal and len(batch) < limit:
            victim = max(self._shares.values(), key=len, default=None)
            if victim:
                # Half of the largest share, from its end: its owner is working from the front.
                stolen = [victim.pop() for _ in range(min(limit - len(batch), (len(victim) + 1) // 2))]
                batch.extend(reversed(stolen))
        return batch

    async def take(self, peer: ID, limit: int, *, steal: Callable[[], bool] = lambda: True) -> list[_Want]:
        """Up to ``limit`` wants ``peer`` has not been asked yet; [] once there will be none.

        Waits while there is nothing for ``peer`` but wants are open elsewhere (they may come back),
        and, while ``steal()`` is false, while only other providers' shares are left.
        """
        while True:
            if peer in self._gone:
                return []
            batch = self._take_now(peer, limit, steal())
            if batch or self.open == 0:
                return batch
            await self._changed.wait()  # wants in flight elsewhere may come back to us

    def resolve(self, want: _Want) -> None:
        self.open -= 1
        self._notify()

    def fail(self, want: _Want, peer: ID) -> None:
        want.tried.add(peer)
        if self._has_candidate(want):
            self._retry.append(want)
        else:
            self._give_up(want)
        self._notify()

    def provider_gone(self, peer: ID) -> None:
        """``peer`` takes no more wants (its unsent share stays for the others to steal)."""
        self._gone.add(peer)
        for want in [w for w in self._retry if not self._has_candidate(w)]:
            self._retry.remove(want)
            self._give_up(want)
        if not self._providers - self._gone:
            for share in self._shares.values():
                while share:
                    self._give_up(share.popleft())
        self._notify()


class _BadBlock(BulkError):
    pass


class _ProviderRun:
    """One provider's part in a fetch: a want sender, a frame receiver, a verifier."""

    def __init__(
        self,
        fetcher: BlockFetcher,
        channel: FrameChannel,
        queue: _WantQueue,
        out: trio.MemorySendChannel[list[tuple[CID, bytes]]],
        timeout_s: float,
    ) -> None:
        self.fetcher = fetcher
        self.channel = channel
        self.peer = channel.peer_id
        self.queue = queue
        self.out = out
        self.timeout_s = timeout_s
        self.assigned: set[_Want] = set()
        self.inflight: deque[_Want] = deque()
        self.space = trio.Event()
        self.wants_done = False
        self.recv_scope = trio.CancelScope()

    async def run(self) -> None:
        verify_in, verify_out = trio.open_memory_channel[list[tuple[_Want, bytes]]](self.fetcher.verify_depth)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._verify, verify_out)
            nursery.start_soon(self._send_wants)
            async with verify_in:
                await self._receive(verify_in)

    async def _send_wants(self) -> None:
        batch_size, window = self.fetcher.batch_blocks, self.fetcher.window_blocks
        while True:
            while len(self.inflight) > window - batch_size:
                await self.space.wait()
            # Steal from other providers' shares only when about to run dry: a provider that has not
            # connected yet still gets its share, but a stalled one does not hold up the fetch.
            batch = await self.queue.take(
                self.peer, batch_size, steal=lambda: len(self.inflight) < batch_size
            )
            if not batch:
                self.wants_done = True
                await self.channel.send(b"", frame_type=END)
                return
            for want in batch:
                self.assigned.add(want)
                self.inflight.append(want)
            self.recv_scope.deadline = min(self.recv_scope.deadline, trio.current_time() + self.timeout_s)
            await self.channel.send(encode_wants([w.cid for w in batch]), frame_type=WANT)

    async def _receive(self, verify: trio.MemorySendChannel[list[tuple[_Want, bytes]]]) -> None:
        # Blocks go to the verifier in batches (one thread hop per batch, not per block): a batch
        # is handed over when it is large enough or when nothing more is expected right now.
        batch: list[tuple[_Want, bytes]] = []
        batch_bytes = 0
        while True:
            deadline = trio.current_time() + self.timeout_s if self.inflight else float("inf")
            with trio.CancelScope(deadline=deadline) as self.recv_scope:
                try:
                    frame_type, payload = await self.channel.receive_view()  # blocks are copied out
                except ChannelClosed:
                    if self.wants_done and not self.inflight:
                        return
                    raise BulkError(
                        f"{self.peer} closed the channel with {len(self.inflight)} wants open"
                    ) from None
            if self.recv_scope.cancelled_caught:
                raise BulkError(f"{self.peer} sent nothing for {self.timeout_s:g} s")
            if frame_type == ERROR:
                reason = bytes(payload[:MAX_ERROR_BYTES]).decode("utf-8", "replace")
                raise BulkError(f"{self.peer} ended the block exchange: {reason}")
            if frame_type != BLOCKS:
                raise FrameError(f"{self.peer} sent an unexpected frame (type {frame_type})")
            entries = decode_blocks(payload)
            if len(entries) > len(self.inflight):
                raise FrameError(f"{self.peer} sent {len(entries)} blocks for {len(self.inflight)} wants")
            for data in entries:
                want = self.inflight.popleft()
                if data is None:
                    self.assigned.discard(want)
                    self.queue.fail(want, self.peer)
                else:
                    batch.append((want, data))
                    batch_bytes += len(data)
            self.space.set()
            self.space = trio.Event()
            if batch and (batch_bytes >= self.fetcher.verify_batch_bytes or not self.inflight):
                await verify.send(batch)
                batch, batch_bytes = [], 0

    async def _verify(self, batches: trio.MemoryReceiveChannel[list[tuple[_Want, bytes]]]) -> None:
        async with batches:
            async for batch in batches:
                verdicts = await trio.to_thread.run_sync(_check_blocks, batch)
                good = len(verdicts) if all(verdicts) else verdicts.index(False)
                if good:
                    await self.out.send([(want.cid, data) for want, data in batch[:good]])
                    self.fetcher.blocks_received[self.peer] += good
                    for want, _ in batch[:good]:
                        self.assigned.discard(want)
                        self.queue.resolve(want)
                if good < len(batch):
                    cid = batch[good][0].cid
                    if self.channel.authenticated:  # evidence: it came from this peer
                        await self.fetcher._report_bad_block(self.peer, cid)
                    raise _BadBlock(f"{self.peer} sent a block that does not match {cid}")


def _check_blocks(batch: list[tuple[_Want, bytes]]) -> list[bool]:
    return [hashlib.sha256(data).digest() == want.cid.digest for want, data in batch]


class _Blocks:
    """The blocks of one fetch as they arrive (the iterator :meth:`BlockFetcher.fetch` yields).

    After the last block it raises :class:`BlocksNotFoundError` for what no provider delivered, or
    :class:`BulkError` for a bug in the fetch itself; afterwards it is exhausted.
    """

    def __init__(self, unique: list[CID], unsupported: list[CID], peers: list[ID]) -> None:
        self.unique = unique
        self.unsupported = unsupported
        self.peers = peers
        self.failures: list[BaseException] = []
        self.queue: _WantQueue | None = None
        self.results: trio.MemoryReceiveChannel[list[tuple[CID, bytes]]] | None = None
        self._batch: deque[tuple[CID, bytes]] = deque()
        self._done = False

    def __aiter__(self) -> _Blocks:
        return self

    async def __anext__(self) -> tuple[CID, bytes]:
        while not self._batch:
            if self._done:
                raise StopAsyncIteration
            try:
                if self.results is None:
                    raise trio.EndOfChannel
                self._batch.extend(await self.results.receive())
            except trio.ClosedResourceError:
                raise BulkError("the blocks of a fetch are read inside its async with block") from None
            except trio.EndOfChannel:
                self._done = True
                self._finish()
        return self._batch.popleft()

    def _finish(self) -> None:
        if not self.peers:
            raise BlocksNotFoundError(self.unique, len(self.unique), "no providers to fetch from")
        if self.failures:
            raise BulkError(f"block fetch failed: {self.failures[0]!r}") from self.failures[0]
        missing = sorted(self.queue.missing, key=lambda w: w.index) if self.queue is not None else []
        if self.queue is None and self.unsupported:
            raise BlocksNotFoundError(
                self.unsupported, len(self.unique), "they use a hash other than sha2-256"
            )
        if missing or self.unsupported:
            detail = f"asked {len(self.peers)} provider(s)"
            if self.unsupported:
                detail += f"; {len(self.unsupported)} use a hash other than sha2-256"
            raise BlocksNotFoundError(self.unsupported + [w.cid for w in missing], len(self.unique), detail)


class BlockFetcher:
    """Fetches blocks from providers over ``blocks/1`` bulk channels.

    Owns no tasks of its own: each :meth:`fetch` is an async context manager whose block owns
    that fetch's workers. ``batch_blocks`` CIDs go in one WANT frame and up to ``window_blocks``
    are in flight per provider; ``on_bad_block(peer_id)`` (sync or async) and ``events`` hear of
    every block that failed its CID in an authenticated frame.
    """

    def __init__(
        self,
        bulk: ChannelOpener,
        *,
        on_bad_block: BadBlockCallback | None = None,
        purpose: str = BLOCKS_PURPOSE,
        encrypted: bool = False,
        batch_blocks: int = 16,
        window_blocks: int = 64,
        verify_depth: int = 4,
        verify_batch_bytes: int = 1024 * 1024,
        output_depth: int = 4,
        events: EventSink = drop,
    ) -> None:
        if not 0 < batch_blocks <= min(window_blocks, MAX_WANTS_PER_FRAME):
            raise ValueError("need 0 < batch_blocks <= min(window_blocks, MAX_WANTS_PER_FRAME)")
        self.bulk = bulk
        self.on_bad_block = on_bad_block
        self.purpose = purpose
        self.encrypted = encrypted
        self.batch_blocks = batch_blocks
        self.window_blocks = window_blocks
        self.verify_depth = verify_depth
        self.verify_batch_bytes = verify_batch_bytes
        self.output_depth = output_depth
        self.events = events
        self.bad_blocks: Counter[ID] = Counter()
        self.blocks_received: Counter[ID] = Counter()

    async def _report_bad_block(self, peer: ID, cid: CID) -> None:
        self.bad_blocks[peer] += 1
        log.warning(
            "discarded a block that does not match its CID", extra={"peer_id": str(peer), "cid": str(cid)}
        )
        self.events(
            SecurityEvent(
                BAD_CONTENT,
                "bulk",
                str(peer),
                "a block in an authenticated frame does not match its CID",
                {"cid": str(cid), "purpose": self.purpose},
            )
        )
        if self.on_bad_block is None:
            return
        try:
            result = self.on_bad_block(peer)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # the callback's failure must not end the fetch
            log.warning("on_bad_block callback failed", extra={"error": str(exc)})

    @asynccontextmanager
    async def fetch(
        self, cids: Sequence[CID], providers: Sequence[ID], *, timeout_s: float = 30.0
    ) -> AsyncIterator[AsyncIterator[tuple[CID, bytes]]]:
        """``async with fetcher.fetch(cids, providers) as blocks: async for cid, data in blocks:``.

        Yields ``(cid, block)`` for each CID (duplicates once), in arrival order, each verified.
        ``providers`` are asked in parallel (each must be reachable through the libp2p host); their
        workers run in a nursery this block opens, so leaving the block (early, or by an exception)
        cancels them. ``timeout_s`` bounds channel set-up and each wait for a provider's next frame.
        After the last block the iterator raises :class:`BlocksNotFoundError` listing the CIDs no
        provider delivered.
        """
        unique = list(dict.fromkeys(cids))
        own = self.bulk.local_id
        blocks = _Blocks(
            unique,
            [c for c in unique if c.hash_code != SHA2_256],
            [p for p in dict.fromkeys(providers) if p != own],
        )
        wants = [_Want(cid, i) for i, cid in enumerate(unique) if cid.hash_code == SHA2_256]
        raised: BaseException | None = None
        async with trio.open_nursery() as nursery:
            if blocks.peers and wants:
                blocks.queue = _WantQueue(wants, blocks.peers)
                results_in, blocks.results = trio.open_memory_channel[list[tuple[CID, bytes]]](
                    self.output_depth
                )
                nursery.start_soon(self._supervise, blocks, results_in, timeout_s)
            try:
                yield blocks
            except BaseException as exc:  # re-raised below, outside the nursery, so that the
                raised = exc  # caller's own exception does not come back in an ExceptionGroup
            finally:
                nursery.cancel_scope.cancel()
                if blocks.results is not None:
                    blocks.results.close()
        if raised is not None:
            raise raised

    async def _supervise(
        self, blocks: _Blocks, results: trio.MemorySendChannel[list[tuple[CID, bytes]]], timeout_s: float
    ) -> None:
        assert blocks.queue is not None
        try:
            async with results, trio.open_nursery() as workers:
                for peer in blocks.peers:
                    workers.start_soon(self._provider, peer, blocks.queue, results.clone(), timeout_s)
        except Exception as exc:  # a bug, not a peer's doing: surface it to the caller
            blocks.failures.append(exc)

    async def _provider(
        self,
        peer: ID,
        queue: _WantQueue,
        out: trio.MemorySendChannel[list[tuple[CID, bytes]]],
        timeout_s: float,
    ) -> None:
        run: _ProviderRun | None = None
        try:
            async with (
                out,
                self.bulk.open(peer, self.purpose, encrypted=self.encrypted, timeout_s=timeout_s) as ch,
            ):
                run = _ProviderRun(self, ch, queue, out, timeout_s)
                await run.run()
        except Exception as exc:  # this provider is out of this fetch; the others go on
            cause: BaseException = exc
            while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
                cause = cause.exceptions[0]
            if not isinstance(cause, _BadBlock):
                log.info("block provider failed", extra={"peer_id": str(peer), "error": str(cause)})
        finally:
            queue.provider_gone(peer)
            if run is not None:
                for want in run.assigned:
                    queue.fail(want, peer)
