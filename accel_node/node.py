"""The node: one daemon's lifetime, from taking the home lock to flushing the store.

Subsystems are built by :mod:`accel_node.assembly` (constructor injection, nothing runs while
building) and run in three nested layers, each service started with ``nursery.start`` so that each is
ready before the next: the substrate (libp2p host, DHT, GossipSub, network, bulk channels) outermost,
the services (content, runtime, announcements, sharding, mDNS) inside it, the control API innermost;
then ``api.json`` is written and :attr:`Node.ready` set.

Shutdown on SIGINT/SIGTERM unwinds the layers within ``[node] shutdown_grace_s``: (1) the API stops
accepting connections and lets in-flight requests finish (a sharded request in flight completes or
fails over); (2) services finish what peers asked of them by the same deadline, refusing new work so
that peers fail over (the stage server drains); then they are cancelled; (3) the substrate closes the
peer connections. Finally ``api.json`` is removed and the store is checkpointed and closed under a
shielded cancel scope. A second signal during shutdown cancels everything at once.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator
from functools import partial

import trio
from fastapi import FastAPI
from libp2p.crypto.keys import KeyPair

from accel_node import __version__
from accel_node.api.app import create_app
from accel_node.api.context import ApiContext
from accel_node.api.server import client_url, serve_api
from accel_node.assembly import (
    Basis,
    Substrate,
    build_announcing,
    build_content,
    build_core,
    build_runtime,
    build_sharding,
    build_stage_server,
    build_substrate,
    node_name,
)
from accel_node.audit import AuditLog
from accel_node.config import Config
from accel_node.home import ApiTokens, NodeHome
from accel_node.local import LocalApi
from accel_node.metrics import NodeMetrics
from accel_node.store import AsyncStore
from p2p.identity import peer_id_of
from p2p.mdns import run_mdns

log = logging.getLogger(__name__)


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
        arriving while the store is being flushed cancels work instead of killing the process. The
        home lock is taken first, outside any nursery, so that a second daemon on the same home is
        refused with one clear error (not an exception group) before anything starts.
        """
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals, self.home.lock():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals, signals, nursery.cancel_scope)
                try:
                    await self._run_locked()
                finally:
                    nursery.cancel_scope.cancel()

    async def _run_locked(self) -> None:
        """Everything that needs the home lock (held by :meth:`run`)."""
        key_pair = self.home.identity()
        tokens = ApiTokens.load(self.home)  # creates api.read.token in a home made before scopes
        peer_id = str(peer_id_of(key_pair))
        self.metrics.set_identity(peer_id)
        store = await AsyncStore.open(
            self.home.resolve(self.config.store.path), synchronous=self.config.store.synchronous
        )
        try:
            await self._serve(store, key_pair, tokens)
        finally:
            self.home.remove_api_info()
            await store.close()
            log.info("node stopped", extra={"peer_id": peer_id})

    async def _serve(self, store: AsyncStore, key_pair: KeyPair, tokens: ApiTokens) -> None:
        """Build every subsystem, then run them in three nested layers: the substrate outermost,
        the services inside it, the control API innermost; shutdown unwinds them in that order.
        The audit log starts first and stops last (it writes what is still queued when stopped)."""
        cfg = self.config
        audit = AuditLog(
            store,
            key_pair=key_pair,
            queue_size=cfg.audit.queue_size,
            max_records=cfg.audit.max_records,
            checkpoint_every=cfg.audit.checkpoint_every,
        )
        basis = Basis(cfg, self.home.root, key_pair, store, self.metrics, audit, tokens)
        self.metrics.track_resources(basis.resources)
        substrate = build_substrate(basis)
        content = build_content(basis, substrate=substrate)
        runtime = build_runtime(basis, content=content)
        served = build_stage_server(basis, substrate=substrate)
        announcing = build_announcing(
            basis, substrate=substrate, content=content, runtime=runtime, served=served
        )
        sharding = build_sharding(
            basis, substrate=substrate, content=content, runtime=runtime, announcing=announcing, served=served
        )
        self.core = build_core(
            basis,
            substrate=substrate,
            content=content,
            runtime=runtime,
            announcing=announcing,
            sharding=sharding,
        )
        app = create_app(ApiContext(core=self.core, metrics=self.metrics, tokens=tokens, events=basis.events))

        async with trio.open_nursery() as substrate_nursery:
            await substrate_nursery.start(audit.run)
            for start in substrate.starters():
                await substrate_nursery.start(start)
            async with trio.open_nursery() as services:
                for start in [*content.starters(), *runtime.starters(), *announcing.starters()]:
                    await services.start(start)
                for start in sharding.starters():
                    await services.start(start)
                if cfg.p2p.mdns:
                    services.start_soon(run_mdns, substrate.host, substrate.network.connect_discovered)
                deadline = await self._serve_api(app, store, substrate)
                # Layer 2: services finish what peers asked of them (stages in flight) by the same
                # deadline as the API, refusing new work meanwhile so that peers fail over.
                with trio.move_on_at(deadline) as drain:
                    await sharding.server.drain()
                log.info("services stopping", extra={"drained": not drain.cancelled_caught})
                services.cancel_scope.cancel()
            # Layer 3: the substrate closes peer connections last.
            log.info("network stopping")
            substrate_nursery.cancel_scope.cancel()

    async def _serve_api(self, app: FastAPI, store: AsyncStore, substrate: Substrate) -> float:
        """Serve the control API until a stop is requested and its in-flight requests have drained
        (layer 1 of shutdown); the deadline by which everything must have finished."""
        cfg = self.config
        network = substrate.network
        grace = cfg.node.shutdown_grace_s
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                partial(
                    serve_api,
                    app,
                    host=cfg.api.host,
                    port=cfg.api.port,
                    grace_s=grace,
                    shutdown_trigger=self._stopping.wait,
                )
            )
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
                    "node_name": node_name(cfg),
                },
            )
            await self._stopping.wait()
            deadline = trio.current_time() + grace
            log.info("shutting down", extra={"grace_s": grace})
            # hypercorn stops accepting connections and gives in-flight requests `grace` seconds;
            # past that (plus a margin) the API is cancelled.
            nursery.cancel_scope.deadline = deadline + 1.0
        return deadline

    async def _watch_signals(self, signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not self._stopping.is_set():
                log.info("signal received; stopping", extra={"signal": name})
                self._stopping.set()
            else:
                log.warning("second signal; stopping now", extra={"signal": name})
                scope.cancel()
