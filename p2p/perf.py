"""``/accel/perf/1.0.0``: round-trip time and throughput between two peers.

One stream carries a sequence of requests, each a 9-byte header (op: u8, length: u64 big-endian):

- ``ECHO``     (length <= 64): the client sends ``length`` bytes, the server echoes them.
- ``UPLOAD``   the client sends ``length`` bytes; the server answers the u64 count it received.
- ``DOWNLOAD`` the server sends ``length`` bytes.

Lengths are bounded (:data:`MAX_TRANSFER_BYTES`); an unknown op or an oversize length resets the
stream. Throughput is measured over the real libp2p stream (Noise + yamux), which is what other
node traffic on libp2p streams gets.
"""

from __future__ import annotations

import logging
import statistics
import struct
import time
from dataclasses import dataclass

from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2p.errors import PerfError

log = logging.getLogger(__name__)

PERF_PROTOCOL = TProtocol("/accel/perf/1.0.0")
HEADER = struct.Struct(">BQ")
OP_ECHO, OP_UPLOAD, OP_DOWNLOAD = 1, 2, 3
MAX_ECHO_BYTES = 64
MAX_TRANSFER_BYTES = 256 * 1024 * 1024
CHUNK = 64 * 1024
_ZEROS = bytes(CHUNK)


@dataclass(frozen=True)
class PerfResult:
    peer_id: str
    rtt_ms: float
    upload_mbps: float
    download_mbps: float
    payload_bytes: int
    measured_at: float


async def _read_exactly(stream: INetStream, n: int) -> bytes:
    parts: list[bytes] = []
    remaining = n
    while remaining:
        chunk = await stream.read(min(remaining, CHUNK))
        if not chunk:
            raise PerfError(f"stream closed with {remaining} of {n} bytes outstanding")
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


async def _discard_exactly(stream: INetStream, n: int) -> int:
    remaining = n
    while remaining:
        chunk = await stream.read(min(remaining, CHUNK))
        if not chunk:
            break
        remaining -= len(chunk)
    return n - remaining


async def _send_zeros(stream: INetStream, n: int) -> None:
    remaining = n
    while remaining:
        size = min(remaining, CHUNK)
        await stream.write(_ZEROS if size == CHUNK else _ZEROS[:size])
        remaining -= size


async def handle_perf_stream(stream: INetStream) -> None:
    """Server side: answer requests until the client closes the stream."""
    try:
        while True:
            header = await stream.read(HEADER.size)
            if not header:
                return
            if len(header) < HEADER.size:
                header += await _read_exactly(stream, HEADER.size - len(header))
            op, length = HEADER.unpack(header)
            if op == OP_ECHO and length <= MAX_ECHO_BYTES:
                await stream.write(await _read_exactly(stream, length))
            elif op == OP_UPLOAD and length <= MAX_TRANSFER_BYTES:
                await stream.write(struct.pack(">Q", await _discard_exactly(stream, length)))
            elif op == OP_DOWNLOAD and length <= MAX_TRANSFER_BYTES:
                await _send_zeros(stream, length)
            else:
                raise PerfError(f"bad perf request op={op} length={length}")
    except Exception as exc:  # a broken or misbehaving client: reset and move on
        log.debug("perf stream ended", extra={"error": str(exc)})
        await stream.reset()
    else:
        await stream.close()


async def measure_peer(
    host: IHost, peer_id: ID, *, payload_bytes: int = 8 * 1024 * 1024, pings: int = 5
) -> PerfResult:
    """Median RTT of ``pings`` echoes, then upload and download throughput of ``payload_bytes``."""
    if not 0 < payload_bytes <= MAX_TRANSFER_BYTES:
        raise PerfError(f"payload must be 1..{MAX_TRANSFER_BYTES} bytes")
    try:
        stream = await host.new_stream(peer_id, [PERF_PROTOCOL])
    except Exception as exc:
        raise PerfError(f"cannot open a perf stream to {peer_id}: {exc}") from exc
    try:
        rtts = []
        probe = b"\x5a" * 32
        for _ in range(max(1, pings)):
            start = time.perf_counter()
            await stream.write(HEADER.pack(OP_ECHO, len(probe)) + probe)
            if await _read_exactly(stream, len(probe)) != probe:
                raise PerfError("peer echoed different bytes")
            rtts.append((time.perf_counter() - start) * 1000.0)

        start = time.perf_counter()
        await stream.write(HEADER.pack(OP_UPLOAD, payload_bytes))
        await _send_zeros(stream, payload_bytes)
        (received,) = struct.unpack(">Q", await _read_exactly(stream, 8))
        upload_s = time.perf_counter() - start
        if received != payload_bytes:
            raise PerfError(f"peer received {received} of {payload_bytes} bytes")

        start = time.perf_counter()
        await stream.write(HEADER.pack(OP_DOWNLOAD, payload_bytes))
        if await _discard_exactly(stream, payload_bytes) != payload_bytes:
            raise PerfError("download ended early")
        download_s = time.perf_counter() - start
        await stream.close()
    except PerfError:
        await stream.reset()
        raise
    except Exception as exc:
        await stream.reset()
        raise PerfError(f"perf measurement to {peer_id} failed: {exc or type(exc).__name__}") from exc
    return PerfResult(
        peer_id=str(peer_id),
        rtt_ms=statistics.median(rtts),
        upload_mbps=payload_bytes / upload_s / 1e6,
        download_mbps=payload_bytes / download_s / 1e6,
        payload_bytes=payload_bytes,
        measured_at=time.time(),
    )
