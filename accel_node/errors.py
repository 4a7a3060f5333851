"""The error taxonomy of accel-node.

Every error a caller can cause is an :class:`AccelNodeError` that carries the HTTP status the
control API answers with (``status``) and a stable, machine-readable ``code``; each package keeps its
errors in its own ``errors.py``, derived from its base. The API renders all of them through one
boundary (:mod:`accel_node.api.errors`) as ``{"error": {"code", "message", ...}}``; the CLI maps
:class:`UsageError` subclasses to exit code 2 and every other :class:`AccelNodeError` to 1.

A status and a code are class attributes, not a table kept elsewhere, so that a new error decides
how it reaches the user where it is defined. ``extra()`` adds machine-readable fields (e.g. the name
of the input that was wrong), ``headers()`` HTTP headers (e.g. ``Retry-After``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from p2p.errors import P2PError


class AccelNodeError(Exception):
    """Base class of every error accel-node raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def extra(self) -> dict[str, Any]:
        """Machine-readable fields rendered next to ``code`` and ``message``."""
        return {}

    def headers(self) -> dict[str, str]:
        """HTTP headers of the error answer."""
        return {}


class UsageError(AccelNodeError):
    """The user asked for something malformed (bad config, bad arguments)."""

    status = 400
    code = "bad_request"


class InvalidRequestError(UsageError):
    """A request does not fit its schema (what request validation answers over HTTP, too)."""

    status = 422
    code = "invalid_request"


class NotFoundError(AccelNodeError):
    """The thing asked for does not exist on this node (or on the network)."""

    status = 404
    code = "not_found"


class ConflictError(AccelNodeError):
    """The request does not fit the node's current state (e.g. a peer that is not connected)."""

    status = 409
    code = "conflict"


class PeerUnreachableError(AccelNodeError):
    """A peer the request needs could not be reached or did not answer."""

    status = 502
    code = "peer_unreachable"


class ConfigError(UsageError):
    """The configuration is invalid; ``problems`` lists ``(key, message)`` pairs."""

    code = "invalid_config"

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {key}: {message}" for key, message in problems)
        super().__init__(f"invalid configuration ({source}):\n{lines}")

    def extra(self) -> dict[str, Any]:
        return {"problems": [{"key": key, "message": message} for key, message in self.problems]}


class HomeError(AccelNodeError):
    """The node home is missing, unreadable or inconsistent."""

    code = "home"


class ApiScopeError(AccelNodeError):
    """The caller's API token does not grant this endpoint (the read-only token on an admin one)."""

    status = 403
    code = "forbidden"


class HomeLockedError(HomeError):
    """Another daemon is running on the same node home."""

    code = "home_locked"


class DaemonNotRunningError(AccelNodeError):
    """No daemon is running for the node home the CLI was pointed at (client side)."""

    status = 503
    code = "daemon_not_running"


class DaemonTimeoutError(AccelNodeError):
    """The daemon did not answer within the client's timeout (client side): it runs, but is slow."""

    status = 504
    code = "client_timeout"


class ApiError(AccelNodeError):
    """The control API answered with an error (client side): its status, code and message."""

    def __init__(
        self, status: int, message: str, *, code: str = "http_error", extra: dict[str, Any] | None = None
    ) -> None:
        self.http_status = status
        self.error_code = code
        self.fields = dict(extra or {})
        super().__init__(message)


class StoreError(AccelNodeError):
    """The SQLite store could not be opened or migrated."""

    code = "store"


class InvalidPeerIdError(UsageError):
    """A peer id given by the caller does not parse."""

    code = "invalid_peer_id"


class InvalidAddressInputError(UsageError):
    """A multiaddr given by the caller does not parse or lacks a required part."""

    code = "invalid_address"


class InvalidCidInputError(UsageError):
    """A CID given by the caller does not parse (422, as model CIDs that do not parse)."""

    status = 422
    code = "invalid_cid"


def from_p2p(exc: P2PError) -> AccelNodeError:
    """The node's error for an error of the :mod:`p2p` substrate (which knows nothing of HTTP):
    bad input the caller gave is a usage error, anything else a peer that could not be reached.
    Raise it ``from exc``."""
    # Imported here: the CLI imports this module, and p2p.content pulls in trio (~0.2 s).
    from p2p.content.errors import InvalidCIDError
    from p2p.errors import InvalidAddressError

    if isinstance(exc, InvalidAddressError):
        return InvalidAddressInputError(str(exc))
    if isinstance(exc, InvalidCIDError):
        return InvalidCidInputError(str(exc))
    return PeerUnreachableError(str(exc))
