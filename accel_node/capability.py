"""Capability records: what this node can do, signed and published in the DHT; what peers can do.

Each node publishes ``/accel/cap/<peer-id>``: a :mod:`p2p.records` record of kind ``cap`` signed
with its libp2p key, refreshed every ``[p2p] cap_refresh_s`` and valid for twice that. Reading a
peer's record always goes to the network (a cached copy may be stale); the record is verified
(signature, signer = key's peer id, expiry, size) by the DHT layer, its body is validated here, and
a sequence number lower than one already accepted for that peer is refused as a replay.

Every figure is a peer's own claim, so each is bounded to what one node can physically have (the
bounds below, a generous margin above the largest hardware of 2026); a record claiming more is refused
whole, counted as ``records_rejected{kind="cap", reason="implausible"}`` (refused, not clamped: a peer
that claims a petaflop of CPU GEMM is broken or lying, and no part of its record is worth believing).
Within the bounds a claim is still only a claim: routing prefers what this node observed
(:mod:`accel_node.shard.observed`).

======================  =========================  ==============================================
figure                  bound                      why
======================  =========================  ==============================================
``hw.peak_gflops``      <= 1e6 GFLOP/s (1 PFLOP/s)  the node's measured fp32 GEMM (numpy/ORT on its
                                                   CPUs): a 2-socket server does ~10 TFLOP/s
``*.mem_bw_gbs``        <= 1e5 GB/s                HBM3e is ~8 TB/s per device, DDR5 ~1 TB/s per node
``hw.mem_total_gb``     <= 1e5 GB (100 TB)         the largest single systems hold tens of TB
``hw.mem_free_gb``      <= ``mem_total_gb``        free memory is part of the total
``hw.cores``            <= 65536                   physical cores of one system
``gpus[].memory_gb``    <= 4096 GB                 one accelerator holds <= ~300 GB today
``gpus[].*_tflops``     <= 20000 TFLOP/s           one accelerator: ~2.5 PFLOP/s dense fp16 today
``load/shards queue``   <= 1 << 20 requests        more than any node's admission limits allow
======================  =========================  ==============================================
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import psutil
import trio
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from trio_typing import TaskStatus

from accel_node import __version__
from accel_node.config import P2PSection
from accel_node.hardware import HardwareService
from accel_node.metrics import NodeMetrics
from accel_node.network import PeerNetwork
from accel_node.store import AsyncStore, PeerRecord, Replay
from p2p.dht import RecordDHT, record_key
from p2p.records import sign_record

log = logging.getLogger(__name__)

NAMESPACE = "accel"
KIND = "cap"
FETCH_CONCURRENCY = 4
EARLY_REPUBLISH_S = 2.0
SWEEP_INTERVAL_S = 1.0

# Plausibility bounds on what a peer claims (see the module docstring for why each).
MAX_NODE_GFLOPS = 1e6
MAX_MEM_BW_GBS = 1e5
MAX_MEM_GB = 1e5
MAX_CORES = 1 << 16
MAX_GPU_MEMORY_GB = 4096.0
MAX_GPU_TFLOPS = 20_000.0
MAX_QUEUE_DEPTH = 1 << 20
MAX_ADDR_CHARS = 256  # a multiaddr with a DNS name and a /p2p/ peer id fits in well under this
IMPLAUSIBLE_ERRORS = frozenset({"less_than_equal", "implausible"})
"""Validation error types that mean "a figure beyond its bound" rather than "not a capability record"."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=True)


class GpuSummary(_Body):
    name: str = Field(max_length=256)
    memory_gb: float = Field(ge=0, le=MAX_GPU_MEMORY_GB)
    compute_capability: str | None = Field(default=None, max_length=32)
    fp32_tflops: float | None = Field(default=None, ge=0, le=MAX_GPU_TFLOPS)
    fp16_tflops: float | None = Field(default=None, ge=0, le=MAX_GPU_TFLOPS)
    bf16_tflops: float | None = Field(default=None, ge=0, le=MAX_GPU_TFLOPS)
    mem_bw_gbs: float | None = Field(default=None, ge=0, le=MAX_MEM_BW_GBS)


class HardwareSummary(_Body):
    peak_gflops: float | None = Field(default=None, ge=0, le=MAX_NODE_GFLOPS)  # fp32 GEMM, all threads
    gflops_1t: float | None = Field(default=None, ge=0, le=MAX_NODE_GFLOPS)  # fp32 GEMM, one thread
    int8_gops: float | None = Field(default=None, ge=0, le=MAX_NODE_GFLOPS)  # int8 GEMM, all threads
    mem_bw_gbs: float | None = Field(default=None, ge=0, le=MAX_MEM_BW_GBS)
    mem_total_gb: float = Field(ge=0, le=MAX_MEM_GB)
    mem_free_gb: float = Field(ge=0, le=MAX_MEM_GB)
    cpu: str = Field(max_length=256)
    cores: int = Field(ge=1, le=MAX_CORES)
    gpus: list[GpuSummary] = Field(default_factory=list, max_length=64)
    profiled: bool = False

    @model_validator(mode="after")
    def _free_within_total(self) -> HardwareSummary:
        if self.mem_free_gb > self.mem_total_gb * 1.001 + 0.01:  # readings taken a moment apart
            raise PydanticCustomError("implausible", "mem_free_gb exceeds mem_total_gb")
        return self


