"""Signed records in the Kademlia DHT, with a lookup that works in multi-hop networks.

py-libp2p 0.8.1's ``KadDHT`` serves the protocol well but its client side is not usable for our keys:
its servers ignore FIND_NODE for keys that are not peer ids, and ``get_value`` stops after one round
of closer peers, so a record two hops away is never found. It also answers ``get_value`` from its
local store first, which would hand us a stale copy. This module keeps ``KadDHT`` for serving
(DHT server mode, strict namespaced validation) and does its own iterative lookup over GET_VALUE:
each reply carries the replier's closest peers to the key, so the walk converges on the k closest
peers whether or not they hold the record.

Keys are ``/<namespace>/<kind>/<peer-id>``: the record under a key must be a :mod:`p2p.records`
record of that kind signed by that peer; among several, the highest sequence number wins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.utils import sort_peer_ids_by_distance
from libp2p.peer.id import ID
from libp2p.records.validator import NamespacedValidator, Validator
from libp2p.tools.anyio_service import background_trio_service
from trio_typing import TaskStatus

from p2p.errors import RecordError
from p2p.liblogs import route_libp2p_logs
from p2p.records import MAX_RECORD_BYTES, SignedRecord, decode_record

log = logging.getLogger(__name__)
route_libp2p_logs()  # py-libp2p's records go through the application's logging (see p2p.liblogs)

K = 20  # replication / lookup width (Kademlia's k)
ALPHA = 3  # concurrent queries per lookup round
QUERY_TIMEOUT_S = 3.0
SEED_INTERVAL_S = 0.5
LOOKUP_DEADLINE_S = 5.0


def record_key(namespace: str, kind: str, peer_id: ID) -> str:
    return f"/{namespace}/{kind}/{peer_id}"


def parse_record_key(key: str, namespace: str) -> tuple[str, ID]:
    """Split ``/<namespace>/<kind>/<peer-id>``; raises :class:`RecordError` otherwise."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != "" or parts[1] != namespace or not parts[2]:
        raise RecordError(f"DHT key {key!r} is not /{namespace}/<kind>/<peer-id>")
    try:
        peer_id = ID.from_base58(parts[3])
    except Exception as exc:
        raise RecordError(f"DHT key {key!r} has an invalid peer id") from exc
    return parts[2], peer_id


class SignedRecordValidator(Validator):
    """DHT validator for one namespace of signed, expiring, sequenced records.

    ``validate`` refuses: unknown kinds, oversize or malformed values, bad signatures, a signer
    other than the peer named in the key, and expired records. ``select`` prefers the highest
    sequence number (invalid values lose); py-libp2p calls it as ``[new, old]`` for local puts and
    ``[old, new]`` for remote ones, and both read "index of the best value", so ties keep index 0.
    """

    def __init__(self, namespace: str, kinds: Iterable[str]) -> None:
        self.namespace = namespace
        self.kinds = frozenset(kinds)

    def decode(self, key: str, value: bytes) -> SignedRecord:
        kind, peer_id = parse_record_key(key, self.namespace)
        if kind not in self.kinds:
            raise RecordError(f"unknown record kind {kind!r}")
        return decode_record(value, expect_kind=kind, expect_peer=peer_id, max_bytes=MAX_RECORD_BYTES)

    def validate(self, key: str, value: bytes) -> None:
        self.decode(key, value)

    def select(self, key: str, values: list[bytes]) -> int:
        best, best_seq = 0, -1
        for i, value in enumerate(values):
            try:
                seq = self.decode(key, value).seq
            except RecordError:
                continue
            if seq > best_seq:
                best, best_seq = i, seq
        return best


