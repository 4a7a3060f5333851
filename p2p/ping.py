"""Round-trip time measurement over the standard libp2p ping protocol (``/ipfs/ping/1.0.0``).

py-libp2p's own ``PingService`` reports whole milliseconds, too coarse on a LAN; this client times
each echo with ``time.perf_counter`` and keeps one stream per peer open between measurements
(opening a yamux stream costs a few milliseconds, more than a loopback round trip).
"""

from __future__ import annotations

import contextlib
import secrets
import time

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2p.errors import PingError

PING_PROTOCOL = TProtocol("/ipfs/ping/1.0.0")
PING_LENGTH = 32


class Pinger:
    """Measures round-trip times to connected peers, reusing one ping stream per peer."""

    def __init__(self, host: IHost) -> None:
        self._host = host
        self._streams: dict[ID, INetStream] = {}
        self._locks: dict[ID, trio.Lock] = {}

    async def rtt_ms(self, peer_id: ID, *, timeout_s: float = 5.0) -> float:
        """One round trip to ``peer_id`` in milliseconds."""
        lock = self._locks.setdefault(peer_id, trio.Lock())
        async with lock:
            with trio.move_on_after(timeout_s) as scope:
                try:
                    return await self._round_trip(peer_id)
                except PingError:
                    await self._drop(peer_id)
                    raise
                except Exception as exc:  # stream errors of many kinds from py-libp2p
                    await self._drop(peer_id)
                    raise PingError(f"ping to {peer_id} failed: {exc or type(exc).__name__}") from exc
            if scope.cancelled_caught:
                await self._drop(peer_id)
            raise PingError(f"ping to {peer_id} timed out after {timeout_s:g} s")

    async def _round_trip(self, peer_id: ID) -> float:
        stream = self._streams.get(peer_id)
        if stream is None:
            stream = await self._host.new_stream(peer_id, [PING_PROTOCOL])
            self._streams[peer_id] = stream
        payload = secrets.token_bytes(PING_LENGTH)
        start = time.perf_counter()
        await stream.write(payload)
        echoed = b""
        while len(echoed) < PING_LENGTH:
            chunk = await stream.read(PING_LENGTH - len(echoed))
            if not chunk:
                raise PingError(f"peer {peer_id} closed the ping stream")
            echoed += chunk
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        if echoed != payload:
            raise PingError(f"peer {peer_id} echoed a different ping payload")
        return elapsed_ms

    async def _drop(self, peer_id: ID) -> None:
        stream = self._streams.pop(peer_id, None)
        if stream is not None:
            # The stream is already broken; a failing reset has nothing left to report.
            with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
                await stream.reset()

    async def forget(self, peer_id: ID) -> None:
        """Close the ping stream of a peer that went away."""
        await self._drop(peer_id)
        self._locks.pop(peer_id, None)
