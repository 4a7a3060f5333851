"""Why a model package is refused. Each refusal has its own type so callers (API, CLI, tests) can
tell them apart; every message says what was wrong."""

from __future__ import annotations

from accel_node.errors import AccelNodeError, UsageError


class ModelError(AccelNodeError):
    """Base class of model-package refusals."""


class ManifestError(ModelError):
    """The manifest is malformed, oversize or lists an unsafe path."""


class BadSignatureError(ModelError):
    """The manifest's signature does not verify against the publisher's key."""


class UnknownPublisherError(ModelError):
    """The manifest is signed by a key that is not in the trust store."""


class ExpiredManifestError(ModelError):
    """The manifest's ``expires`` time has passed."""


class RollbackError(ModelError):
    """The manifest's version is lower than one already accepted for that name and publisher."""


class BackendError(ModelError):
    """The content backend failed: Kubo's RPC API is unreachable, answered with an error, or sent
    a block that does not match its CID."""


class PublisherKeyError(UsageError):
    """A publisher key name or public key given by the user is invalid or unknown."""


class AnalysisError(ModelError):
    """The model cannot be read or analysed (unreadable file, unsupported construct, bad dims)."""
