"""Capability tokens, membership lists and the decision, as pure functions."""

from __future__ import annotations

import cbor2
import pytest
from nacl.signing import SigningKey

from accel_node.policy.actions import ASSIGN, CAPABILITIES, COMPUTE, CONTENT
from accel_node.policy.errors import MembershipError, PolicyError, TokenError
from accel_node.policy.membership import (
    check_membership,
    decode_membership,
    parse_membership,
    sign_membership,
)
from accel_node.policy.rules import Policy, Rule
from accel_node.policy.tokens import MAX_TOKEN_BYTES, check, decode, issue, parse
from p2p.events import BAD_SIGNATURE, REFUSED

NOW = 1_800_000_000.0
ALICE = "12D3KooWEodDWxbEep8zErZ2WVVsoTjryDVEBsXkuwaw5CNWC1Wd"
MALLORY = "12D3KooWGRUVh9QXFz4nqkMJbyHqnYFHkmSz1Bs5rUoWHk9fGMLh"
SELF = "12D3KooWSelfSelfSelfSelfSelfSelfSelfSelfSelfSelfSel"


def signer() -> tuple[bytes, SigningKey]:
    key = SigningKey.generate()
    return bytes(key.verify_key), key


def sign_with(key: SigningKey):  # type: ignore[no-untyped-def]
    return lambda message: bytes(key.sign(message).signature)


def refusal(token_raw: bytes, trusted: bytes, *, presenter: str = ALICE, now: float = NOW,
            revoked: frozenset[str] = frozenset()) -> TokenError:  # fmt: skip
    with pytest.raises(TokenError) as caught:
        check(decode(token_raw), trusted_issuers={trusted}, presenter=presenter, now=now,
              revoked=revoked.__contains__)  # fmt: skip
    return caught.value


def test_a_token_round_trips_and_is_accepted_for_its_subject_only() -> None:
    pub, key = signer()
    token = issue(sign_with(key), pub, subject=ALICE, actions=[COMPUTE, ASSIGN], ttl_s=60, now=NOW)
    again = parse(token.text())
    assert again == token and again.actions == {COMPUTE, ASSIGN} and len(token.id) == 32
    check(again, trusted_issuers={pub}, presenter=ALICE, now=NOW + 59, revoked=lambda _: False)

    assert refusal(token.encode(), pub, now=NOW + 60).reason == "expired"
    assert refusal(token.encode(), pub, revoked=frozenset({token.id})).reason == "revoked"
    replayed = refusal(token.encode(), pub, presenter=MALLORY)  # a stolen token shown by another peer
    assert (replayed.reason, replayed.kind) == ("wrong subject", REFUSED)


def test_wrongly_signed_and_untrusted_tokens_are_refused() -> None:
    pub, key = signer()
    other_pub, other_key = signer()
    token = issue(sign_with(key), pub, subject=ALICE, actions=[COMPUTE], ttl_s=60, now=NOW)
    assert refusal(token.encode(), other_pub).reason == "untrusted issuer"
    # Signed by another key but claiming the trusted issuer: the signature does not verify.
    forged = issue(sign_with(other_key), pub, subject=ALICE, actions=[COMPUTE], ttl_s=60, now=NOW)
    error = refusal(forged.encode(), pub)
    assert (error.reason, error.kind) == ("bad signature", BAD_SIGNATURE)
    # A body edited after signing (more actions, longer life) no longer matches its signature.
    outer = cbor2.loads(token.encode())
    body = cbor2.loads(outer["body"])
    body["act"], body["exp"] = [ASSIGN, COMPUTE], body["exp"] + 86400
    tampered = cbor2.dumps({"body": cbor2.dumps(body, canonical=True), "sig": outer["sig"]}, canonical=True)
    assert refusal(tampered, pub).kind == BAD_SIGNATURE


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff" * 10,
        b"\x00" * (MAX_TOKEN_BYTES + 1),
        cbor2.dumps({"body": b"x", "sig": b"s" * 64}),
        cbor2.dumps({"body": cbor2.dumps({"v": 1}), "sig": b"s" * 64}),
        cbor2.dumps([1, 2, 3]),
    ],
)
def test_malformed_tokens_are_refused_within_bounds(raw: bytes) -> None:
    with pytest.raises(TokenError) as caught:
        decode(raw)
    assert caught.value.reason == "malformed"