class Load(_Body):
    queue_depth: int = Field(ge=0, le=MAX_QUEUE_DEPTH)
    utilisation: float = Field(ge=0, le=1)


class ShardEntry(_Body):
    """A pipeline stage this node serves (see accel_node.shard)."""

    model: str = Field(max_length=128)
    stage: int = Field(ge=0, le=1024)
    plan: str = Field(max_length=128)
    queue_depth: int = Field(default=0, ge=0, le=MAX_QUEUE_DEPTH)
    busy: float = Field(default=0.0, ge=0, le=1)


class CapabilityBody(_Body):
    """The body of a capability record (unknown fields from newer peers are ignored)."""

    name: str = Field(max_length=64)
    version: str = Field(max_length=32)
    addrs: list[Annotated[str, Field(max_length=MAX_ADDR_CHARS)]] = Field(max_length=32)
    hw: HardwareSummary
    models: list[Annotated[str, Field(max_length=128)]] = Field(default_factory=list, max_length=1024)
    shards: list[ShardEntry] = Field(default_factory=list, max_length=256)
    load: Load


@dataclass
class Offer:
    """Where the capability record's changing parts come from (what the node holds, serves, queues);
    given to :class:`CapabilityService` when it is built (:func:`accel_node.assembly.build_announcing`)."""

    models: Callable[[], Awaitable[list[str]]] | None = None
    queue_depth: Callable[[], int] = lambda: 0
    shards: Callable[[], list[ShardEntry]] = list


def rejection_reason(exc: ValidationError) -> str:
    """``implausible`` when every problem is a figure beyond its bound, else ``malformed``."""
    types = {str(error["type"]) for error in exc.errors()}
    return "implausible" if types <= IMPLAUSIBLE_ERRORS else "malformed"


def parse_body(data: object) -> CapabilityBody | None:
    """A stored or received record body, or None when it is malformed or implausible."""
    try:
        return CapabilityBody.model_validate(data)
    except ValidationError:
        return None


def current_load(queue_depth: int = 0) -> Load:
    """This node's load: requests waiting for inference, and measured CPU use."""
    utilisation = psutil.cpu_percent(interval=None) / 100.0
    return Load(queue_depth=queue_depth, utilisation=min(1.0, max(0.0, utilisation)))


def matches(
    body: CapabilityBody, *, min_mem_gb: float | None, min_gflops: float | None, gpu: bool | None
) -> bool:
    """Whether a peer's capability satisfies a search."""
    hw = body.hw
    if min_mem_gb is not None and hw.mem_free_gb < min_mem_gb:
        return False
    if min_gflops is not None and (hw.peak_gflops is None or hw.peak_gflops < min_gflops):
        return False
    return gpu is None or (len(hw.gpus) > 0) == gpu


