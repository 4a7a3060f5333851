"""The membership list of a private network: peer ids signed by the network owner's key.

Body (canonical CBOR in a :mod:`signed <accel_node.policy.signed>` envelope): ``v`` (1), ``owner``
(the owner's raw Ed25519 public key), ``network`` (a name, informative), ``version`` (grows with
every new list: an older list is refused, so a removed member cannot bring back the list that still
named it), ``iat``/``exp`` (Unix seconds) and ``members`` (sorted peer ids). A node accepts a list
only when it is signed by the owner key of its ``[policy] owner_key`` and has not expired; the
peers it names get the role ``member``. Text form: ``accelmembers1:<base64url>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from accel_node.policy.errors import MembershipError
from accel_node.policy.signed import (
    KEY_BYTES,
    Signer,
    envelope,
    from_text,
    open_envelope,
    seal,
    to_text,
    verify,
)

DOMAIN = b"accel-node membership list v1\x00"
TEXT_PREFIX = "accelmembers1:"
MAX_MEMBERS = 10_000
MAX_LIST_BYTES = 1 << 20
MAX_PEER_ID_LEN = 128


@dataclass(frozen=True)
class MembershipList:
    owner: bytes
    network: str
    version: int
    issued_at: int
    expires_at: int
    members: frozenset[str]
    raw_body: bytes
    signature: bytes

    def encode(self) -> bytes:
        return envelope(self.raw_body, self.signature)

    def text(self) -> str:
        return to_text(TEXT_PREFIX, self.encode())


def sign_membership(
    signer: Signer,
    owner: bytes,
    members: Iterable[str],
    *,
    version: int,
    ttl_s: int,
    now: float,
    network: str = "",
) -> MembershipList:
    """A list signed by the network owner (its key's ``signer``)."""
    names = sorted(set(members))
    if len(names) > MAX_MEMBERS or any(not m or len(m) > MAX_PEER_ID_LEN for m in names):
        raise MembershipError(f"a membership list names at most {MAX_MEMBERS} peer ids")
    if version < 1 or ttl_s < 1:
        raise MembershipError("a membership list needs a version >= 1 and a ttl >= 1 s")
    issued = int(now)
    body = {
        "v": 1,
        "owner": owner,
        "network": network[:64],
        "version": version,
        "iat": issued,
        "exp": issued + ttl_s,
        "members": names,
    }
    raw, signature = seal(body, domain=DOMAIN, signer=signer)
    return MembershipList(
        owner, network[:64], version, issued, issued + ttl_s, frozenset(names), raw, signature
    )


def decode_membership(raw: bytes) -> MembershipList:
    """The list in ``raw`` (bounded, every field checked); its signature is NOT checked."""
    body, signature, m = open_envelope(
        raw, max_bytes=MAX_LIST_BYTES, what="membership list", error=MembershipError
    )
    m.require_exactly({"v", "owner", "network", "version", "iat", "exp", "members"})
    if m.integer("v", min_value=0, max_value=1 << 16) != 1:
        raise MembershipError("membership list: unknown version")
    members = m.list_("members", max_len=MAX_MEMBERS)
    if any(not isinstance(p, str) or not 0 < len(p) <= MAX_PEER_ID_LEN for p in members):
        raise MembershipError("membership list: members must be peer ids")
    return MembershipList(
        owner=m.bytes_("owner", max_len=KEY_BYTES, min_len=KEY_BYTES),
        network=m.text("network", max_len=64),
        version=m.integer("version", min_value=1, max_value=1 << 53),
        issued_at=m.integer("iat", min_value=0, max_value=1 << 40),
        expires_at=m.integer("exp", min_value=0, max_value=1 << 40),
        members=frozenset(members),
        raw_body=body,
        signature=signature,
    )


def parse_membership(text: str) -> MembershipList:
    return decode_membership(from_text(TEXT_PREFIX, text, max_bytes=MAX_LIST_BYTES, error=MembershipError))


def check_membership(
    members: MembershipList, *, owner: bytes, now: float, held_version: int | None = None
) -> None:
    """Accept ``members`` for a network owned by ``owner``, or raise :class:`MembershipError`."""
    if members.owner != owner:
        raise MembershipError("the membership list is signed by another key than the network owner's")
    if not verify(owner, DOMAIN, members.raw_body, members.signature):
        raise MembershipError("the membership list's signature does not verify")
    if members.expires_at <= now:
        raise MembershipError(f"membership list version {members.version} has expired")
    if held_version is not None and members.version < held_version:
        raise MembershipError(
            f"membership list version {members.version} is older than the one held ({held_version})"
        )
