"""Errors raised by ``p2p.bitswap``; both derive from :class:`p2p.errors.P2PError`."""

from __future__ import annotations

from p2p.errors import P2PError


class BitswapError(P2PError):
    """Base class of every error raised by ``p2p.bitswap``."""


class ProtocolError(BitswapError, ValueError):
    """A peer sent something that is not valid Bitswap."""


class FetchError(BitswapError):
    """Some blocks could not be fetched from any provider."""
