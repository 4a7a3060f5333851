"""LAN discovery with py-libp2p's mDNS, started so that it does not stall the event loop.

Letting ``new_host(enable_mDNS=True)`` start it blocks the trio loop for ~1.7 s (zeroconf's
start-up and service registration are synchronous), and it only adds discovered peers to the
peerstore. Here the blocking parts run on a worker thread, and each discovered peer is handed to
``on_peer`` on the trio loop (typically: dial it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import IHost
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.discovery.mdns.mdns import create_mdns_discovery
from libp2p.peer.peerinfo import PeerInfo
from trio_typing import TaskStatus

log = logging.getLogger(__name__)


async def run_mdns(
    host: IHost,
    on_peer: Callable[[PeerInfo], Awaitable[None]],
    *,
    task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Advertise ``host`` on the LAN and call ``on_peer`` for every peer found, until cancelled."""
    token = trio.lowlevel.current_trio_token()
    send, receive = trio.open_memory_channel[PeerInfo](64)

    def discovered(info: PeerInfo) -> None:
        # Called on zeroconf's thread: hand over to the trio loop, dropping when it is busy.
        with contextlib.suppress(trio.WouldBlock, trio.RunFinishedError, RuntimeError):
            trio.from_thread.run_sync(send.send_nowait, info, trio_token=token)

    peerDiscovery.register_peer_discovered_handler(discovered)
    discovery = None
    try:
        discovery = await trio.to_thread.run_sync(
            lambda: create_mdns_discovery(host.get_network(), host=host)
        )
        await trio.to_thread.run_sync(discovery.broadcaster.register)
        log.info("mDNS discovery started")
        task_status.started()
        async with receive:
            async for info in receive:
                if info.peer_id != host.get_id() and info.peer_id not in host.get_connected_peers():
                    try:
                        await on_peer(info)
                    except Exception as exc:  # a peer that cannot be reached is not our failure
                        log.debug(
                            "mDNS peer not reachable", extra={"peer_id": str(info.peer_id), "error": str(exc)}
                        )
    finally:
        peerDiscovery.unregister_peer_discovered_handler(discovered)
        if discovery is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await trio.to_thread.run_sync(discovery.stop)
