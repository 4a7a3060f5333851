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
- ``channel``: :class:`Channel`, the trio side of one established channel (send/receive frames).
- ``service``: :class:`BulkService`: grants tickets, accepts channels, runs handlers per purpose,
  opens channels to peers.
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
    "ChannelClosed",
    "Frame",
    "FrameAuthenticationError",
    "FrameDecoder",
    "FrameEncoder",
    "FrameError",
    "HandshakeError",
    "RefusedError",
    "serve_blocks",
]
