"""Building a node from its configuration, one subsystem at a time.

Each builder takes what the subsystems below it built and returns a frozen record of its own
services, wired by constructor arguments; each record says which of its services run
(``starters``, started in order with ``nursery.start``, so each is ready before the next). The
node (:mod:`accel_node.node`) runs the records in layers, so that shutdown can go in the reverse:

- :class:`Substrate`: the libp2p host, the owner's policy (tokens, membership, rules), the DHT,
  GossipSub, the network service, bulk channels;
- :class:`Content`: the block store, Bitswap, the trust store, the model service and its backend;
- :class:`Runtime`: hardware profile, the model library, the inference service;
- :class:`~accel_node.shard.served.ServedStages`: the stage server and the registry of what it serves;
- :class:`Announcing`: the capability record and presence heartbeats, which say what the others offer
  (models held, inference queue, stages served), told so when they are built;
- :class:`Sharding`: the router and the shard service (the stage server comes with ``ServedStages``);
- :func:`build_core`: the core API over all of them (what the control API serves).

Nothing here starts anything; building has no side effects beyond creating directories.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from multiaddr import Multiaddr

from accel_node import capability
from accel_node.audit import MODEL_LOAD, AuditLog
from accel_node.config import Config
from accel_node.hardware import HardwareService
from accel_node.home import ApiTokens
from accel_node.local import LocalApi, LocalServices
from accel_node.metrics import NodeMetrics
from accel_node.models.backend import ContentBackend, EmbeddedBackend, KuboBackend
from accel_node.models.keys import KeyFiles
from accel_node.models.service import Limits, ModelService, local_block
from accel_node.models.trust import TrustStore
from accel_node.network import PeerNetwork
from accel_node.policy import ASSIGN, COMPUTE, CONTENT, PolicyService
from accel_node.policy.quota import AssignQuota
from accel_node.presence import PresenceService
from accel_node.runtime.library import ModelLibrary
from accel_node.runtime.metrics import RuntimeMetrics
from accel_node.runtime.service import InferenceService, RuntimeSettings
from accel_node.shard.admission import AdmissionLimits
from accel_node.shard.gossip import EvidenceGossip
from accel_node.shard.observed import PeerObservations
from accel_node.shard.retention import Retention
from accel_node.shard.router import ShardRouter
from accel_node.shard.served import ServedStages
from accel_node.shard.server import StageServer
from accel_node.shard.service import ShardService
from accel_node.shard.spotcheck import Tolerance
from accel_node.store import AsyncStore
from p2p.addrs import parse_listen_addr
from p2p.bitswap.service import BitswapService
from p2p.bulk import BlockFetcher, BulkLimits, BulkService, serve_blocks
from p2p.content import BlockStore
from p2p.content.kubo_rpc import KuboRpcClient
from p2p.dht import RecordDHT
from p2p.events import EventSink
from p2p.host import HostSettings, build_host, run_host
from p2p.pubsub import PubSub
from p2p.resources import ResourceManager
from p2p.tasks import FailureHook

Starter = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Basis:
    """What every subsystem is built from. ``audit`` is the node's audit log (started by the node
    before every other service); a component that refuses or catches something takes
    ``events=basis.events``."""

    config: Config
    home: Path
    key_pair: KeyPair
    store: AsyncStore
    metrics: NodeMetrics
    audit: AuditLog
    tokens: ApiTokens
    resources: ResourceManager = field(default_factory=ResourceManager)
    """What peers may make the node spend, per peer and in total (one manager for every protocol)."""

    @property
    def events(self) -> EventSink:
        """The node's :data:`p2p.events.EventSink`: every event it is given goes to the audit log."""
        return self.audit.sink


@dataclass(frozen=True)
class Substrate:
    host: IHost
    listen: list[Multiaddr]
    dht: RecordDHT
    pubsub: PubSub
    network: PeerNetwork
    bulk: BulkService
    auto_connect: bool
    policy: PolicyService

    def starters(self) -> list[Starter]:
        run = partial(run_host, self.host, self.listen, auto_connect=self.auto_connect)
        policy = partial(self.policy.run, self.host)
        return [run, policy, self.dht.run, self.pubsub.run, self.network.run, self.bulk.run]


def build_substrate(basis: Basis) -> Substrate:
    cfg, key_pair = basis.config, basis.key_pair
    listen = [parse_listen_addr(a) for a in cfg.p2p.listen_addrs]
    host = build_host(
        key_pair,
        HostSettings(listen_addrs=listen, low_water=cfg.p2p.low_water, high_water=cfg.p2p.high_water),
    )
    return Substrate(
        host=host,
        listen=listen,
        dht=RecordDHT(host, namespace=capability.NAMESPACE, kinds=[capability.KIND]),
        pubsub=PubSub(host),
        network=PeerNetwork(host, basis.store, cfg.p2p, basis.metrics, events=basis.events),
        bulk=BulkService(
            host,
            port=cfg.shard.bulk_port,
            limits=BulkLimits(**cfg.bulk.model_dump()),  # [bulk] keys are BulkLimits' fields
            on_failure=basis.metrics.background_failure,
            events=basis.events,
            resources=basis.resources,
        ),
        auto_connect=cfg.p2p.auto_connect,
        policy=PolicyService(
            key_pair=key_pair,
            store=basis.store,
            settings=cfg.policy,
            home=basis.home,
            resources=basis.resources,
            events=basis.events,
        ),
    )


