"""Errors raised by ``p2p.bulk``.

Every error subclasses :class:`BulkError` (itself a :class:`p2p.errors.P2PError`), so callers can
catch the package with one clause. Errors caused by what a peer sent (malformed, oversize,
tampered frames; bad handshakes) are :class:`FrameError` or :class:`HandshakeError`.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2p.content.cid import CID
from p2p.errors import P2PError


class BulkError(P2PError):
    """Base class of every error raised by ``p2p.bulk``."""


class FrameError(BulkError, ValueError):
    """A frame is malformed, oversize, truncated or of a type the receiver does not accept."""


class FrameAuthenticationError(FrameError):
    """An encrypted frame failed authentication: tampered, replayed, reordered or wrongly keyed."""


class ChannelClosed(BulkError):
    """The peer closed the channel cleanly, at a frame boundary."""


class HandshakeError(BulkError):
    """Agreeing on a channel failed: refused ticket, bad MAC, timeout, unreachable endpoint."""


class RefusedError(HandshakeError):
    """The peer refused the channel request (no handler for the purpose, mode not allowed, busy)."""


class BlocksNotFoundError(BulkError, LookupError):
    """Some blocks could not be fetched from any provider; ``missing`` lists them (in request order).

    Raised by the iterator of :meth:`p2p.bulk.fetch.BlockFetcher.fetch` after every block that *was*
    found has been yielded, so a caller can fetch the rest another way (e.g. Bitswap).
    """

    def __init__(self, missing: Sequence[CID], total: int, detail: str = "") -> None:
        self.missing: list[CID] = list(missing)
        self.total = total
        first = f" (first: {self.missing[0]})" if self.missing else ""
        suffix = f": {detail}" if detail else ""
        super().__init__(f"{len(self.missing)} of {total} block(s) not found{first}{suffix}")
