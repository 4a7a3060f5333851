"""Where model content comes from and where it is published: the embedded backend or a Kubo node.

Both backends keep the node's on-disk block store (``HOME/ipfs``) as the verified cache: publishing
imports a model into it first, fetching writes every block into it as the block arrives, and the
install step reads the files back from it. So verification, resumable fetches and installing are
one code path in :class:`~accel_node.models.service.ModelService`; a backend only moves blocks.

- :class:`EmbeddedBackend` (``[ipfs] backend = "embedded"``): blocks travel over Bitswap between
  nodes; providers come from DHT provider records and connected peers; publishing announces the
  roots in the DHT.
- :class:`KuboBackend` (``backend = "kubo"``): a Kubo node does the networking through its RPC API
  (``[ipfs] kubo_api``). Publishing puts every block our importer made into Kubo with ``block/put``
  (so the CIDs are ours, and equal to the ones ``ipfs add --cid-version=1 --raw-leaves`` gives),
  pins the roots and asks Kubo to provide them; fetching asks Kubo for each missing block with
  ``block/get`` (Kubo finds it on the IPFS network) and hashes it here before storing it.

The node serves its block store over Bitswap with either backend, so peers with the embedded
backend can still fetch from a node that publishes through Kubo.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from trio_typing import TaskStatus

from accel_node.models.errors import BackendError, ModelError
from p2p.bitswap.errors import FetchError
from p2p.bitswap.service import BitswapService
from p2p.bulk import BlockFetcher, BlocksNotFoundError, BulkError
from p2p.content import CID, DAG_PB, BlockStore, ContentError
from p2p.content.dagpb import decode_pbnode
from p2p.content.kubo_rpc import KuboRpcClient
from p2p.dht import RecordDHT
from p2p.tasks import FailureHook, OwnedTasks

log = logging.getLogger(__name__)

PROVIDER_LOOKUP_S = 5.0
BITSWAP_BATCH = 64  # wants per Bitswap round
PROVIDE_TIMEOUT_S = 5.0
KUBO_PARALLEL = 8
"""Blocks moved to or from Kubo at once (each is one HTTP request on a kept-alive connection)."""
KUBO_BLOCK_TIMEOUT_S = 60.0
"""How long Kubo may search the network for one block before the fetch fails."""
KUBO_PIN_TIMEOUT_S = 300.0
KUBO_PROVIDE_TIMEOUT_S = 10.0

BlockSink = Callable[[CID, bytes], Awaitable[None]]
"""Receives each fetched block (already checked against its CID) and stores it."""


class BlockSource(abc.ABC):
    """Where the blocks of one fetch come from."""

    @abc.abstractmethod
    async def fetch(self, cids: Sequence[CID], put: BlockSink) -> None:
        """Fetch every block in ``cids`` and hand each to ``put`` as it arrives.

        Raises :class:`~accel_node.models.errors.ModelError` when a block cannot be had.
        """


class ContentBackend(abc.ABC):
    """Moves model content between the local block store and the network."""

    name: str

    @abc.abstractmethod
    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background part of the backend, started by the node before the API."""

    @abc.abstractmethod
    async def publish(self, roots: Sequence[CID]) -> None:
        """Make the DAGs under ``roots`` (complete in the local store) available to others."""

    @abc.abstractmethod
    async def announce(self, roots: Sequence[CID]) -> None:
        """After a fetch: say that this node holds ``roots`` too (best effort, never raises)."""

    @abc.abstractmethod
    async def source(self, root: CID) -> BlockSource:
        """Prepare to fetch the DAG under ``root`` (e.g. find providers)."""


# -- embedded: Bitswap + DHT ------------------------------------------------------------------


@dataclass
class _BitswapSource(BlockSource):
    bitswap: BitswapService
    providers: list[ID]

    async def fetch(self, cids: Sequence[CID], put: BlockSink) -> None:
        try:
            for start in range(0, len(cids), BITSWAP_BATCH):
                async for cid, data in self.bitswap.fetch(
                    cids[start : start + BITSWAP_BATCH], self.providers
                ):
                    await put(cid, data)
        except FetchError as exc:
            raise ModelError(f"fetching blocks failed: {exc}") from exc