@dataclass(frozen=True)
class Content:
    blocks: BlockStore
    bitswap: BitswapService
    trust: TrustStore
    models: ModelService

    def starters(self) -> list[Starter]:
        return [self.bitswap.run, self.models.backend.run]


def build_content(basis: Basis, *, substrate: Substrate) -> Content:
    cfg, home, store = basis.config, basis.home, basis.store
    # Not flushed block by block (that caps fetches at tens of MB/s): the model service syncs once
    # before a model becomes loadable, and every read is verified.
    blocks = BlockStore(home / "ipfs", max_bytes=cfg.ipfs.store_max_bytes, fsync=False)
    bitswap = BitswapService(
        substrate.host,
        partial(local_block, blocks),
        substrate.network.penalties,
        events=basis.events,
        resources=basis.resources,
        allow=substrate.policy.allows(CONTENT, protocol="bitswap"),
    )
    serve_blocks(  # the fast path next to Bitswap
        substrate.bulk,
        partial(local_block, blocks),
        allow=substrate.policy.allows(CONTENT, protocol="bulk-blocks"),
    )
    trust = TrustStore(store, KeyFiles(home / "keys"))
    models = ModelService(
        home=home,
        store=store,
        blocks=blocks,
        backend=_content_backend(
            cfg,
            substrate,
            blocks=blocks,
            bitswap=bitswap,
            on_failure=basis.metrics.background_failure,
            events=basis.events,
        ),
        trust=trust,
        limits=Limits(cfg.models.max_manifest_bytes, cfg.models.max_file_bytes),
    )
    return Content(blocks=blocks, bitswap=bitswap, trust=trust, models=models)


def _content_backend(
    cfg: Config,
    substrate: Substrate,
    *,
    blocks: BlockStore,
    bitswap: BitswapService,
    on_failure: FailureHook,
    events: EventSink,
) -> ContentBackend:
    """Where model blocks come from and go to: a Kubo node over RPC, or our own bulk channels and
    Bitswap with providers from the DHT."""
    if cfg.ipfs.backend == "kubo":
        return KuboBackend(kubo=KuboRpcClient(cfg.ipfs.kubo_api), blocks=blocks, on_failure=on_failure)
    penalties = bitswap.penalties
    fetcher = BlockFetcher(
        substrate.bulk, on_bad_block=lambda peer: penalties.penalise(peer, "bad-block"), events=events
    )
    return EmbeddedBackend(host=substrate.host, bitswap=bitswap, dht=substrate.dht, fetcher=fetcher)


@dataclass(frozen=True)
class Runtime:
    hardware: HardwareService
    library: ModelLibrary
    inference: InferenceService

    def starters(self) -> list[Starter]:
        return [self.hardware.run, self.inference.run]


def build_runtime(basis: Basis, *, content: Content) -> Runtime:
    cfg, home, store = basis.config, basis.home, basis.store
    failure = basis.metrics.background_failure
    hardware = HardwareService(store=store, disk_dir=home, auto=cfg.profile.auto, on_failure=failure)
    library = ModelLibrary(home=home, models=content.models, store=store, hardware=hardware)
    audit = basis.audit

    async def resolve(cid: str) -> tuple[Path, Any]:
        """The library's answer, audited: the runtime resolves a model before it loads it."""
        found = await library.resolve(cid)
        audit.record(MODEL_LOAD, reason="model loaded for inference", details={"cid": cid})
        return found

    inference = InferenceService(
        RuntimeSettings(**cfg.runtime.model_dump()),
        resolve=resolve,
        variant_path=library.variant_path,
        record=library.record,
        metrics=RuntimeMetrics(basis.metrics.registry),
        on_failure=failure,
    )
    return Runtime(hardware=hardware, library=library, inference=inference)


@dataclass(frozen=True)
class Announcing:
    capabilities: capability.CapabilityService
    presence: PresenceService

    def starters(self) -> list[Starter]:
        return [self.capabilities.run, self.presence.run]


