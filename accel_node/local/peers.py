"""The peers domain in process: the peer table, search, connecting, measurements."""

from __future__ import annotations

import time

from libp2p.peer.id import ID

from accel_node.capability import CapabilityService
from accel_node.core.schemas import Peer, Peers, Perf
from accel_node.errors import ConflictError, InvalidPeerIdError, NotFoundError, from_p2p
from accel_node.network import PeerNetwork
from accel_node.store import AsyncStore, PeerRecord
from p2p.errors import P2PError


def parse_peer_id(text: str) -> ID:
    try:
        return ID.from_base58(text)
    except Exception as exc:  # py-libp2p raises bare ValueError/KeyError for any bad text
        raise InvalidPeerIdError(f"invalid peer id {text[:80]!r}") from exc


def peer_view(network: PeerNetwork, record: PeerRecord | None, peer_id: ID) -> Peer:
    """Merge the stored peer table row with live connection state."""
    rtt = network.latency(peer_id)
    addrs = network.addrs_of(peer_id) or (record.addrs if record else [])
    has_cap = record is not None and record.capability is not None
    return Peer(
        peer_id=str(peer_id),
        addrs=addrs,
        connected=network.connected(peer_id),
        latency_ms=rtt[0] if rtt else (record.latency_ms if record else None),
        measured_at=rtt[1] if rtt else None,
        capability=record.capability if record else None,
        capability_seq=record.cap_seq if record and has_cap else None,
        capability_verified_at=record.cap_verified_at if record and has_cap else None,
        capability_expires_at=record.cap_expires_at if record and has_cap else None,
        last_heartbeat_at=record.hb_at if record else None,
        load=record.load if record else None,
        perf=record.perf if record else None,
        penalties=network.penalties.count(peer_id),
        excluded=network.penalties.excluded(peer_id),
        penalty_reason=network.penalties.state(peer_id).last_reason or None,
    )


class LocalPeers:
    def __init__(self, network: PeerNetwork, capability: CapabilityService, store: AsyncStore) -> None:
        self._network = network
        self._capability = capability
        self._store = store

    async def list(self) -> Peers:
        """Connected peers and peers whose signed records are still valid."""
        network = self._network
        now = time.time()
        records = {r.peer_id: r for r in await self._store.list_peers()}
        connected = {str(p): p for p in network.host.get_connected_peers()}
        listed = sorted(set(connected) | {p for p, r in records.items() if r.live(now)})
        return Peers(
            peers=[peer_view(network, records.get(p), connected.get(p) or ID.from_base58(p)) for p in listed]
        )

    async def find(
        self, *, min_mem_gb: float | None = None, min_gflops: float | None = None, gpu: bool | None = None
    ) -> Peers:
        found = await self._capability.find(min_mem_gb=min_mem_gb, min_gflops=min_gflops, gpu=gpu)
        return Peers(peers=[peer_view(self._network, r, ID.from_base58(r.peer_id)) for r in found])

    async def get(self, peer_id: str) -> Peer:
        """One peer, its capability record fetched fresh from the DHT and verified."""
        pid = parse_peer_id(peer_id)
        record = await self._capability.fetch(pid)
        if record is None:
            record = await self._store.get_peer(str(pid))
            if record is None and not self._network.connected(pid):
                raise NotFoundError(f"no capability record for {pid} on the network")
        return peer_view(self._network, record, pid)

    async def connect(self, addr: str) -> Peer:
        try:
            peer_id = await self._network.connect(addr)
        except P2PError as exc:
            raise from_p2p(exc) from exc
        return peer_view(self._network, await self._store.get_peer(str(peer_id)), peer_id)

    async def perf(self, peer_id: str, *, payload_bytes: int | None = None) -> Perf:
        pid = parse_peer_id(peer_id)
        if not self._network.connected(pid):
            raise ConflictError(f"not connected to {pid}")
        try:
            result = await self._network.measure_perf(pid, payload_bytes=payload_bytes)
        except P2PError as exc:
            raise from_p2p(exc) from exc
        return Perf(**vars(result))
