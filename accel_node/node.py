"""The composition root: builds every service from config and owns the root nursery.

Start-up order: lock the home, open the store, start the libp2p host, the network service and the
control API (each with ``nursery.start``, so each is ready before the next starts), then publish
``api.json``. Shutdown on SIGINT/SIGTERM is the reverse: stop accepting API connections and let
in-flight requests finish within ``[node] shutdown_grace_s``, cancel the network services and close
the host, remove ``api.json``, then checkpoint and close the store under a shielded scope.
A second signal during shutdown cancels everything at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from trio_typing import TaskStatus

from accel_node import __version__, capability
from accel_node.api.app import create_app
from accel_node.api.context import ApiContext
from accel_node.api.server import client_url, serve_api
from accel_node.config import Config
from accel_node.hardware import HardwareService
from accel_node.home import NodeHome
from accel_node.local import LocalApi, LocalServices
from accel_node.metrics import NodeMetrics
from accel_node.models.backend import ContentBackend, EmbeddedBackend, KuboBackend
from accel_node.models.keys import KeyFiles
from accel_node.models.service import Limits, ModelService, local_block
from accel_node.models.trust import TrustStore
from accel_node.network import PeerNetwork
from accel_node.presence import PresenceService
from accel_node.runtime.library import ModelLibrary
from accel_node.runtime.metrics import RuntimeMetrics
from accel_node.runtime.service import InferenceService, RuntimeSettings
from accel_node.shard.router import ShardRouter
from accel_node.shard.server import StageServer
from accel_node.shard.service import ShardService
from accel_node.store import AsyncStore
from p2p.addrs import parse_listen_addr
from p2p.bitswap.service import BitswapService
from p2p.bulk import BlockFetcher, BulkService, serve_blocks
from p2p.content import BlockStore
from p2p.content.kubo_rpc import KuboRpcClient
from p2p.dht import RecordDHT
from p2p.host import HostSettings, build_host, run_host
from p2p.identity import peer_id_of
from p2p.mdns import run_mdns
from p2p.pubsub import PubSub

log = logging.getLogger(__name__)


@dataclass
class _Services:
    host: IHost
    network: PeerNetwork
    context: ApiContext
    starters: list[Callable[..., Awaitable[Any]]]
    name: str


class Node:
    """One accel-node daemon."""

    def __init__(self, home: NodeHome, config: Config) -> None:
        self.home = home
        self.config = config
        self.metrics = NodeMetrics()
        self._stopping = trio.Event()
        self.ready = trio.Event()  # set once every service runs and api.json is written
        self.core: LocalApi | None = None  # the in-process core API, once built

    def request_stop(self) -> None:
        """Begin a graceful shutdown (as SIGTERM does)."""
        self._stopping.set()

    async def run(self) -> None:
        """Run until stopped by a signal or :meth:`request_stop`.

        Signals are received for the whole lifetime, clean-up included, so that a second SIGTERM
        arriving while the store is being flushed cancels work instead of killing the process.
        """
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals, signals, nursery.cancel_scope)
                try:
                    await self._run_locked()
                finally:
                    nursery.cancel_scope.cancel()

    async def _run_locked(self) -> None:
        with self.home.lock():
            key_pair = self.home.identity()
            token = self.home.token()
            peer_id = str(peer_id_of(key_pair))
            self.metrics.set_identity(peer_id)
            store = await AsyncStore.open(
                self.home.resolve(self.config.store.path), synchronous=self.config.store.synchronous
            )
            try:
                await self._serve(store, key_pair, token)
            finally:
                self.home.remove_api_info()
                await store.close()
                log.info("node stopped", extra={"peer_id": peer_id})

    def _build(self, store: AsyncStore, key_pair: KeyPair, token: str) -> _Services:
        """Every service, wired together from config (nothing runs yet)."""
        cfg = self.config
        listen = [parse_listen_addr(a) for a in cfg.p2p.listen_addrs]
        host = build_host(
            key_pair,
            HostSettings(listen_addrs=listen, low_water=cfg.p2p.low_water, high_water=cfg.p2p.high_water),
        )
        name = cfg.node.name or socket.gethostname()
        network = PeerNetwork(host, store, cfg.p2p, self.metrics)
        dht = RecordDHT(host, namespace=capability.NAMESPACE, kinds=[capability.KIND])
        pubsub = PubSub(host)
        hardware = HardwareService(store=store, disk_dir=self.home.root, auto=cfg.profile.auto)
        capabilities = capability.CapabilityService(
            key_pair=key_pair,
            dht=dht,
            store=store,
            hardware=hardware,
            network=network,
            settings=cfg.p2p,
            metrics=self.metrics,
            name=name,
        )
        # Not flushed block by block (that caps fetches at tens of MB/s): the model service syncs once
        # before a model becomes loadable, and every read is verified.
        blocks = BlockStore(self.home.root / "ipfs", max_bytes=cfg.ipfs.store_max_bytes, fsync=False)
        bitswap = BitswapService(host, partial(local_block, blocks), network.penalties)
        bulk = BulkService(host, port=cfg.shard.bulk_port)
        serve_blocks(bulk, partial(local_block, blocks))  # the fast path next to Bitswap
        trust = TrustStore(store, KeyFiles(self.home.root / "keys"))
        models = ModelService(
            home=self.home.root,
            store=store,
            blocks=blocks,
            backend=self._content_backend(host=host, blocks=blocks, bitswap=bitswap, dht=dht, bulk=bulk),
            trust=trust,
            limits=Limits(cfg.models.max_manifest_bytes, cfg.models.max_file_bytes),
        )
        library = ModelLibrary(home=self.home.root, models=models, store=store, hardware=hardware)
        inference = self._inference(library)
        presence = PresenceService(
            key_pair=key_pair,
            pubsub=pubsub,
            store=store,
            network=network,
            settings=cfg.p2p,
            metrics=self.metrics,
        )
        server = StageServer(
            bulk,
            penalties=network.penalties,
            intra_op_threads=cfg.runtime.intra_op_threads,
            hop_timeout_s=cfg.shard.hop_timeout_s,
        )
        shards = ShardService(
            key_pair=key_pair,
            dht=dht,
            network=network,
            store=store,
            models=models,
            library=library,
            hardware=hardware,
            capabilities=capabilities,
            server=server,
            router=ShardRouter(
                bulk,
                penalties=network.penalties,
                spot_check_p=cfg.shard.spot_check_p,
                hop_timeout_s=cfg.shard.hop_timeout_s,
                intra_op_threads=cfg.runtime.intra_op_threads,
            ),
            settings=cfg.shard,
        )
        self._offer(capabilities, presence, models, inference, shards)
        core = LocalApi(
            LocalServices(
                network=network,
                capability=capabilities,
                hardware=hardware,
                store=store,
                trust=trust,
                models=models,
                inference=inference,
                library=library,
                shards=shards,
                config=cfg,
                metrics=self.metrics,
                name=name,
            )
        )
        self.core = core
        context = ApiContext(core=core, metrics=self.metrics, token=token)
        # Started in this order, each ready before the next (see the module docstring).
        starters: list[Callable[..., Awaitable[Any]]] = [
            partial(run_host, host, listen, auto_connect=cfg.p2p.auto_connect),
            dht.run,
            pubsub.run,
            network.run,
            hardware.run,
            capabilities.run,
            presence.run,
            bitswap.run,
            bulk.run,
            models.backend.run,
            inference.run,
            server.run,
            shards.router.run,
            shards.run,
        ]
        return _Services(host=host, network=network, context=context, starters=starters, name=name)

    @staticmethod
    def _offer(
        capabilities: capability.CapabilityService,
        presence: PresenceService,
        models: ModelService,
        inference: InferenceService,
        shards: ShardService,
    ) -> None:
        """What the capability record and heartbeats say this node offers (models, load, stages)."""

        async def installed() -> list[str]:
            return [str(m["cid"]) for m in await models.list()]

        def queue_depth() -> int:
            return sum(int(b["queue_depth"]) for b in inference.stats()["batchers"].values())

        capabilities.offer.models = installed
        capabilities.offer.queue_depth = queue_depth
        capabilities.offer.shards = shards.entries
        presence.queue_depth = queue_depth

    async def _serve(self, store: AsyncStore, key_pair: KeyPair, token: str) -> None:
        cfg = self.config
        services = self._build(store, key_pair, token)
        app = create_app(services.context)
        api_done = trio.Event()

        async def api_task(*, task_status: TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await serve_api(
                    app,
                    host=cfg.api.host,
                    port=cfg.api.port,
                    grace_s=cfg.node.shutdown_grace_s,
                    shutdown_trigger=self._stopping.wait,
                    task_status=task_status,
                )
            finally:
                api_done.set()

        network = services.network
        async with trio.open_nursery() as nursery:
            for start in services.starters:
                await nursery.start(start)
            if cfg.p2p.mdns:
                nursery.start_soon(run_mdns, services.host, network.connect_discovered)
            binds = await nursery.start(api_task)
            url = client_url(binds[0], cfg.api.host)
            self.home.write_api_info(
                {"url": url, "peer_id": network.peer_id, "addrs": network.own_addrs(), "pid": os.getpid()}
            )
            await store.set_meta("last_started_version", __version__)
            self.ready.set()
            log.info(
                "node ready",
                extra={
                    "peer_id": network.peer_id,
                    "api": url,
                    "addrs": network.own_addrs(),
                    "node_name": services.name,
                },
            )
            await self._stopping.wait()
            log.info("shutting down", extra={"grace_s": cfg.node.shutdown_grace_s})
            with trio.move_on_after(cfg.node.shutdown_grace_s + 1.0):
                await api_done.wait()
            nursery.cancel_scope.cancel()

    def _content_backend(
        self, *, host: IHost, blocks: BlockStore, bitswap: BitswapService, dht: RecordDHT, bulk: BulkService
    ) -> ContentBackend:
        """Where model blocks come from and go to: a Kubo node over RPC, or our own bulk channels and
        Bitswap with providers from the DHT."""
        if self.config.ipfs.backend == "kubo":
            return KuboBackend(kubo=KuboRpcClient(self.config.ipfs.kubo_api), blocks=blocks)
        penalties = bitswap.penalties
        fetcher = BlockFetcher(bulk, on_bad_block=lambda peer: penalties.penalise(peer, "bad-block"))
        return EmbeddedBackend(host=host, bitswap=bitswap, dht=dht, fetcher=fetcher)

    def _inference(self, library: ModelLibrary) -> InferenceService:
        return InferenceService(
            RuntimeSettings(**self.config.runtime.model_dump()),
            resolve=library.resolve,
            variant_path=library.variant_path,
            record=library.record,
            metrics=RuntimeMetrics(self.metrics.registry),
        )

    async def _watch_signals(self, signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not self._stopping.is_set():
                log.info("signal received; stopping", extra={"signal": name})
                self._stopping.set()
            else:
                log.warning("second signal; stopping now", extra={"signal": name})
                scope.cancel()