def build_announcing(
    basis: Basis, *, substrate: Substrate, content: Content, runtime: Runtime, served: ServedStages
) -> Announcing:
    """The capability record and heartbeats, told where what they announce comes from: the models
    held, the inference queue, and the stages served (``served``, filled by the shard service)."""
    cfg, key_pair, store, metrics = basis.config, basis.key_pair, basis.store, basis.metrics
    models, inference = content.models, runtime.inference

    async def installed() -> list[str]:
        return [str(m["cid"]) for m in await models.list()]

    def queue_depth() -> int:
        return sum(int(b["queue_depth"]) for b in inference.stats()["batchers"].values())

    capabilities = capability.CapabilityService(
        key_pair=key_pair,
        dht=substrate.dht,
        store=store,
        hardware=runtime.hardware,
        network=substrate.network,
        settings=cfg.p2p,
        metrics=metrics,
        name=node_name(cfg),
        offer=capability.Offer(models=installed, queue_depth=queue_depth, shards=served.entries),
    )
    presence = PresenceService(
        key_pair=key_pair,
        pubsub=substrate.pubsub,
        store=store,
        network=substrate.network,
        settings=cfg.p2p,
        metrics=metrics,
        queue_depth=queue_depth,
    )
    return Announcing(capabilities=capabilities, presence=presence)


@dataclass(frozen=True)
class Sharding:
    server: StageServer
    router: ShardRouter
    shards: ShardService
    evidence: EvidenceGossip

    def starters(self) -> list[Starter]:
        return [self.server.run, self.router.run, self.shards.run, self.evidence.run]


def build_stage_server(basis: Basis, *, substrate: Substrate) -> ServedStages:
    """The stage server and the registry of what it serves (built before the announcements, which
    say what it serves, and the shard service, which needs them)."""
    cfg = basis.config
    server = StageServer(
        substrate.bulk,
        penalties=substrate.network.penalties,
        intra_op_threads=cfg.runtime.intra_op_threads,
        hop_timeout_s=cfg.shard.hop_timeout_s,
        retention=Retention(
            basis.key_pair, max_bytes=cfg.shard.retention_bytes, keep_s=cfg.shard.retention_s
        ),
        max_in_flight=cfg.shard.stage_in_flight,
        admission=AdmissionLimits(**{f.name: getattr(cfg.shard, f.name) for f in fields(AdmissionLimits)}),
        resources=basis.resources,
        events=basis.events,
    )
    server.allow = substrate.policy.allows(COMPUTE, protocol="shard")
    return ServedStages(server)


def build_sharding(
    basis: Basis,
    *,
    substrate: Substrate,
    content: Content,
    runtime: Runtime,
    announcing: Announcing,
    served: ServedStages,
) -> Sharding:
    cfg = basis.config
    penalties = substrate.network.penalties
    server = served.server
    observations = PeerObservations()
    router = ShardRouter(
        substrate.bulk,
        penalties=penalties,
        spot_check_p=cfg.shard.spot_check_p,
        observations=observations,
        audit_probability=observations.audit_hook(cfg.shard.spot_check_p),  # unproven: always
        events=basis.events,
        hop_timeout_s=cfg.shard.hop_timeout_s,
        intra_op_threads=cfg.runtime.intra_op_threads,
        audit_concurrency=cfg.shard.audit_concurrency,
        on_failure=basis.metrics.background_failure,
    )
    shards = ShardService(
        key_pair=basis.key_pair,
        dht=substrate.dht,
        network=substrate.network,
        store=basis.store,
        models=content.models,
        library=runtime.library,
        hardware=runtime.hardware,
        capabilities=announcing.capabilities,
        server=server,
        router=router,
        settings=cfg.shard,
        served=served,
        on_failure=basis.metrics.background_failure,
        allow_assign=substrate.policy.allows(ASSIGN, protocol="shard-assign"),
        quota=AssignQuota(basis.store, cfg.policy.assign_quota_bytes),
    )
    evidence = EvidenceGossip(
        substrate.pubsub,
        local_id=substrate.network.host.get_id(),
        stages=shards.referee_stages,
        referees=router.referees,
        penalties=penalties,
        tolerance=Tolerance(router.atol, router.rtol),
        events=basis.events,
    )
    router.auditor.publish = evidence.publish  # a liar caught here is shown to every node
    return Sharding(server=server, router=router, shards=shards, evidence=evidence)


def node_name(cfg: Config) -> str:
    return cfg.node.name or socket.gethostname()


def build_core(
    basis: Basis,
    *,
    substrate: Substrate,
    content: Content,
    runtime: Runtime,
    announcing: Announcing,
    sharding: Sharding,
) -> LocalApi:
    cfg, store, metrics = basis.config, basis.store, basis.metrics
    return LocalApi(
        LocalServices(
            network=substrate.network,
            capability=announcing.capabilities,
            hardware=runtime.hardware,
            store=store,
            trust=content.trust,
            models=content.models,
            inference=runtime.inference,
            library=runtime.library,
            shards=sharding.shards,
            policy=substrate.policy,
            config=cfg,
            metrics=metrics,
            name=node_name(cfg),
            audit=basis.audit,
            tokens=basis.tokens,
        )
    )
