"""Errors of the policy package: malformed or refused tokens, membership lists and rules.

Every class carries its API status and code (see :mod:`accel_node.errors`). ``TokenError.kind`` says
which security event a refusal is (a signature that did not verify is ``bad-signature``, anything
else ``refused``), so that the audit log tells forgeries from expired or revoked tokens.
"""

from __future__ import annotations

from accel_node.errors import AccelNodeError
from p2p.events import BAD_SIGNATURE, REFUSED


class PolicyError(AccelNodeError):
    """Base class: a policy, rule or update is malformed."""

    status = 400
    code = "invalid_policy"


class TokenError(PolicyError):
    """A capability token is malformed or refused; ``reason`` is short and safe to send to the peer."""

    code = "invalid_token"

    def __init__(self, message: str, *, reason: str, kind: str = REFUSED) -> None:
        super().__init__(message)
        self.reason = reason
        self.kind = kind


def bad_signature(what: str) -> TokenError:
    return TokenError(f"{what}: the signature does not verify", reason="bad signature", kind=BAD_SIGNATURE)


class MembershipError(PolicyError):
    """A membership list is malformed, wrongly signed, expired, or older than the one held."""

    code = "invalid_membership"
