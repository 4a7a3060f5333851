"""The tokens peers presented: remembered per peer id until they expire, bounded per peer and in total.

A peer presents its tokens once (protocol ``/accel/token/1.0.0``, :mod:`accel_node.policy.exchange`);
every later request of that peer id is then authorised by a dictionary look-up, not a signature
check. The memory a peer can make this node spend on its tokens is bounded by the resource
``policy.tokens`` of the node's :class:`~p2p.resources.ResourceManager` (one unit per token held, per
peer and in total); a token that expires or is revoked gives its unit back.
"""

from __future__ import annotations

from dataclasses import dataclass

from accel_node.policy.tokens import CapabilityToken
from p2p.resources import Limit, Reservation, ResourceLimitExceeded, ResourceManager

TOKENS = "policy.tokens"
DEFAULT_LIMIT = Limit(per_peer=8, total=4096)


@dataclass
class _Held:
    token: CapabilityToken
    reservation: Reservation


class TokenBook:
    """Accepted tokens by presenting peer; see the module docstring."""

    def __init__(self, resources: ResourceManager | None = None, *, limit: Limit = DEFAULT_LIMIT) -> None:
        self.resources = resources or ResourceManager()
        self.resources.set_limit(TOKENS, limit)
        self._by_peer: dict[str, dict[str, _Held]] = {}

    def add(self, peer: str, token: CapabilityToken, *, now: float) -> None:
        """Remember ``token`` (already checked) for ``peer``; raises ``ResourceLimitExceeded`` when full."""
        existing = self._by_peer.get(peer)
        if existing:
            self._prune(peer, existing, now)
        held = self._by_peer.setdefault(peer, {})
        if token.id in held:
            held[token.id].token = token
            return
        try:
            reservation = self.resources.reserve(TOKENS, peer)
        except ResourceLimitExceeded:
            if not held:
                del self._by_peer[peer]
            raise
        held[token.id] = _Held(token, reservation)

    def token_for(self, peer: str, action: str, *, now: float) -> CapabilityToken | None:
        """A held, unexpired token of ``peer`` that names ``action``."""
        held = self._by_peer.get(peer)
        if held is None:
            return None
        for entry in held.values():
            if action in entry.token.actions and entry.token.expires_at > now:
                return entry.token
        self._prune(peer, held, now)
        return None

    def revoke(self, token_id: str) -> int:
        """Forget every held token with this id; how many were dropped."""
        dropped = 0
        for peer, held in list(self._by_peer.items()):
            entry = held.pop(token_id, None)
            if entry is not None:
                entry.reservation.release()
                dropped += 1
            if not held:
                del self._by_peer[peer]
        return dropped

    def count(self) -> int:
        return sum(len(h) for h in self._by_peer.values())

    def peers(self) -> int:
        return len(self._by_peer)

    def _prune(self, peer: str, held: dict[str, _Held], now: float) -> None:
        for token_id in [t for t, e in held.items() if e.token.expires_at <= now]:
            held.pop(token_id).reservation.release()
        if not held and peer in self._by_peer and self._by_peer[peer] is held:
            del self._by_peer[peer]