@dataclass
class _BulkSource(BlockSource):
    """Blocks over direct bulk channels from the providers that speak ``blocks/1`` (accel-node
    peers); whatever they do not deliver comes over Bitswap (Kubo peers speak only Bitswap)."""

    fetcher: BlockFetcher
    fallback: _BitswapSource
    no_bulk: set[ID] = field(default_factory=set)

    async def fetch(self, cids: Sequence[CID], put: BlockSink) -> None:
        peers = [p for p in self.fallback.providers if p not in self.no_bulk]
        got: set[CID] = set()
        if peers:
            try:
                async with self.fetcher.fetch(cids, peers) as blocks:
                    async for cid, data in blocks:
                        await put(cid, data)
                        got.add(cid)
            except BlocksNotFoundError as exc:
                log.debug("blocks not found over bulk channels", extra={"missing": len(exc.missing)})
            except BulkError as exc:  # e.g. a peer without the protocol: Bitswap only from now on
                log.debug("bulk block fetch failed; falling back to Bitswap", extra={"error": str(exc)})
                self.no_bulk.update(peers)
        remaining = [c for c in cids if c not in got]
        if remaining:
            await self.fallback.fetch(remaining, put)


class EmbeddedBackend(ContentBackend):
    """Bitswap between nodes over py-libp2p; providers from the DHT and connected peers."""

    name = "embedded"

    def __init__(
        self, *, host: IHost, bitswap: BitswapService, dht: RecordDHT, fetcher: BlockFetcher | None = None
    ) -> None:
        self._host = host
        self._bitswap = bitswap
        self._dht = dht
        self._fetcher = fetcher

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Nothing runs in the background: Bitswap and the bulk block server are run by the node
        # (they serve with either backend), and each bulk fetch owns its workers.
        task_status.started()

    async def publish(self, roots: Sequence[CID]) -> None:
        await self.announce(roots)

    async def announce(self, roots: Sequence[CID]) -> None:
        """Provide every root in the DHT, all at once and for at most PROVIDE_TIMEOUT_S: a peer that
        holds a connection open without reading it must not hold up a publish (py-libp2p waits
        10 s per stream attempt)."""

        async def provide(root: CID) -> None:
            try:
                await self._dht.kad.provide(str(root))
            except Exception as exc:  # announcing is best effort; peers can still be asked directly
                log.warning(
                    "providing content in the DHT failed", extra={"cid": str(root), "error": str(exc)}
                )

        with trio.move_on_after(PROVIDE_TIMEOUT_S) as scope:
            async with trio.open_nursery() as nursery:
                for root in roots:
                    nursery.start_soon(provide, root)
        if scope.cancelled_caught:
            log.warning("providing content in the DHT timed out", extra={"roots": len(roots)})

    async def source(self, root: CID) -> BlockSource:
        bitswap = _BitswapSource(self._bitswap, await self._providers_of(root))
        return bitswap if self._fetcher is None else _BulkSource(self._fetcher, bitswap)

    async def _providers_of(self, root: CID) -> list[ID]:
        """Peers to ask for ``root``'s DAG: DHT provider records first, then connected peers."""
        found: list[ID] = []
        try:
            with trio.move_on_after(PROVIDER_LOOKUP_S):
                for info in await self._dht.kad.find_providers(str(root)):
                    if info.peer_id == self._host.get_id() or info.peer_id in found:
                        continue  # find_providers can return duplicates
                    self._host.get_peerstore().add_addrs(info.peer_id, info.addrs, 600)
                    found.append(info.peer_id)
        except Exception as exc:  # the DHT is one source of providers among two
            log.debug("provider lookup failed", extra={"cid": str(root), "error": str(exc)})
        found += [p for p in self._host.get_connected_peers() if p not in found]
        if not found:
            raise ModelError(f"no peer provides {root}; connect to one that holds it")
        return found


# -- Kubo RPC ---------------------------------------------------------------------------------


def _kubo_error(action: str, exc: Exception) -> BackendError:
    return BackendError(f"{action} through Kubo failed: {exc}")