class RecordDHT:
    """A DHT server plus record publication and network lookups."""

    def __init__(self, host: IHost, *, namespace: str, kinds: Iterable[str]) -> None:
        self.host = host
        self.validator = SignedRecordValidator(namespace, kinds)
        self.namespace = namespace
        self.kad = KadDHT(
            host,
            DHTMode.SERVER,
            validator=NamespacedValidator({namespace: self.validator}, strict_validation=True),
            validator_changed=True,
            strict_validation=True,
        )

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with background_trio_service(self.kad):
            task_status.started()
            await self._seed_routing_table()

    async def _seed_routing_table(self) -> None:
        """Add connected DHT peers to the routing table.

        py-libp2p only adds a peer once identify has told it that the peer serves the DHT
        protocol, which happens shortly after connecting; polling catches every new connection
        within a tick, whoever dialled.
        """
        while True:
            for peer_id in self.host.get_connected_peers():
                if not self.knows(peer_id):
                    await self.add_peer(peer_id)
            await trio.sleep(SEED_INTERVAL_S)

    def knows(self, peer_id: ID) -> bool:
        return self.kad.routing_table.peer_in_table(peer_id)

    async def add_peer(self, peer_id: ID) -> bool:
        """Add a connected peer to the routing table if it serves the DHT (after identify)."""
        try:
            return bool(await self.kad.add_peer(peer_id))
        except Exception as exc:  # py-libp2p raises assorted errors for half-identified peers
            log.debug("routing table refused peer", extra={"peer_id": str(peer_id), "error": str(exc)})
            return False

    def routing_table_size(self) -> int:
        return int(self.kad.get_routing_table_size())

    async def put(self, key: str, value: bytes) -> int:
        """Validate, store locally and at the k closest peers; returns how many peers took it."""
        record = self.validator.decode(key, value)
        key_bytes = key.encode("utf-8")
        self.kad.value_store.put(key_bytes, value, validity=float(record.expires_at))
        closest, _ = await self._lookup(key, collect=False)
        stored = 0

        async def store(peer_id: ID) -> None:
            nonlocal stored
            with trio.move_on_after(QUERY_TIMEOUT_S):
                try:
                    if await self.kad.value_store._store_at_peer(peer_id, key_bytes, value):
                        stored += 1
                except Exception as exc:  # one unreachable peer must not fail the put
                    log.debug("DHT store failed", extra={"peer_id": str(peer_id), "error": str(exc)})

        async with trio.open_nursery() as nursery:
            for peer_id in closest:
                nursery.start_soon(store, peer_id)
        return stored

    async def get(
        self, key: str, *, quorum: int = 3, owner_first: bool = True, deadline_s: float = LOOKUP_DEADLINE_S
    ) -> SignedRecord | None:
        """The freshest valid record under ``key`` found on the network (never a local copy).

        The peer named in the key holds its own latest record, so it is asked first when its
        addresses are known: one query instead of a walk. Otherwise (or if it does not answer)
        the walk stops once ``quorum`` valid copies were seen, the k closest peers it could find
        were queried, or ``deadline_s`` passed; the copy with the highest sequence number wins.
        """
        _, owner = parse_record_key(key, self.namespace)
        if owner_first and owner != self.host.get_id() and self._reachable(owner):
            with trio.move_on_after(QUERY_TIMEOUT_S):
                value = await self._query_value(owner, key)
                if value is not None:
                    return self.validator.decode(key, value)
        values: list[bytes] = []
        with trio.move_on_after(deadline_s):
            await self._lookup(key, collect=True, quorum=quorum, into=values)
        records = []
        for value in values:
            try:
                records.append(self.validator.decode(key, value))
            except RecordError:
                continue
        return max(records, key=lambda r: r.seq, default=None)

    def _reachable(self, peer_id: ID) -> bool:
        if peer_id in self.host.get_connected_peers():
            return True
        try:
            return bool(self.host.get_peerstore().addrs(peer_id))
        except Exception:  # py-libp2p raises for peers it has no addresses of
            return False

    async def _query_value(self, peer_id: ID, key: str) -> bytes | None:
        """Ask one peer for ``key``; its valid value, or None."""
        try:
            result = await self.kad.value_store._get_from_peer(
                peer_id, key.encode("utf-8"), return_record=True
            )
        except Exception as exc:  # unreachable or misbehaving peer
            log.debug("DHT query failed", extra={"peer_id": str(peer_id), "error": str(exc)})
            return None
        if isinstance(result, tuple):  # only when closer peers are asked for, which we do not
            result = result[0]
        value = result if isinstance(result, bytes) or result is None else getattr(result, "value", None)
        if not value:
            return None
        try:
            self.validator.validate(key, value)
        except RecordError:
            return None
        return bytes(value)

    async def _lookup(
        self, key: str, *, collect: bool, quorum: int = 0, into: list[bytes] | None = None
    ) -> tuple[list[ID], list[bytes]]:
        key_bytes = key.encode("utf-8")
        me = self.host.get_id()
        candidates: set[ID] = set(self.kad.routing_table.find_local_closest_peers(key_bytes, K))
        candidates.update(p for p in self.host.get_connected_peers() if self.knows(p))
        candidates.discard(me)
        queried: set[ID] = set()
        responded: set[ID] = set()
        values: list[bytes] = [] if into is None else into

        async def query(peer_id: ID) -> None:
            with trio.move_on_after(QUERY_TIMEOUT_S):
                try:
                    result = await self.kad.value_store._get_from_peer(
                        peer_id, key_bytes, return_record=True, return_closer_peers=True
                    )
                except Exception as exc:  # unreachable or misbehaving peer: skip it
                    log.debug("DHT query failed", extra={"peer_id": str(peer_id), "error": str(exc)})
                    return
                if not isinstance(result, tuple):
                    return
                record, closer = result
                responded.add(peer_id)
                candidates.update(p for p in closer if p != me)
                value = record if isinstance(record, bytes) or record is None else record.value
                if collect and value:
                    try:
                        self.validator.validate(key, value)
                    except RecordError as exc:
                        log.info(
                            "peer served an invalid record",
                            extra={"peer_id": str(peer_id), "error": str(exc)},
                        )
                        return
                    values.append(bytes(value))

        while not (collect and quorum and len(values) >= quorum):
            closest = sort_peer_ids_by_distance(key_bytes, list(candidates))[:K]
            batch = [p for p in closest if p not in queried][:ALPHA]
            if not batch:
                break
            queried.update(batch)
            async with trio.open_nursery() as nursery:
                for peer_id in batch:
                    nursery.start_soon(query, peer_id)
        return sort_peer_ids_by_distance(key_bytes, list(responded))[:K], values
