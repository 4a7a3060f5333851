"""The node's view of the libp2p network: dialing, bootstrap peers, latency and the peer table.

The libp2p host itself is built and run by ``p2p.host``; this service adds what the node needs on
top of it: keeping bootstrap peers connected, measuring round-trip times, and recording every peer
it meets in the store, and the penalty box of peers caught sending bad data (persisted in the peer
table, so a restart does not forgive them).
"""

from __future__ import annotations

import logging
import time

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr
from trio_typing import TaskStatus

from accel_node.config import P2PSection
from accel_node.metrics import NodeMetrics
from accel_node.store import AsyncStore
from p2p.addrs import parse_peer_addr
from p2p.errors import DialError, PingError
from p2p.events import PENALISED, EventSink, SecurityEvent, drop
from p2p.host import dial, listening_addrs
from p2p.penalties import PeerPenalty, PenaltyBox
from p2p.perf import PERF_PROTOCOL, PerfResult, handle_perf_stream, measure_peer
from p2p.ping import Pinger

log = logging.getLogger(__name__)

PING_TICK_S = 1.0
OWN_ADDRS_TTL_S = 10.0  # how often the ping loop looks for peers that are due (new peers wait at most this)


def full_addr(addr: Multiaddr, peer_id: ID) -> str:
    """``addr`` as a dialable string ending in ``/p2p/<peer_id>``."""
    text = str(addr)
    suffix = f"/p2p/{peer_id}"
    return text if text.endswith(suffix) else text + suffix


