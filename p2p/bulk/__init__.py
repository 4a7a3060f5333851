"""Bulk transfer: direct TCP channels between libp2p-authenticated peers.

py-libp2p streams (Noise + yamux) carry ~100-160 MB/s here, ~1/20 of a raw socket; model blocks
and activations need more. A channel's endpoint and secret are agreed over the authenticated
libp2p protocol ``/accel/bulk/2.0.0``; the bytes then flow on their own TCP connection, in frames
that all carry an AEAD tag: sealed (``encrypted``: private data such as activations) or
authenticated only (``plain``: public content, in the clear, whose blocks the receiver also verifies
against their CIDs). So a bad payload in a frame is evidence against the peer, and a frame that fails
authentication blames nobody. What a peer (or a remote IP, before the handshake) can hold is bounded.

Modules:
- ``errors``: this package's error taxonomy (:class:`BulkError` and subclasses).
- ``framing``: sans-IO frames (type, length, body), AES-256-GCM / ChaCha20-Poly1305 per direction.
- ``handshake``: sans-IO tickets, the libp2p request/response, the TCP proof (HMAC), key derivation.
- ``limits``: :class:`BulkLimits` (pending handshakes per IP, tickets and channels per peer, idle
  close; accounted in :class:`p2p.resources.ResourceManager`) and the throttled event reporter.
- ``dialer``: the client side of the handshake.
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
from p2p.bulk.limits import BulkLimits
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
    "BulkLimits",
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
