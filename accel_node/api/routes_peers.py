"""Routes about peers: the peer table, search, connecting, records and network measurements."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from accel_node.api.context import ApiContext
from accel_node.api.routing import route
from accel_node.core import endpoints as E
from accel_node.core.schemas import ConnectRequest, Peer, Peers, Perf


def peer_routes(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["peers"])
    peers = ctx.core.peers

    @route(router, E.PEERS, response_model=Peers)
    async def listing() -> Peers:
        """The peer table: connected peers and peers whose signed records are still valid, with
        latency, capability (and when it was last verified), load and network measurements."""
        return await peers.list()

    @route(router, E.PEERS_FIND, response_model=Peers)
    async def find(
        min_mem_gb: Annotated[float | None, Query(ge=0, description="Minimum free memory (GB)")] = None,
        min_gflops: Annotated[float | None, Query(ge=0, description="Minimum measured peak GFLOP/s")] = None,
        gpu: Annotated[bool | None, Query(description="true: needs a GPU; false: has none")] = None,
    ) -> Peers:
        """Search the network: fetch every known peer's capability record from the DHT, verify it
        and return the peers that match."""
        return await peers.find(min_mem_gb=min_mem_gb, min_gflops=min_gflops, gpu=gpu)

    @route(router, E.PEERS_CONNECT, response_model=Peer)
    async def connect(body: ConnectRequest) -> Peer:
        """Connect to a peer by multiaddr (``/ip4/<addr>/tcp/<port>/p2p/<peer-id>``); 400 for a bad
        address, 502 when the peer cannot be reached."""
        return await peers.connect(body.addr)

    @route(router, E.PEER, response_model=Peer)
    async def peer(peer_id: str) -> Peer:
        """One peer, with its capability record fetched fresh from the DHT and verified."""
        return await peers.get(peer_id)

    @route(router, E.PEER_PERF, response_model=Perf)
    async def perf(
        peer_id: str,
        payload_bytes: Annotated[int | None, Query(ge=64 * 1024, le=256 * 1024 * 1024)] = None,
    ) -> Perf:
        """Measure round-trip time and throughput to a connected peer over /accel/perf/1.0.0."""
        return await peers.perf(peer_id, payload_bytes=payload_bytes)

    return router