class PeerNetwork:
    """Keeps the node connected and measured; started with ``nursery.start(network.run)``."""

    def __init__(
        self,
        host: IHost,
        store: AsyncStore,
        settings: P2PSection,
        metrics: NodeMetrics,
        *,
        events: EventSink = drop,
    ) -> None:
        self.host = host
        self._events = events
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._pinger = Pinger(host)
        self._rtt: dict[ID, tuple[float, float]] = {}  # peer -> (latency ms, unix time measured)
        metrics.track_peers(lambda: len(self.host.get_connected_peers()))
        host.set_stream_handler(PERF_PROTOCOL, handle_perf_stream)
        self._perf_lock = trio.Lock()
        self._own_addrs: tuple[float, list[str]] | None = None
        self.penalties = PenaltyBox(listener=self._on_penalty)
        # Penalties are given from synchronous protocol code; a task persists them in order.
        self._penalty_send, self._penalty_receive = trio.open_memory_channel[tuple[str, PeerPenalty]](1024)

    @property
    def peer_id(self) -> str:
        return str(self.host.get_id())

    def own_addrs(self) -> list[str]:
        """This node's dialable addresses. Expanding a wildcard listen address enumerates the
        network interfaces, which is too slow for every status request: cached for a few seconds."""
        now = time.monotonic()
        if self._own_addrs is None or now - self._own_addrs[0] > OWN_ADDRS_TTL_S:
            addrs = [full_addr(a, self.host.get_id()) for a in listening_addrs(self.host)]
            self._own_addrs = (now, addrs)
        return list(self._own_addrs[1])

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._restore_penalties()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._persist_penalties)
            nursery.start_soon(self._ping_loop)
            for addr in self._settings.bootstrap:
                nursery.start_soon(self._keep_connected, addr)
            if self._settings.perf_interval_s > 0:
                nursery.start_soon(self._perf_loop)
            task_status.started()

    def _on_penalty(self, peer: ID, reason: str, state: PeerPenalty) -> None:
        self._metrics.peer_penalties.labels(reason=reason).inc()
        excluded = state.count >= self.penalties.limit
        details = {"count": state.count, "excluded": excluded}
        self._events(SecurityEvent(PENALISED, "penalties", str(peer), reason, details))
        if state.count == self.penalties.limit:
            self._metrics.peer_exclusions.inc()
            log.warning("peer excluded after penalties", extra={"peer_id": str(peer), "reason": reason})
        try:
            self._penalty_send.send_nowait((str(peer), state))
        except trio.WouldBlock:  # a flood of penalties: the in-memory box still holds them all
            log.warning("penalty not persisted (queue full)", extra={"peer_id": str(peer)})

    async def _persist_penalties(self) -> None:
        async for peer_id, state in self._penalty_receive:
            await self._store.record_penalty(
                peer_id,
                count=state.count,
                at=state.last_at,
                exclusions=state.exclusions,
                reason=state.last_reason,
            )

    async def _restore_penalties(self) -> None:
        for record in await self._store.list_peers():
            if record.penalised_at is not None:
                self.penalties.restore(
                    ID.from_base58(record.peer_id),
                    PeerPenalty(
                        record.penalties, record.penalised_at, record.penalty_exclusions,
                        record.penalty_reason or "",
                    ),
                )  # fmt: skip

    async def connect(self, addr_text: str, *, source: str = "dial") -> ID:
        """Dial ``addr_text`` (``.../p2p/<peer-id>``), measure its latency and record it."""
        peer_id, addr = parse_peer_addr(addr_text)
        return await self._connect(peer_id, addr, source=source)

    async def connect_discovered(self, info: PeerInfo) -> None:
        """Dial a peer found on the LAN, trying its addresses in turn."""
        for addr in info.addrs:
            try:
                await self._connect(info.peer_id, addr, source="mdns")
                return
            except DialError:
                continue

    async def _connect(self, peer_id: ID, addr: Multiaddr, *, source: str) -> ID:
        try:
            await dial(self.host, peer_id, addr, timeout_s=self._settings.dial_timeout_s)
        except DialError:
            self._metrics.dials.labels(result="failed").inc()
            raise
        self._metrics.dials.labels(result="ok").inc()
        log.info(
            "connected to peer",
            extra={"peer_id": str(peer_id), "addr": str(addr), "source": source},
        )
        await self._measure(peer_id)
        await self._record(peer_id, source=source)
        return peer_id

    async def measure_perf(self, peer_id: ID, *, payload_bytes: int | None = None) -> PerfResult:
        """Round-trip time and throughput to a connected peer over /accel/perf/1.0.0; stored."""
        async with self._perf_lock:  # one measurement at a time, so they do not skew each other
            result = await measure_peer(
                self.host, peer_id, payload_bytes=payload_bytes or self._settings.perf_payload_bytes
            )
        await self._store.record_perf(
            str(peer_id),
            {
                "rtt_ms": result.rtt_ms,
                "upload_mbps": result.upload_mbps,
                "download_mbps": result.download_mbps,
                "payload_bytes": result.payload_bytes,
                "measured_at": result.measured_at,
            },
        )
        return result

    async def _perf_loop(self) -> None:
        """Measure each connected peer once per ``perf_interval_s``, spread over the interval."""
        while True:
            peers = list(self.host.get_connected_peers())
            pause = self._settings.perf_interval_s / max(1, len(peers))
            for peer_id in peers:
                await trio.sleep(pause)
                if peer_id in self.host.get_connected_peers():
                    try:
                        await self.measure_perf(peer_id)
                    except Exception as exc:  # a peer without the protocol or gone: try later
                        log.debug(
                            "perf measurement failed", extra={"peer_id": str(peer_id), "error": str(exc)}
                        )
            if not peers:
                await trio.sleep(self._settings.perf_interval_s)

    def connected(self, peer_id: ID) -> bool:
        return peer_id in self.host.get_connected_peers()

    def latency(self, peer_id: ID) -> tuple[float, float] | None:
        """(latency ms, unix time measured) of the last ping to ``peer_id``."""
        return self._rtt.get(peer_id)

    def addrs_of(self, peer_id: ID) -> list[str]:
        try:
            addrs = self.host.get_peerstore().addrs(peer_id)
        except Exception:  # py-libp2p raises PeerStoreError for peers without addresses
            addrs = []
        return sorted({full_addr(a, peer_id) for a in addrs})

    async def _record(self, peer_id: ID, *, source: str) -> None:
        rtt = self._rtt.get(peer_id)
        await self._store.upsert_peer(
            str(peer_id), self.addrs_of(peer_id), source=source, latency_ms=rtt[0] if rtt else None
        )

    async def _measure(self, peer_id: ID) -> None:
        try:
            rtt_ms = await self._pinger.rtt_ms(peer_id, timeout_s=self._settings.dial_timeout_s)
        except PingError as exc:
            log.debug("ping failed", extra={"peer_id": str(peer_id), "error": str(exc)})
            return
        self._rtt[peer_id] = (rtt_ms, time.time())
        self._metrics.ping_rtt.observe(rtt_ms / 1000.0)

    async def _ping_loop(self) -> None:
        """Measure every connected peer once per ``ping_interval_s``; new peers within a second."""
        while True:
            now = time.time()
            connected = set(self.host.get_connected_peers())
            for gone in [p for p in self._rtt if p not in connected]:
                del self._rtt[gone]
                await self._pinger.forget(gone)
            due = [
                p
                for p in connected
                if p not in self._rtt or now - self._rtt[p][1] >= self._settings.ping_interval_s
            ]
            if due:
                async with trio.open_nursery() as nursery:
                    for peer_id in due:
                        nursery.start_soon(self._measure_and_record, peer_id)
            await trio.sleep(PING_TICK_S)

    async def _measure_and_record(self, peer_id: ID) -> None:
        try:
            await self._measure(peer_id)
            # The store keeps the source of a peer's first record; dialled peers are recorded
            # by connect() before the loop sees them, so a first record here is an inbound peer.
            await self._record(peer_id, source="inbound")
        except Exception:  # a failure for one peer must not stop measuring the others
            log.exception("measuring peer failed", extra={"peer_id": str(peer_id)})

    async def _keep_connected(self, addr_text: str) -> None:
        """Keep a bootstrap peer connected, redialling with exponential backoff."""
        peer_id, _ = parse_peer_addr(addr_text)
        delay = 1.0
        while True:
            if peer_id in self.host.get_connected_peers():
                delay = 1.0
                await trio.sleep(2.0)
                continue
            try:
                await self.connect(addr_text, source="bootstrap")
                delay = 1.0
            except DialError as exc:
                log.warning(
                    "bootstrap peer unreachable",
                    extra={"addr": addr_text, "error": str(exc), "retry_s": delay},
                )
                await trio.sleep(delay)
                delay = min(delay * 2, self._settings.bootstrap_retry_s)
