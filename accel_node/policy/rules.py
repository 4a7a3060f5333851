"""Rules and the decision: may this peer perform this action?

A :class:`Rule` allows or denies one action to one *subject*: a peer id, or a role
(``role:member``, ``role:any``). :meth:`Policy.decide` is pure and synchronous (a few set and dict
look-ups: it runs on every RUN), in this order:

1. this node itself is always allowed;
2. a rule naming the peer: deny wins over allow;
3. a rule naming a role the peer has (``any``; ``member`` when listed): deny wins over allow;
4. a valid capability token naming the action;
5. members: the actions of ``[policy] member_actions``;
6. everyone else: the actions of ``[policy] open_actions``, in ``open`` mode only. A ``private``
   network lends nothing to a peer with no membership, rule or token.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from libp2p.peer.id import ID

from accel_node.policy.actions import ACTIONS, ANY, MEMBER, ROLE_PREFIX, ROLES
from accel_node.policy.errors import PolicyError

ALLOW = "allow"
DENY = "deny"
MAX_RULES = 10_000
MAX_SUBJECT_LEN = 128


IDENTITY, SHA2_256 = 0x00, 0x12  # the multihash codes libp2p peer ids use


def is_peer_id(text: str) -> bool:
    """Whether ``text`` is a base58 libp2p peer id (an identity or sha2-256 multihash of a key)."""
    if not 0 < len(text) <= MAX_SUBJECT_LEN:
        return False
    try:
        raw = ID.from_base58(text).to_bytes()
    except Exception:  # py-libp2p raises bare ValueError/KeyError for bad text
        return False
    return len(raw) >= 2 and raw[0] in (IDENTITY, SHA2_256) and raw[1] == len(raw) - 2 and raw[1] > 0


@dataclass(frozen=True)
class Rule:
    subject: str  # a peer id, or role:<member|any>
    action: str
    effect: str  # allow | deny

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise PolicyError(f"unknown action {self.action[:32]!r}: use one of {', '.join(ACTIONS)}")
        if self.effect not in (ALLOW, DENY):
            raise PolicyError("a rule's effect is allow or deny")
        if self.subject.startswith(ROLE_PREFIX):
            if self.subject[len(ROLE_PREFIX) :] not in ROLES:
                raise PolicyError(
                    f"unknown role in {self.subject[:40]!r}: use role:{' or role:'.join(ROLES)}"
                )
        elif not is_peer_id(self.subject):
            raise PolicyError(f"a rule's subject is a peer id or a role, not {self.subject[:40]!r}")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    via: str  # self | rule | role | token | member | open | default
    reason: str


class Policy:
    """One snapshot of the owner's policy; rebuilt (cheaply) whenever a rule or the membership changes."""

    def __init__(
        self,
        *,
        local_peer: str,
        mode: str,
        open_actions: Collection[str],
        member_actions: Collection[str],
        rules: Iterable[Rule] = (),
        members: Collection[str] = (),
    ) -> None:
        self.local_peer = local_peer
        self.mode = mode
        self.open_actions = frozenset(open_actions)
        self.member_actions = frozenset(member_actions)
        self.members = frozenset(members)
        self.rules = tuple(rules)
        self._effects: dict[tuple[str, str], str] = {}
        for rule in self.rules:
            key = (rule.subject, rule.action)
            if self._effects.get(key) != DENY:
                self._effects[key] = rule.effect

    def decide(self, peer: str, action: str, *, token: bool = False) -> Decision:  # noqa: PLR0911 (the order above)
        if peer == self.local_peer:
            return SELF
        effect = self._effects.get((peer, action))
        if effect is not None:
            return PEER_ALLOWED if effect == ALLOW else PEER_DENIED
        member = peer in self.members
        effects = self._effects
        any_effect = effects.get((ROLE_ANY, action))
        member_effect = effects.get((ROLE_MEMBER, action)) if member else None
        if DENY in (any_effect, member_effect):
            return ROLE_DENIED
        if ALLOW in (any_effect, member_effect):
            return ROLE_ALLOWED
        if token:
            return TOKEN
        if member and action in self.member_actions:
            return MEMBER_ALLOWED
        if self.mode == "open" and action in self.open_actions:
            return OPEN
        return NOT_MEMBER if self.mode == "private" and not member else NEEDS_LEAVE


# The decisions, made once (deciding allocates nothing: it runs on every request).
ROLE_ANY, ROLE_MEMBER = ROLE_PREFIX + ANY, ROLE_PREFIX + MEMBER
SELF = Decision(True, "self", "this node")
PEER_ALLOWED = Decision(True, "rule", "allow rule for this peer")
PEER_DENIED = Decision(False, "rule", "deny rule for this peer")
ROLE_ALLOWED = Decision(True, "role", "allow rule for a role of this peer")
ROLE_DENIED = Decision(False, "role", "deny rule for a role of this peer")
TOKEN = Decision(True, "token", "capability token")
MEMBER_ALLOWED = Decision(True, "member", "member of the network")
OPEN = Decision(True, "open", "open to every peer")
NOT_MEMBER = Decision(False, "default", "not a member of this private network")
NEEDS_LEAVE = Decision(False, "default", "needs membership, an allow rule or a capability token")