async def _parallel(items: Sequence[CID], work: Callable[[CID], Awaitable[None]], action: str) -> None:
    """Run ``work`` on every item, :data:`KUBO_PARALLEL` at a time; the first failure stops all.

    Kubo and content errors become one :class:`BackendError` (not an ExceptionGroup).
    """
    failure: list[Exception] = []
    send, receive = trio.open_memory_channel[CID](len(items))
    for item in items:
        send.send_nowait(item)
    send.close()

    async def worker(scope: trio.CancelScope) -> None:
        async for item in receive:
            try:
                await work(item)
            except (ContentError, ModelError) as exc:
                failure.append(exc)
                scope.cancel()
                return

    async with trio.open_nursery() as nursery:
        for _ in range(min(KUBO_PARALLEL, len(items))):
            nursery.start_soon(worker, nursery.cancel_scope)
    if failure:
        first = failure[0]
        raise first if isinstance(first, ModelError) else _kubo_error(action, first) from first


@dataclass
class _KuboSource(BlockSource):
    kubo: KuboRpcClient

    async def fetch(self, cids: Sequence[CID], put: BlockSink) -> None:
        async def one(cid: CID) -> None:
            await put(cid, await self.kubo.block_get(cid, timeout_s=KUBO_BLOCK_TIMEOUT_S))

        await _parallel(cids, one, "fetching blocks")


def dag_cids(blocks: BlockStore, root: CID) -> list[CID]:
    """Every distinct block of the DAG under ``root`` (all present in ``blocks``), parents first."""
    seen: set[CID] = set()
    order: list[CID] = []
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        order.append(cid)
        if cid.codec == DAG_PB:
            stack.extend(reversed([link.cid for link in decode_pbnode(blocks.get(cid)).links]))
    return order


class KuboBackend(ContentBackend):
    """A Kubo node, through its RPC API, does the networking; see the module docstring.

    Owns (while :meth:`run` runs) the background ``routing/provide`` calls of :meth:`announce`;
    their failures are logged and passed to ``on_failure``.
    """

    name = "kubo"

    def __init__(
        self, *, kubo: KuboRpcClient, blocks: BlockStore, on_failure: FailureHook | None = None
    ) -> None:
        self._kubo = kubo
        self._blocks = blocks
        self._tasks = OwnedTasks("kubo-backend", on_failure=on_failure)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the background provides until cancelled, and check that Kubo answers (after
        ``started()``: nothing that waits on the network holds up the node's start; an unreachable
        Kubo is a warning, it may start later). The client is closed when the node stops."""
        async with self._kubo, self._tasks.open():
            task_status.started()
            try:
                version = await self._kubo.version()
            except ContentError as exc:
                log.warning(
                    "the Kubo RPC backend is unreachable; publishing and fetching models will fail "
                    "until it answers",
                    extra={"kubo_api": self._kubo.api, "error": str(exc)},
                )
            else:
                log.info(
                    "using Kubo through its RPC API", extra={"kubo_api": self._kubo.api, "version": version}
                )
            await trio.sleep_forever()

    async def publish(self, roots: Sequence[CID]) -> None:
        """``block/put`` every block of every DAG, then ``pin/add`` the roots; provide best effort."""
        cids: list[CID] = []
        for root in roots:
            cids += await trio.to_thread.run_sync(dag_cids, self._blocks, root)

        async def put(cid: CID) -> None:
            data = await trio.to_thread.run_sync(self._blocks.get, cid)
            await self._kubo.block_put(data, codec=cid.codec)

        await _parallel(list(dict.fromkeys(cids)), put, "publishing")
        for root in dict.fromkeys(roots):
            try:
                await self._kubo.pin_add(root, timeout_s=KUBO_PIN_TIMEOUT_S)
            except ContentError as exc:
                raise _kubo_error("pinning", exc) from exc
        await self.announce(roots)

    async def announce(self, roots: Sequence[CID]) -> None:
        """``routing/provide`` each root, in the background: a provide can take Kubo seconds, and
        Kubo also reprovides pinned content by itself."""
        if self._tasks.running:
            self._tasks.spawn("provide", self._provide, list(roots))
        else:
            await self._provide(roots)

    async def _provide(self, roots: Sequence[CID]) -> None:
        for root in roots:
            try:
                await self._kubo.routing_provide(root, timeout_s=KUBO_PROVIDE_TIMEOUT_S)
            except ContentError as exc:
                log.info("Kubo could not provide content", extra={"cid": str(root), "error": str(exc)})

    async def source(self, root: CID) -> BlockSource:
        return _KuboSource(self._kubo)
