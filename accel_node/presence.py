"""Liveness over GossipSub: small signed heartbeats on ``/accel/presence/1``.

Every ``[p2p] presence_interval_s`` a node publishes a :mod:`p2p.records` record of kind
``presence`` (its load and addresses), valid for three intervals. Receivers verify it (signature,
signer = the pubsub author, expiry, size), refuse ones not newer than the last seen from that peer,
and merge it into the peer table; the addresses let them reach peers they only heard about. Gossip
may drop messages (see :mod:`p2p.pubsub`): three intervals of validity tolerate a lost heartbeat.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import trio
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from trio_typing import TaskStatus

from accel_node.capability import Load, current_load
from accel_node.config import P2PSection
from accel_node.metrics import NodeMetrics
from accel_node.network import PeerNetwork
from accel_node.store import AsyncStore, Replay
from p2p.addrs import parse_peer_addr
from p2p.errors import InvalidAddressError, RecordError
from p2p.pubsub import MAX_MESSAGE_BYTES, PubSub, messages
from p2p.records import decode_record, sign_record

log = logging.getLogger(__name__)

TOPIC = "/accel/presence/1"
KIND = "presence"
ADDR_TTL_S = 600
MAX_LIFETIME_S = 3 * 3600  # a heartbeat is valid for 3 intervals; [p2p] presence_interval_s <= 1 h


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=True)
    load: Load
    addrs: list[str] = Field(default_factory=list, max_length=32)


class PresenceService:
    """Publishes this node's heartbeats and records those of its peers."""

    def __init__(
        self,
        *,
        key_pair: KeyPair,
        pubsub: PubSub,
        store: AsyncStore,
        network: PeerNetwork,
        settings: P2PSection,
        metrics: NodeMetrics,
        queue_depth: Callable[[], int] | None = None,
    ) -> None:
        self._key_pair = key_pair
        self._pubsub = pubsub
        self._store = store
        self._network = network
        self._settings = settings
        self._metrics = metrics
        self._seq = int(time.time() * 1000)
        self.queue_depth: Callable[[], int] = queue_depth or (lambda: 0)  # requests waiting for inference

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        subscription = await self._pubsub.subscribe(TOPIC)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publish_loop)
            nursery.start_soon(self._receive_loop, subscription)
            task_status.started()

    def heartbeat(self) -> bytes:
        self._seq = max(self._seq + 1, int(time.time() * 1000))
        body = Heartbeat(load=current_load(self.queue_depth()), addrs=self._network.own_addrs()[:32])
        record = sign_record(
            self._key_pair,
            kind=KIND,
            seq=self._seq,
            expires_at=math.ceil(time.time() + 3 * self._settings.presence_interval_s),
            body=body.model_dump(mode="json"),
        )
        return record.raw

    async def _publish_loop(self) -> None:
        while True:
            try:
                await self._pubsub.publish(TOPIC, self.heartbeat())
            except Exception:  # gossip is best effort; try again next interval
                log.exception("publishing heartbeat failed")
            await trio.sleep(self._settings.presence_interval_s)

    async def _receive_loop(self, subscription: object) -> None:
        own = self._network.host.get_id()
        async for author, data in messages(subscription):  # type: ignore[arg-type]
            if author == own:
                continue
            try:
                await self.accept(author, data)
            except Exception:  # one bad message must not stop the loop
                log.exception("handling heartbeat failed")

    async def accept(self, author: ID, data: bytes) -> bool:
        """Verify a heartbeat received from ``author`` and merge it into the peer table."""
        try:
            record = decode_record(
                data, expect_kind=KIND, max_bytes=MAX_MESSAGE_BYTES, max_lifetime_s=MAX_LIFETIME_S
            )
            if record.peer_id != author:
                raise RecordError("heartbeat signed by a peer other than its gossip author")
            heartbeat = Heartbeat.model_validate(record.body)
        except (RecordError, ValidationError) as exc:
            self._metrics.records_rejected.labels(kind=KIND, reason="invalid").inc()
            log.debug("refused heartbeat", extra={"error": str(exc)[:200]})
            return False
        addrs = []
        for text in heartbeat.addrs:
            try:
                peer_id, addr = parse_peer_addr(text)
            except InvalidAddressError:
                continue
            if peer_id == record.peer_id:
                addrs.append(addr)
        outcome = await self._store.record_heartbeat(
            str(record.peer_id),
            seq=record.seq,
            expires_at=float(record.expires_at),
            load=heartbeat.load.model_dump(mode="json"),
            addrs=[f"{a}/p2p/{record.peer_id}" for a in addrs],
        )
        if isinstance(outcome, Replay):
            self._metrics.records_rejected.labels(kind=KIND, reason="replay").inc()
            return False
        if addrs:
            self._network.host.get_peerstore().add_addrs(record.peer_id, addrs, ADDR_TTL_S)
        return True
