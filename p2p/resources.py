"""The resource manager: what a peer can make this node spend, bounded per peer and in total.

After go-libp2p's ``rcmgr``: every protocol that lets a remote peer consume something (channels,
tickets, pending handshakes, queued bytes, in-flight requests, reassembly memory) names it as a
*resource* (``"bulk.channels"``, ``"bitswap.bytes_in_flight"``, ``"shard.in_flight"``, ...) with a
:class:`Limit`: at most ``per_peer`` for any one scope key (a peer id, or a remote IP before
authentication) and at most ``total`` for all of them together. The dotted prefix of a resource
name is its protocol; :meth:`ResourceManager.usage` reports per resource so that operators see
which protocol is full.

Two ways to take a share:

- :meth:`ResourceManager.reserve` fails fast with :class:`ResourceLimitExceeded` (the protocol then
  answers "busy", the API's 429): for things a peer asks for (a channel, a ticket, a RUN slot).
- :meth:`ResourceManager.acquire` waits until the share is free (back-pressure): for bytes in
  flight on a stream the node itself is writing.

Either returns a :class:`Reservation`, released exactly once (``release()`` is idempotent, and a
reservation is a context manager). Accounting is synchronous and O(1); the manager is used from one
trio thread only.

Why not a library: py-libp2p 0.8 has no resource manager, and the accounting is a few dozen lines;
what matters is that every protocol uses the same one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

import trio

from p2p.errors import P2PError


class ResourceLimitExceeded(P2PError):
    """A reservation would exceed a resource's limit for its scope or in total."""

    def __init__(self, resource: str, scope: str, limit: int, *, total: bool) -> None:
        where = "in total" if total else "for this peer"
        super().__init__(f"{resource}: limit of {limit} reached {where}")
        self.resource = resource
        self.scope = scope
        self.limit = limit
        self.total = total


@dataclass(frozen=True)
class Limit:
    """At most ``per_peer`` units for any one scope key, at most ``total`` for all together."""

    per_peer: int
    total: int

    def __post_init__(self) -> None:
        if self.per_peer < 0 or self.total < 0:
            raise ValueError("resource limits must not be negative")


@dataclass(frozen=True)
class Usage:
    """What one resource has reserved now: in total, by its busiest scope, and how often refused."""

    resource: str
    used: int
    total_limit: int
    per_peer_limit: int
    scopes: int
    busiest: int
    refused: int


class Reservation:
    """A share of one resource for one scope; give it back with :meth:`release` (idempotent)."""

    __slots__ = ("_amount", "_manager", "_released", "resource", "scope")

    def __init__(self, manager: ResourceManager, resource: str, scope: str, amount: int) -> None:
        self._manager = manager
        self.resource = resource
        self.scope = scope
        self._amount = amount
        self._released = False

    @property
    def amount(self) -> int:
        return 0 if self._released else self._amount

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._manager._give_back(self.resource, self.scope, self._amount)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class _Account:
    __slots__ = ("by_scope", "changed", "limit", "refused", "used")

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.used = 0
        self.refused = 0
        self.by_scope: defaultdict[str, int] = defaultdict(int)
        self.changed = trio.Event()


class ResourceManager:
    """Limits per resource, per scope key and in total; see the module docstring."""

    def __init__(self, limits: Mapping[str, Limit] | None = None) -> None:
        self._accounts: dict[str, _Account] = {}
        for resource, limit in (limits or {}).items():
            self.set_limit(resource, limit)

    def set_limit(self, resource: str, limit: Limit) -> None:
        """Declare (or change) a resource's limit; what is reserved stays reserved."""
        account = self._accounts.get(resource)
        if account is None:
            self._accounts[resource] = _Account(limit)
        else:
            account.limit = limit
            self._wake(account)

    def limit(self, resource: str) -> Limit:
        return self._account(resource).limit

    def _account(self, resource: str) -> _Account:
        try:
            return self._accounts[resource]
        except KeyError:
            raise KeyError(f"unknown resource {resource!r}: declare it with set_limit first") from None

    def _check(self, account: _Account, resource: str, scope: str, amount: int) -> None:
        if amount < 0:
            raise ValueError("a reservation's amount must not be negative")
        if account.by_scope.get(scope, 0) + amount > account.limit.per_peer:
            raise ResourceLimitExceeded(resource, scope, account.limit.per_peer, total=False)
        if account.used + amount > account.limit.total:
            raise ResourceLimitExceeded(resource, scope, account.limit.total, total=True)

    def reserve(self, resource: str, scope: str, amount: int = 1) -> Reservation:
        """Take ``amount`` of ``resource`` for ``scope`` now, or raise :class:`ResourceLimitExceeded`."""
        account = self._account(resource)
        try:
            self._check(account, resource, scope, amount)
        except ResourceLimitExceeded:
            account.refused += 1
            raise
        account.used += amount
        account.by_scope[scope] += amount
        return Reservation(self, resource, scope, amount)

    def try_reserve(self, resource: str, scope: str, amount: int = 1) -> Reservation | None:
        """:meth:`reserve`, answering None instead of raising."""
        try:
            return self.reserve(resource, scope, amount)
        except ResourceLimitExceeded:
            return None

    async def acquire(self, resource: str, scope: str, amount: int = 1) -> Reservation:
        """Wait until ``amount`` fits, then take it. An amount larger than a limit can never fit:
        it raises :class:`ResourceLimitExceeded` at once instead of waiting forever."""
        account = self._account(resource)
        if amount > account.limit.per_peer or amount > account.limit.total:
            account.refused += 1
            self._check(account, resource, scope, amount)
        while True:
            try:
                self._check(account, resource, scope, amount)
            except ResourceLimitExceeded:
                await account.changed.wait()
                continue
            account.used += amount
            account.by_scope[scope] += amount
            return Reservation(self, resource, scope, amount)

    def used(self, resource: str, scope: str | None = None) -> int:
        """Units reserved now, for one scope or (None) in total."""
        account = self._account(resource)
        return account.used if scope is None else account.by_scope.get(scope, 0)

    def usage(self) -> list[Usage]:
        """A snapshot of every resource, for metrics and the API."""
        return [
            Usage(
                resource=name,
                used=account.used,
                total_limit=account.limit.total,
                per_peer_limit=account.limit.per_peer,
                scopes=len(account.by_scope),
                busiest=max(account.by_scope.values(), default=0),
                refused=account.refused,
            )
            for name, account in sorted(self._accounts.items())
        ]

    def _give_back(self, resource: str, scope: str, amount: int) -> None:
        account = self._accounts[resource]
        account.used -= amount
        left = account.by_scope[scope] - amount
        if left > 0:
            account.by_scope[scope] = left
        else:
            del account.by_scope[scope]
        self._wake(account)

    @staticmethod
    def _wake(account: _Account) -> None:
        account.changed.set()
        account.changed = trio.Event()
