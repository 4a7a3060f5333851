"""The node's policy service: decides, remembers presented tokens, presents its own, persists changes.

- :meth:`PolicyService.allowed` is the hot path every enforcement hook calls (sync, a few dict
  look-ups); every denial is reported as a ``policy-denied`` :class:`~p2p.events.SecurityEvent`,
  the first use of each accepted token for an action as ``token-used``.
- :meth:`allows` gives a protocol a ``Callable[[ID], bool]`` for one action (what ``p2p`` components,
  which never import ``accel_node``, take).
- Server side of ``/accel/token/1.0.0`` (:mod:`.exchange`): :meth:`accept` checks the tokens a peer
  presents and remembers the accepted ones (:class:`~.book.TokenBook`).
- Client side: the tokens this node holds live in ``HOME/<[policy] grants_file>`` (one text token per
  line, written by ``accel-node policy token add``); :meth:`run` presents them to every peer this
  node connects to, and :meth:`present` to one peer on demand.
- Rules, revocations and the membership list persist in the store; :meth:`update` changes them and
  rebuilds the :class:`~.rules.Policy` snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from libp2p.abc import INotifee
from libp2p.peer.id import ID
from trio_typing import TaskStatus

from accel_node.config import PolicySection
from accel_node.policy import exchange
from accel_node.policy.actions import ACTIONS
from accel_node.policy.book import TokenBook
from accel_node.policy.errors import MembershipError, PolicyError, TokenError
from accel_node.policy.membership import MembershipList, check_membership, decode_membership, parse_membership
from accel_node.policy.rules import MAX_RULES, Policy, Rule, is_peer_id
from accel_node.policy.signed import Signer, format_key, identity_signer, parse_key
from accel_node.policy.tokens import MAX_TTL_S, CapabilityToken, check, decode, issue, parse
from accel_node.store import AsyncStore
from p2p.events import POLICY_DENIED, REFUSED, TOKEN_USED, EventSink, EventThrottle, SecurityEvent, drop
from p2p.resources import Limit, ResourceLimitExceeded, ResourceManager

if TYPE_CHECKING:
    from libp2p.abc import IHost, INetConn, INetStream, INetwork
    from libp2p.crypto.keys import KeyPair
    from multiaddr import Multiaddr

log = logging.getLogger(__name__)
PROTOCOL = "policy"
MAX_HELD_TOKENS = 64
MAX_TOKENS_FILE_BYTES = 256 * 1024
MAX_USED_REPORTED = 65536  # (token, action) pairs whose first use was reported
DENIAL_EVERY_S = 10.0  # at most one policy-denied event per (peer, action) this often; the rest counted
MAX_DENIALS_TRACKED = 4096


@dataclass(frozen=True)
class PolicyUpdate:
    """A change to the persistent policy; None leaves a part as it is."""

    rules: Sequence[Rule] | None = None
    revoke: Sequence[str] = ()
    membership: str | None = None  # text form of a signed list; "" removes the list


class PolicyService:
    """See the module docstring. ``clock`` is Unix time (token and list expiry are Unix seconds)."""

    def __init__(
        self,
        *,
        key_pair: KeyPair,
        store: AsyncStore,
        settings: PolicySection,
        home: Path,
        resources: ResourceManager | None = None,
        events: EventSink = drop,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.settings = settings
        self.events = events
        self.clock = clock
        self.local_id = str(ID.from_pubkey(key_pair.public_key))
        self.own_key, self._sign = identity_signer(key_pair)
        self.trusted_issuers = frozenset([self.own_key, *(parse_key(k) for k in settings.issuer_keys)])
        self.owner_key = parse_key(settings.owner_key) if settings.owner_key else None
        self.tokens_path = home / settings.grants_file
        self.book = TokenBook(resources, limit=Limit(settings.max_grants_per_peer, 4096))
        self._revoked: set[str] = set()
        self._used: set[tuple[str, str]] = set()
        self._denied = EventThrottle(every_s=DENIAL_EVERY_S, max_keys=MAX_DENIALS_TRACKED)
        self.membership: MembershipList | None = None
        self.policy = self._snapshot(())

    def _snapshot(self, rules: Iterable[Rule]) -> Policy:
        members = self.membership.members if self.membership is not None else ()
        return Policy(
            local_peer=self.local_id,
            mode=self.settings.mode,
            open_actions=self.settings.open_actions,
            member_actions=self.settings.member_actions,
            rules=rules,
            members=members,
        )

    # -- loading and changing ---------------------------------------------------------------------

    async def load(self) -> None:
        """Read rules, revocations and the membership list from the store (a list that no longer
        checks, e.g. expired or signed by another owner than the configured one, is ignored)."""
        rules = [Rule(r.subject, r.action, r.effect) for r in await self._store.policy_rules()]
        self._revoked = {r.token_id for r in await self._store.token_revocations()}
        raw = await self._store.membership()
        self.membership = None
        if raw is not None and self.owner_key is not None:
            try:
                held = decode_membership(raw)
                check_membership(held, owner=self.owner_key, now=self.clock())
                self.membership = held
            except MembershipError as exc:
                log.warning("the stored membership list is not used", extra={"error": str(exc)})
        self.policy = self._snapshot(rules)

    async def update(self, change: PolicyUpdate) -> None:
        """Apply ``change`` (checked first, then persisted, then in effect)."""
        if change.rules is not None and len(change.rules) > MAX_RULES:
            raise PolicyError(f"at most {MAX_RULES} rules")
        members: MembershipList | None = None
        if change.membership:
            if self.owner_key is None:
                raise MembershipError("set [policy] owner_key before installing a membership list")
            members = parse_membership(change.membership)
            held = self.membership.version if self.membership is not None else None
            check_membership(members, owner=self.owner_key, now=self.clock(), held_version=held)
        revoke = sorted({t.strip().lower() for t in change.revoke})
        if any(len(t) != 32 or not all(c in "0123456789abcdef" for c in t) for t in revoke):
            raise PolicyError("a token id is 32 hex digits (the token's nonce)")
        if change.rules is not None:
            await self._store.replace_policy_rules([(r.subject, r.action, r.effect) for r in change.rules])
        if revoke:
            await self._store.revoke_tokens(revoke, forget_before=self.clock() - MAX_TTL_S)
        if members is not None:
            await self._store.set_membership(members.encode(), members.version)
        elif change.membership == "":
            await self._store.set_membership(None)
        await self.load()
        for token_id in revoke:
            self.book.revoke(token_id)

    # -- deciding ---------------------------------------------------------------------------------

    def allowed(self, peer: ID | str, action: str, *, protocol: str = PROTOCOL) -> bool:
        """Whether ``peer`` may perform ``action`` now; a denial is reported to ``events``."""
        peer_text = peer if isinstance(peer, str) else str(peer)
        if peer_text == self.local_id:
            return True
        token = self.book.token_for(peer_text, action, now=self.clock())
        decision = self.policy.decide(peer_text, action, token=token is not None)
        if not decision.allowed:
            self._report_denial(peer_text, action, protocol, decision.reason)
        elif decision.via == "token" and token is not None and (token.id, action) not in self._used:
            if len(self._used) > MAX_USED_REPORTED:
                self._used.clear()
            self._used.add((token.id, action))
            details = {"action": action, "token": token.id}
            self.events(SecurityEvent(TOKEN_USED, protocol, peer_text, "capability token", details))
        return decision.allowed

    def _report_denial(self, peer: str, action: str, protocol: str, reason: str) -> None:
        """A flood of denied requests must not flood the audit log: one event per (peer, action)
        every ``DENIAL_EVERY_S``, the next one saying how many were left out (``suppressed``)."""
        suppressed = self._denied.admit((peer, action), self.clock())
        if suppressed is None:
            return
        details: dict[str, str | int | float | bool] = {"action": action}
        if suppressed:
            details["suppressed"] = suppressed
        self.events(SecurityEvent(POLICY_DENIED, protocol, peer, reason, details))

    def allows(self, action: str, *, protocol: str = PROTOCOL) -> Callable[[ID], bool]:
        """``allowed`` for one action, as the ``allow`` callable protocols take."""
        if action not in ACTIONS:
            raise PolicyError(f"unknown action {action!r}")
        return lambda peer: self.allowed(peer, action, protocol=protocol)

    # -- tokens presented to this node --------------------------------------------------------------

    def accept(self, peer: str, raw_tokens: Sequence[bytes]) -> list[tuple[str, str]]:
        """Check the tokens ``peer`` presents; remember the accepted ones. One result per token."""
        results = []
        now = self.clock()
        for raw in raw_tokens:
            token_id = ""
            try:
                token = decode(raw)
                token_id = token.id
                check(
                    token,
                    trusted_issuers=self.trusted_issuers,
                    presenter=peer,
                    now=now,
                    revoked=self._revoked.__contains__,
                )
                self.book.add(peer, token, now=now)
            except TokenError as exc:
                self.events(
                    SecurityEvent(exc.kind, exchange.TOKEN_PROTOCOL, peer, str(exc), {"token": token_id})
                )
                results.append((token_id, exc.reason))
                continue
            except ResourceLimitExceeded as exc:
                self.events(
                    SecurityEvent(REFUSED, exchange.TOKEN_PROTOCOL, peer, str(exc), {"token": token_id})
                )
                results.append((token_id, "limit"))
                continue
            self.events(
                SecurityEvent(
                    TOKEN_USED,
                    exchange.TOKEN_PROTOCOL,
                    peer,
                    "token accepted",
                    {"token": token_id, "actions": ",".join(sorted(token.actions))},
                )
            )
            results.append((token_id, exchange.ACCEPTED))
        return results

    def issue(
        self, subject: str, actions: Iterable[str], ttl_s: int, *, signer: Signer | None = None
    ) -> CapabilityToken:
        """A token for ``subject`` signed with this node's identity key."""
        if not is_peer_id(subject):
            raise PolicyError(f"{subject[:80]!r} is not a peer id")
        return issue(
            signer or self._sign,
            self.own_key,
            subject=subject,
            actions=actions,
            ttl_s=ttl_s,
            now=self.clock(),
        )

    # -- tokens this node holds ---------------------------------------------------------------------

    def held_tokens(self) -> list[CapabilityToken]:
        """The unexpired tokens of the tokens file that name this node; malformed lines are skipped."""
        try:
            with self.tokens_path.open("rb") as f:
                text = f.read(MAX_TOKENS_FILE_BYTES).decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        now = self.clock()
        held = []
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                token = parse(line)
            except TokenError:
                continue
            if token.subject == self.local_id and token.expires_at > now:
                held.append(token)
        return held[-MAX_HELD_TOKENS:]

    async def present(self, host: IHost, peer: ID) -> list[tuple[str, str]]:
        """Present the held tokens to ``peer`` (in batches); the results, empty when none are held."""
        tokens = [t.encode() for t in self.held_tokens()]
        results: list[tuple[str, str]] = []
        for start in range(0, len(tokens), exchange.MAX_TOKENS):
            results += await exchange.present(host, peer, tokens[start : start + exchange.MAX_TOKENS])
        return results

    async def run(self, host: IHost, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve ``/accel/token/1.0.0`` and present the held tokens to every newly connected peer."""
        await self.load()
        host.set_stream_handler(
            exchange.TOKEN_PROTOCOL, exchange.token_handler(self.accept, self.book.resources)
        )
        send, receive = trio.open_memory_channel[ID](256)
        host.get_network().register_notifee(_OnConnect(send))
        task_status.started()
        async with receive:
            async for peer in receive:
                if not self.tokens_path.exists():
                    continue
                try:
                    await self.present(host, peer)
                except exchange.ExchangeError as exc:  # the peer may not speak the protocol
                    log.info(
                        "could not present tokens", extra={"peer_id": str(peer), "error": str(exc)[:200]}
                    )

    # -- views --------------------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        members = self.membership
        return {
            "mode": self.settings.mode,
            "peer_id": self.local_id,
            "issuer_key": format_key(self.own_key),
            "open_actions": list(self.settings.open_actions),
            "member_actions": list(self.settings.member_actions),
            "owner_key": self.settings.owner_key or None,
            "issuer_keys": list(self.settings.issuer_keys),
            "rules": [
                {"subject": r.subject, "action": r.action, "effect": r.effect} for r in self.policy.rules
            ],
            "revoked": sorted(self._revoked),
            "membership": None
            if members is None
            else {
                "network": members.network,
                "version": members.version,
                "expires_at": members.expires_at,
                "members": sorted(members.members),
            },
            "tokens_presented": self.book.count(),
            "tokens_held": len(self.held_tokens()),
        }


class _OnConnect(INotifee):
    """A libp2p notifee that hands each new connection's peer to the presenting task (never blocks)."""

    def __init__(self, send: trio.MemorySendChannel[ID]) -> None:
        self._send = send

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self._send.send_nowait(conn.muxed_conn.peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None: ...
    async def opened_stream(self, network: INetwork, stream: INetStream) -> None: ...
    async def closed_stream(self, network: INetwork, stream: INetStream) -> None: ...
    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None: ...
    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None: ...
