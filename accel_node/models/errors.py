"""Why a model package is refused. Each refusal has its own type so callers (API, CLI, tests) can
tell them apart; every message says what was wrong."""

from __future__ import annotations

from accel_node.errors import AccelNodeError, UsageError


class ModelError(AccelNodeError):
    """Base class of model-package refusals."""

    status = 422
    code = "model_refused"


class ManifestError(ModelError):
    """The manifest is malformed, oversize or lists an unsafe path."""

    code = "invalid_manifest"


class InvalidModelCidError(ManifestError):
    """A model CID given by the caller is not a CID (422, as every model refusal has always been)."""

    code = "invalid_cid"


class ModelNotFoundError(ModelError):
    """The node holds no model with that CID."""

    status = 404
    code = "model_not_found"


class BadSignatureError(ModelError):
    """The manifest's signature does not verify against the publisher's key."""

    code = "bad_signature"


class UnknownPublisherError(ModelError):
    """The manifest is signed by a key that is not in the trust store."""

    code = "unknown_publisher"


class ExpiredManifestError(ModelError):
    """The manifest's ``expires`` time has passed."""

    code = "manifest_expired"


class RollbackError(ModelError):
    """The manifest's version is lower than one already accepted for that name and publisher."""

    code = "rollback"


class BackendError(ModelError):
    """The content backend failed: Kubo's RPC API is unreachable, answered with an error, or sent
    a block that does not match its CID."""

    code = "content_backend"


class PublisherKeyError(UsageError):
    """A publisher key name or public key given by the user is invalid or unknown."""

    code = "invalid_publisher_key"


class PublisherKeyNotFoundError(PublisherKeyError):
    """No publisher key (own or trusted) has the name or key id given."""

    status = 404
    code = "publisher_key_not_found"


class AnalysisError(ModelError):
    """The model cannot be read or analysed (unreadable file, unsupported construct, bad dims)."""

    code = "analysis_failed"
