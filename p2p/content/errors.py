"""Errors raised by ``p2p.content``.

Every error subclasses :class:`p2p.errors.P2PError` through :class:`ContentError`, so callers can
catch the whole package with one clause; the input-validation errors are also ``ValueError``.
"""

from __future__ import annotations

from p2p.errors import P2PError


class ContentError(P2PError):
    """Base class of every error raised by ``p2p.content``."""


class InvalidCIDError(ContentError, ValueError):
    """A CID (string or binary) is malformed, truncated, oversize or uses an unknown multibase."""


class UnsupportedError(ContentError, ValueError):
    """Well-formed input that this implementation deliberately does not handle.

    For example a hash function other than sha2-256, a codec other than raw and dag-pb, or a
    UnixFS node that is not a file.
    """


class MalformedBlockError(ContentError, ValueError):
    """A dag-pb or UnixFS block does not decode, breaks a bound, or is inconsistent with its DAG."""


class BlockVerificationError(ContentError, ValueError):
    """A block's bytes do not hash to the digest in its CID."""


class CorruptBlockError(BlockVerificationError):
    """A block stored on disk no longer matches its CID (it was removed from the store)."""


class FileTooLargeError(ContentError, ValueError):
    """A file declares (or has) more bytes than the reader was allowed to return."""


class BlockNotFoundError(ContentError, LookupError):
    """A block store does not hold the requested block."""


class StoreFullError(ContentError):
    """Storing a block would take a block store past its configured size bound."""


class BlockStoreError(ContentError):
    """A block store's directory or pin file is unusable (bad layout, malformed pin file, ...)."""


class KuboRpcError(ContentError):
    """A call to a Kubo (IPFS) node's RPC API failed: an HTTP error, a timeout or a malformed answer."""


class KuboUnavailableError(KuboRpcError):
    """No Kubo RPC API answers at the configured address (connection refused, unreachable host)."""


class ResponseTooLargeError(KuboRpcError):
    """A Kubo RPC answer is larger than the caller allowed; the rest of it was not read."""
