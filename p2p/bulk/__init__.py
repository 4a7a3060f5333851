"""Bulk transfer: direct TCP channels between libp2p-authenticated peers.

py-libp2p streams (Noise + yamux) carry ~100-160 MB/s here, ~1/20 of a raw socket; model blocks
and activations need more. A channel's endpoint and secret are agreed over the authenticated
libp2p protocol ``/accel/bulk/1.0.0``; the bytes then flow on their own TCP connection, in frames
that are either AEAD-sealed (``encrypted``: private data such as activations) or bare (``plain``:
public content whose blocks the receiver verifies against their CIDs).

Modules:
- ``errors``: this package's error taxonomy (:class:`BulkError` and subclasses).
- ``framing``: sans-IO frames (type, length, body), AES-256-GCM / ChaCha20-Poly1305 per direction.
- ``handshake``: sans-IO tickets, the libp2p request/response, the TCP proof (HMAC), key derivation.
- ``seam``: the interfaces protocol code depends on: :class:`FrameChannel`, :class:`ChannelOpener`,
  :class:`ChannelAcceptor`, :class:`ChannelTransport`.
- ``channel``: :class:`Channel`, the trio side of one established channel (send/receive frames) over
  a TCP socket or any trio stream.
- ``handlers``: the handler table shared by the TCP and the in-memory transports.
- ``endpoints``: exact reads, length-prefixed control messages, which IPs to listen on.
- ``service``: :class:`BulkService`: grants tickets, accepts channels, runs handlers per purpose,
  opens channels to peers (and in memory to itself).
- ``memory``: in-memory streams and channels with the real framing, :class:`MemoryNetwork` and
  :class:`MemoryTransport` (tests, and channels to the node itself).
- ``blocks``: content blocks over bulk channels (``blocks/1``): the protocol, :func:`serve_blocks`.
- ``fetch``: :class:`BlockFetcher` (parallel providers, verification overlapped with receiving).
"""

from p2p.bulk.blocks import BLOCKS_PURPOSE, BlockServer, serve_blocks
from p2p.bulk.channel import DATA, Channel
from p2p.bulk.errors import (
    BlocksNotFoundError,
    BulkError,
    ChannelClosed,
    FrameAuthenticationError,
    FrameError,
    HandshakeError,
    RefusedError,
)
from p2p.bulk.fetch import BlockFetcher
from p2p.bulk.framing import CIPHERS, DEFAULT_MAX_PAYLOAD, Frame, FrameDecoder, FrameEncoder
from p2p.bulk.memory import MemoryNetwork, MemoryTransport, memory_channel_pair, memory_stream_pair
from p2p.bulk.seam import ChannelAcceptor, ChannelOpener, ChannelTransport, FrameChannel, Handler
from p2p.bulk.service import PROTOCOL_ID, BulkService

__all__ = [
    "BLOCKS_PURPOSE",
    "CIPHERS",
    "DATA",
    "DEFAULT_MAX_PAYLOAD",
    "PROTOCOL_ID",
    "BlockFetcher",
    "BlockServer",
    "BlocksNotFoundError",
    "BulkError",
    "BulkService",
    "Channel",
    "ChannelAcceptor",
    "ChannelClosed",
    "ChannelOpener",
    "ChannelTransport",
    "Frame",
    "FrameAuthenticationError",
    "FrameChannel",
    "FrameDecoder",
    "FrameEncoder",
    "FrameError",
    "Handler",
    "HandshakeError",
    "MemoryNetwork",
    "MemoryTransport",
    "RefusedError",
    "memory_channel_pair",
    "memory_stream_pair",
    "serve_blocks",
]
