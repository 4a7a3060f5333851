"""Routes about peers: the peer table, search, connecting, records and network measurements."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from libp2p.peer.id import ID

from accel_node.api import schemas
from accel_node.api.context import ApiContext
from accel_node.network import PeerNetwork
from accel_node.store import PeerRecord
from p2p.perf import PerfError


def _peer_id(text: str) -> ID:
    try:
        return ID.from_base58(text)
    except Exception as exc:
        raise HTTPException(400, f"invalid peer id {text[:80]!r}") from exc


def peer_view(network: PeerNetwork, record: PeerRecord | None, peer_id: ID) -> schemas.Peer:
    """Merge the stored peer table row with live connection state."""
    rtt = network.latency(peer_id)
    addrs = network.addrs_of(peer_id) or (record.addrs if record else [])
    return schemas.Peer(
        peer_id=str(peer_id),
        addrs=addrs,
        connected=network.connected(peer_id),
        latency_ms=rtt[0] if rtt else (record.latency_ms if record else None),
        measured_at=rtt[1] if rtt else None,
        capability=record.capability if record else None,
        capability_seq=record.cap_seq if record and record.capability else None,
        capability_verified_at=record.cap_verified_at if record and record.capability else None,
        capability_expires_at=record.cap_expires_at if record and record.capability else None,
        last_heartbeat_at=record.hb_at if record else None,
        load=record.load if record else None,
        perf=record.perf if record else None,
        penalties=network.penalties.count(peer_id),
        excluded=network.penalties.excluded(peer_id),
        penalty_reason=network.penalties.state(peer_id).last_reason or None,
    )


def peer_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter()
    network = ctx.network

    @router.get("/v1/peers", response_model=schemas.Peers, tags=["peers"])
    async def peers() -> schemas.Peers:
        """The peer table: connected peers and peers whose signed records are still valid, with
        latency, capability (and when it was last verified), load and network measurements."""
        now = time.time()
        records = {r.peer_id: r for r in await ctx.store.list_peers()}
        connected = {str(p): p for p in network.host.get_connected_peers()}
        listed = sorted(set(connected) | {p for p, r in records.items() if r.live(now)})
        return schemas.Peers(
            peers=[peer_view(network, records.get(p), connected.get(p) or ID.from_base58(p)) for p in listed]
        )

    @router.get("/v1/peers/find", response_model=schemas.Peers, tags=["peers"])
    async def find_peers(
        min_mem_gb: Annotated[float | None, Query(ge=0, description="Minimum free memory (GB)")] = None,
        min_gflops: Annotated[float | None, Query(ge=0, description="Minimum measured peak GFLOP/s")] = None,
        gpu: Annotated[bool | None, Query(description="true: needs a GPU; false: has none")] = None,
    ) -> schemas.Peers:
        """Search the network: fetch every known peer's capability record from the DHT, verify it
        and return the peers that match."""
        found = await ctx.capability.find(min_mem_gb=min_mem_gb, min_gflops=min_gflops, gpu=gpu)
        return schemas.Peers(peers=[peer_view(network, r, ID.from_base58(r.peer_id)) for r in found])

    @router.post(
        "/v1/peers/connect",
        response_model=schemas.Peer,
        tags=["peers"],
        responses={400: {"model": schemas.ErrorBody}, 502: {"model": schemas.ErrorBody}},
    )
    async def connect(body: schemas.ConnectRequest) -> schemas.Peer:
        """Connect to a peer by multiaddr (``/ip4/<addr>/tcp/<port>/p2p/<peer-id>``)."""
        peer_id = await network.connect(body.addr)
        return peer_view(network, await ctx.store.get_peer(str(peer_id)), peer_id)

    @router.get("/v1/peers/{peer_id}", response_model=schemas.Peer, tags=["peers"])
    async def peer(peer_id: str) -> schemas.Peer:
        """One peer, with its capability record fetched fresh from the DHT and verified."""
        pid = _peer_id(peer_id)
        record = await ctx.capability.fetch(pid)
        if record is None:
            record = await ctx.store.get_peer(peer_id)
            if record is None and not network.connected(pid):
                raise HTTPException(404, f"no capability record for {peer_id} on the network")
        return peer_view(network, record, pid)

    @router.post("/v1/peers/{peer_id}/perf", response_model=schemas.Perf, tags=["peers"])
    async def perf(
        peer_id: str,
        payload_bytes: Annotated[int | None, Query(ge=64 * 1024, le=256 * 1024 * 1024)] = None,
    ) -> schemas.Perf:
        """Measure round-trip time and throughput to a connected peer over /accel/perf/1.0.0."""
        pid = _peer_id(peer_id)
        if not network.connected(pid):
            raise HTTPException(409, f"not connected to {peer_id}")
        try:
            result = await network.measure_perf(pid, payload_bytes=payload_bytes)
        except PerfError as exc:
            raise HTTPException(502, str(exc)) from exc
        return schemas.Perf(**vars(result))

    return router