class CapabilityService:
    """Publishes this node's record and fetches, verifies and records peers' records."""

    def __init__(
        self,
        *,
        key_pair: KeyPair,
        dht: RecordDHT,
        store: AsyncStore,
        hardware: HardwareService,
        network: PeerNetwork,
        settings: P2PSection,
        metrics: NodeMetrics,
        name: str,
        offer: Offer | None = None,
    ) -> None:
        self._key_pair = key_pair
        self.dht = dht
        self._store = store
        self._hardware = hardware
        self._network = network
        self._settings = settings
        self._metrics = metrics
        self._name = name
        self._seq = 0
        self._republish = trio.Event()
        self.last_published: dict[str, Any] | None = None
        self.offer = offer or Offer()
        hardware.on_profile.append(lambda _profile: self._republish.set())
        psutil.cpu_percent(interval=None)  # prime the counter; the first reading is meaningless

    async def body(self) -> CapabilityBody:
        models = await self.offer.models() if self.offer.models is not None else []
        return CapabilityBody(
            name=self._name,
            version=__version__,
            addrs=self._network.own_addrs()[:32],
            hw=HardwareSummary.model_validate(self._hardware.summary()),
            models=models[:1024],
            shards=self.offer.shards()[:256],
            load=current_load(self.offer.queue_depth()),
        )

    def republish_soon(self) -> None:
        """Publish a fresh record now (e.g. this node started or stopped serving a stage)."""
        self._republish.set()

    def _next_seq(self) -> int:
        # Milliseconds since the epoch keep sequence numbers increasing across restarts.
        self._seq = max(self._seq + 1, int(time.time() * 1000))
        return self._seq

    async def publish(self) -> int:
        """Sign and publish a fresh record; returns how many peers stored it."""
        body = (await self.body()).model_dump(mode="json")
        record = sign_record(
            self._key_pair,
            kind=KIND,
            seq=self._next_seq(),
            expires_at=math.ceil(time.time() + 2 * self._settings.cap_refresh_s),
            body=body,
        )
        stored = await self.dht.put(record_key(NAMESPACE, KIND, record.peer_id), record.raw)
        self.last_published = body
        log.debug("capability record published", extra={"seq": record.seq, "stored_at": stored})
        return stored

    async def fetch(self, peer_id: ID) -> PeerRecord | None:
        """Fetch ``peer_id``'s record from the network, verify it and record it in the peer table."""
        record = await self.dht.get(record_key(NAMESPACE, KIND, peer_id))
        if record is None:
            return None
        try:
            body = CapabilityBody.model_validate(record.body)
        except ValidationError as exc:
            reason = rejection_reason(exc)
            self._metrics.records_rejected.labels(kind=KIND, reason=reason).inc()
            log.info(f"{reason} capability record", extra={"peer_id": str(peer_id), "error": str(exc)[:200]})
            return None
        outcome = await self._store.record_capability(
            str(peer_id),
            body.model_dump(mode="json"),
            seq=record.seq,
            expires_at=float(record.expires_at),
            addrs=body.addrs,
        )
        if isinstance(outcome, Replay):
            self._metrics.records_rejected.labels(kind=KIND, reason="replay").inc()
            log.warning(
                "refused replayed capability record",
                extra={"peer_id": str(peer_id), "seq": record.seq, "held_seq": outcome.held_seq},
            )
            return None
        return await self._store.get_peer(str(peer_id))

    async def fetch_many(self, peer_ids: list[ID]) -> dict[ID, PeerRecord | None]:
        results: dict[ID, PeerRecord | None] = {}
        limiter = trio.CapacityLimiter(FETCH_CONCURRENCY)

        async def one(peer_id: ID) -> None:
            async with limiter:
                try:
                    results[peer_id] = await self.fetch(peer_id)
                except Exception:  # one peer's failure must not fail the search
                    log.exception("capability fetch failed", extra={"peer_id": str(peer_id)})
                    results[peer_id] = None

        async with trio.open_nursery() as nursery:
            for peer_id in peer_ids:
                nursery.start_soon(one, peer_id)
        return results

    async def known_peer_ids(self) -> list[ID]:
        """Peers worth asking about: connected ones and those with a live record or heartbeat."""
        now = time.time()
        ids = {str(p) for p in self._network.host.get_connected_peers()}
        ids.update(p.peer_id for p in await self._store.list_peers() if p.live(now))
        ids.discard(self._network.peer_id)
        return [ID.from_base58(p) for p in sorted(ids)]

    async def find(
        self, *, min_mem_gb: float | None = None, min_gflops: float | None = None, gpu: bool | None = None
    ) -> list[PeerRecord]:
        """Search the network: fetch every known peer's current record and filter on it."""
        fetched = await self.fetch_many(await self.known_peer_ids())
        found = []
        for record in fetched.values():
            body = None if record is None or record.capability is None else parse_body(record.capability)
            if record is None or body is None:  # a record stored before its figures were bounded
                continue
            if matches(body, min_mem_gb=min_mem_gb, min_gflops=min_gflops, gpu=gpu):
                found.append(record)
        return sorted(found, key=lambda r: r.peer_id)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publish_loop)
            nursery.start_soon(self._refresh_loop)
            nursery.start_soon(self._sweep_loop)
            task_status.started()

    async def _publish_loop(self) -> None:
        while True:
            stored = 0
            try:
                stored = await self.publish()
            except Exception:  # keep publishing on the next tick
                log.exception("publishing capability record failed")
            self._republish = trio.Event()
            # Until some peer holds the record (at start, nobody does), retry soon rather than
            # leaving it local-only for a whole refresh period.
            wait = (
                self._settings.cap_refresh_s
                if stored
                else min(EARLY_REPUBLISH_S, self._settings.cap_refresh_s)
            )
            with trio.move_on_after(wait):
                await self._republish.wait()

    async def _refresh_loop(self) -> None:
        """Re-verify connected peers' records once per refresh period, spread over the period.

        Only connected peers: refreshing every known peer would be O(N^2) lookups per period across
        the network; other peers are looked up on demand (find, show) and expire by themselves.
        """
        while True:
            peers = [p for p in self._network.host.get_connected_peers() if str(p) != self._network.peer_id]
            spacing = self._settings.cap_refresh_s / max(1, len(peers))
            await trio.sleep(random.uniform(0, spacing))  # noqa: S311 - jitter, not security
            for peer_id in peers:
                try:
                    await self.fetch(peer_id)
                except Exception:  # one peer's failure must not stop the others
                    log.exception("capability refresh failed", extra={"peer_id": str(peer_id)})
                await trio.sleep(spacing)
            if not peers:
                await trio.sleep(self._settings.cap_refresh_s)

    async def _sweep_loop(self) -> None:
        while True:
            expired = await self._store.expire_records(time.time())
            if expired:
                log.info("peer records expired", extra={"peers": expired})
            await trio.sleep(SWEEP_INTERVAL_S)
