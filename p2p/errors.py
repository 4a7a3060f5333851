"""Errors raised by the ``p2p`` package.

Third-party (py-libp2p, multiaddr) errors are translated at this package's boundary with
``raise ... from exc`` so that callers handle one small taxonomy.
"""


class P2PError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidAddressError(P2PError, ValueError):
    """A multiaddr string could not be parsed or lacks a required component."""


class IdentityError(P2PError):
    """An identity key file is missing, unreadable or malformed."""


class DialError(P2PError):
    """Connecting to a peer failed or timed out."""


class PingError(P2PError):
    """A ping round trip failed, timed out or echoed the wrong payload."""


class NotRunningError(P2PError, RuntimeError):
    """Work was handed to a service whose ``run`` is not running (not started yet, or stopped)."""


class PerfError(P2PError):
    """A perf measurement failed or the peer broke the protocol."""


class RecordError(P2PError, ValueError):
    """A record is malformed, oversize, wrongly signed or expired."""