def test_issuing_checks_its_arguments() -> None:
    pub, key = signer()
    for kwargs in ({"actions": ["fly"]}, {"actions": []}, {"ttl_s": 0}, {"ttl_s": 10**9}):
        options = {"subject": ALICE, "actions": [COMPUTE], "ttl_s": 60, **kwargs}
        with pytest.raises(TokenError):
            issue(sign_with(key), pub, now=NOW, **options)  # type: ignore[arg-type]


def test_membership_lists_are_checked_against_the_owner_key() -> None:
    owner_pub, owner = signer()
    other_pub, other = signer()
    members = sign_membership(sign_with(owner), owner_pub, [ALICE], version=2, ttl_s=3600, now=NOW)
    again = parse_membership(members.text())
    assert again.members == {ALICE} and again.version == 2
    check_membership(again, owner=owner_pub, now=NOW)
    with pytest.raises(MembershipError, match="another key"):
        check_membership(again, owner=other_pub, now=NOW)
    with pytest.raises(MembershipError, match="expired"):
        check_membership(again, owner=owner_pub, now=NOW + 3600)
    with pytest.raises(MembershipError, match="older"):
        check_membership(again, owner=owner_pub, now=NOW, held_version=3)
    # Signed by someone else in the owner's name, or edited after signing: the signature fails.
    forged = sign_membership(sign_with(other), owner_pub, [ALICE, MALLORY], version=9, ttl_s=3600, now=NOW)
    with pytest.raises(MembershipError, match="signature"):
        check_membership(decode_membership(forged.encode()), owner=owner_pub, now=NOW)
    outer = cbor2.loads(members.encode())
    body = cbor2.loads(outer["body"])
    body["members"] = [ALICE, MALLORY]
    edited = cbor2.dumps({"body": cbor2.dumps(body, canonical=True), "sig": outer["sig"]}, canonical=True)
    with pytest.raises(MembershipError, match="signature"):
        check_membership(decode_membership(edited), owner=owner_pub, now=NOW)


def policy(**kwargs: object) -> Policy:
    options: dict[str, object] = {
        "local_peer": SELF,
        "mode": "open",
        "open_actions": [CONTENT, CAPABILITIES],
        "member_actions": [COMPUTE, ASSIGN, CONTENT, CAPABILITIES],
        **kwargs,
    }
    return Policy(**options)  # type: ignore[arg-type]


def test_the_safe_default_serves_content_and_keeps_compute_for_members_rules_and_tokens() -> None:
    default = policy(members=[ALICE])
    assert default.decide(MALLORY, CONTENT).allowed and default.decide(MALLORY, CAPABILITIES).allowed
    assert not default.decide(MALLORY, COMPUTE).allowed and not default.decide(MALLORY, ASSIGN).allowed
    assert default.decide(MALLORY, COMPUTE, token=True).via == "token"
    assert default.decide(ALICE, COMPUTE).via == "member"
    assert default.decide(SELF, COMPUTE).via == "self"

    ruled = policy(
        members=[ALICE],
        rules=[
            Rule(MALLORY, COMPUTE, "allow"),
            Rule(ALICE, COMPUTE, "deny"),
            Rule("role:any", CONTENT, "deny"),
            Rule(MALLORY, CONTENT, "allow"),
        ],
    )
    assert ruled.decide(MALLORY, COMPUTE).allowed and not ruled.decide(ALICE, COMPUTE).allowed
    assert (
        not ruled.decide(ALICE, CONTENT).allowed and ruled.decide(MALLORY, CONTENT).allowed
    )  # peer rule first
    assert not ruled.decide(ALICE, COMPUTE, token=True).allowed  # a deny rule beats a token

    private = policy(mode="private", members=[ALICE])
    assert not private.decide(MALLORY, CONTENT).allowed and private.decide(ALICE, CONTENT).allowed
    assert private.decide(MALLORY, COMPUTE, token=True).allowed


def test_rules_are_validated() -> None:
    bad = [
        ("role:admin", COMPUTE, "allow"),
        (ALICE, "fly", "allow"),
        (ALICE, COMPUTE, "maybe"),
        ("bad id!", COMPUTE, "allow"),
        ("", COMPUTE, "deny"),
    ]
    for subject, action, effect in bad:
        with pytest.raises(PolicyError):
            Rule(subject, action, effect)
