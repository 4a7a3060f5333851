"""The store for async code: one facade over every repository.

Every call runs on a worker thread through a one-slot limiter, so the event loop never waits on
disk and the single SQLite connection is never used by two threads at once (which is also why the
repositories' read-check-write sequences need no locking). Nothing outside this package touches the
repositories or the connection: callers ``await store.get_peer(...)`` and get typed rows back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import trio

from accel_node.store.audit import AuditRecords, AuditRow, CheckpointRow
from accel_node.store.db import Database
from accel_node.store.measurements import MeasurementRow, Measurements
from accel_node.store.meta import Meta, Profiles
from accel_node.store.models import ModelRow, Models
from accel_node.store.peers import PeerRecord, Peers, Replay
from accel_node.store.policy import PolicyRepo, RevocationRow, RuleRow
from accel_node.store.shards import PlanRow, ServedRow, Shards
from accel_node.store.trust import PublisherRow, Trust
from accel_node.store.variants import Derived, VariantRow

P = ParamSpec("P")
T = TypeVar("T")


class AsyncStore:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._limiter = trio.CapacityLimiter(1)
        self._peers = Peers(database)
        self._meta = Meta(database)
        self._profiles = Profiles(database)
        self._trust = Trust(database)
        self._models = Models(database)
        self._derived = Derived(database)
        self._measurements = Measurements(database)
        self._shards = Shards(database)
        self._audit = AuditRecords(database)
        self._policy = PolicyRepo(database)

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "NORMAL") -> AsyncStore:
        """Open (creating and migrating as needed) the database at ``path``."""
        database = await trio.to_thread.run_sync(lambda: Database(path, synchronous=synchronous))
        return cls(database)

    @property
    def path(self) -> Path:
        return self._database.path

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._limiter)

    async def schema_version(self) -> int:
        return await self._run(lambda: self._database.schema_version)

    async def close(self) -> None:
        """Flush and close; shielded, so that shutdown cannot interrupt the checkpoint."""
        with trio.CancelScope(shield=True):
            await self._run(self._database.close)

    # -- peers ---------------------------------------------------------------------------------

    async def upsert_peer(
        self, peer_id: str, addrs: list[str], *, source: str, latency_ms: float | None = None
    ) -> None:
        await self._run(self._peers.upsert, peer_id, addrs, source=source, latency_ms=latency_ms)

    async def get_peer(self, peer_id: str) -> PeerRecord | None:
        return await self._run(self._peers.get, peer_id)

    async def list_peers(self) -> list[PeerRecord]:
        return await self._run(self._peers.all)

    async def record_capability(
        self, peer_id: str, body: dict[str, Any], *, seq: int, expires_at: float, addrs: list[str]
    ) -> Replay | None:
        return await self._run(
            self._peers.record_capability, peer_id, body, seq=seq, expires_at=expires_at, addrs=addrs
        )

    async def record_heartbeat(
        self, peer_id: str, *, seq: int, expires_at: float, load: dict[str, Any], addrs: list[str]
    ) -> Replay | None:
        return await self._run(
            self._peers.record_heartbeat, peer_id, seq=seq, expires_at=expires_at, load=load, addrs=addrs
        )

    async def record_penalty(
        self, peer_id: str, *, count: int, at: float, exclusions: int, reason: str
    ) -> None:
        await self._run(
            self._peers.record_penalty, peer_id, count=count, at=at, exclusions=exclusions, reason=reason
        )

    async def record_perf(self, peer_id: str, perf: dict[str, Any]) -> None:
        await self._run(self._peers.record_perf, peer_id, perf)

    async def expire_records(self, now: float) -> list[str]:
        return await self._run(self._peers.expire_records, now)

    # -- node meta and hardware profiles -------------------------------------------------------

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(self._meta.set, key, value)

    async def get_meta(self, key: str) -> str | None:
        return await self._run(self._meta.get, key)

    async def save_profile(
        self, fingerprint: str, mode: str, created_at: float, data: dict[str, Any]
    ) -> None:
        await self._run(self._profiles.save, fingerprint, mode, created_at, data)

    async def latest_profile(self, fingerprint: str) -> dict[str, Any] | None:
        return await self._run(self._profiles.latest, fingerprint)

    # -- trusted publishers and accepted versions ----------------------------------------------

    async def add_publisher(self, key_id: str, name: str, public_key: bytes, *, own: bool) -> None:
        await self._run(self._trust.add_publisher, key_id, name, public_key, own=own)

    async def list_publishers(self) -> list[PublisherRow]:
        return await self._run(self._trust.list_publishers)

    async def remove_publisher(self, name_or_key_id: str) -> PublisherRow | None:
        return await self._run(self._trust.remove_publisher, name_or_key_id)

    async def publisher_key(self, key_id: str) -> bytes | None:
        return await self._run(self._trust.publisher_key, key_id)

    async def publisher_keys(self) -> dict[str, bytes]:
        return await self._run(self._trust.publisher_keys)

    async def highest_model_version(self, publisher: str, name: str) -> int | None:
        return await self._run(self._trust.highest_model_version, publisher, name)

    async def model_versions(self) -> dict[tuple[str, str], int]:
        return await self._run(self._trust.model_versions)

    async def record_model_version(self, publisher: str, name: str, version: int) -> None:
        await self._run(self._trust.record_model_version, publisher, name, version)

    # -- installed models ----------------------------------------------------------------------

    async def record_model(self, cid: str, manifest: dict[str, Any], *, local: bool) -> None:
        await self._run(self._models.record, cid, manifest, local=local)

    async def get_model(self, cid: str) -> ModelRow | None:
        return await self._run(self._models.get, cid)

    async def list_models(self) -> list[ModelRow]:
        return await self._run(self._models.all)

    async def delete_model(self, cid: str) -> None:
        await self._run(self._models.delete, cid)

    # -- analyses, variants, measurements ------------------------------------------------------

    async def save_analysis(self, cid: str, dims: dict[str, int], data: dict[str, Any]) -> None:
        await self._run(self._derived.save_analysis, cid, dims, data)

    async def get_analysis(self, cid: str, dims: dict[str, int]) -> dict[str, Any] | None:
        return await self._run(self._derived.get_analysis, cid, dims)

    async def save_variant(
        self, cid: str, *, parent: str, variant: str, accuracy: dict[str, Any], size: int
    ) -> None:
        await self._run(
            self._derived.save_variant, cid, parent=parent, variant=variant, accuracy=accuracy, size=size
        )

    async def list_variants(self, parent: str) -> list[VariantRow]:
        return await self._run(self._derived.list_variants, parent)

    async def get_variant(self, parent: str, variant: str) -> VariantRow | None:
        return await self._run(self._derived.get_variant, parent, variant)

    async def delete_model_data(self, cid: str) -> None:
        await self._run(self._derived.delete_model_data, cid)

    async def record_measurements(self, rows: list[dict[str, Any]]) -> None:
        await self._run(self._measurements.record, rows)

    async def list_measurements(
        self, model_cid: str | None = None, *, limit: int = 1000
    ) -> list[MeasurementRow]:
        return await self._run(self._measurements.all, model_cid, limit=limit)

    async def count_measurements(self) -> int:
        return await self._run(self._measurements.count)

    async def measurements_since(self, after_id: int, *, limit: int = 100_000) -> list[MeasurementRow]:
        return await self._run(self._measurements.since, after_id, limit=limit)

    # -- shard plans and served stages ---------------------------------------------------------

    async def save_plan(self, plan_cid: str, *, model_cid: str, raw: bytes, planner: str) -> None:
        await self._run(self._shards.save_plan, plan_cid, model_cid=model_cid, raw=raw, planner=planner)

    async def forget_plan(self, plan_cid: str) -> None:
        await self._run(self._shards.forget_plan, plan_cid)

    async def get_plan(self, plan_cid: str) -> PlanRow | None:
        return await self._run(self._shards.get_plan, plan_cid)

    async def list_plans(self, model_cid: str | None = None) -> list[PlanRow]:
        return await self._run(self._shards.list_plans, model_cid)

    async def set_served(self, plan_cid: str, stage: int, *, model_cid: str, served: bool) -> None:
        await self._run(self._shards.set_served, plan_cid, stage, model_cid=model_cid, served=served)

    async def list_served(self) -> list[ServedRow]:
        return await self._run(self._shards.list_served)

    # -- audit log (written by accel_node.audit only) -----------------------------------------

    async def append_audit(self, rows: list[AuditRow]) -> None:
        await self._run(self._audit.append, rows)

    async def audit_head(self) -> AuditRow | None:
        return await self._run(self._audit.head)

    async def audit_anchor(self) -> tuple[int, str] | None:
        return await self._run(self._audit.anchor)

    async def audit_after(self, seq: int, limit: int, kind: str | None = None) -> list[AuditRow]:
        return await self._run(self._audit.after, seq, limit, kind)

    async def audit_newest(self, limit: int, kind: str | None = None) -> list[AuditRow]:
        return await self._run(self._audit.newest, limit, kind)

    async def audit_count(self) -> int:
        return await self._run(self._audit.count)

    async def prune_audit(self, keep: int) -> int:
        return await self._run(self._audit.prune, keep)

    async def add_audit_checkpoint(self, checkpoint: CheckpointRow) -> None:
        await self._run(self._audit.add_checkpoint, checkpoint)

    async def audit_checkpoints(self) -> list[CheckpointRow]:
        return await self._run(self._audit.checkpoints)

    # -- policy: rules, revocations, membership, assignment quotas ------------------------------

    async def policy_rules(self) -> list[RuleRow]:
        return await self._run(self._policy.rules)

    async def replace_policy_rules(self, rules: list[tuple[str, str, str]]) -> None:
        await self._run(self._policy.replace_rules, rules)

    async def token_revocations(self) -> list[RevocationRow]:
        return await self._run(self._policy.revocations)

    async def revoke_tokens(self, token_ids: list[str], *, forget_before: float) -> None:
        await self._run(self._policy.revoke, token_ids, forget_before=forget_before)

    async def membership(self) -> bytes | None:
        return await self._run(self._policy.membership)

    async def set_membership(self, raw: bytes | None, version: int = 0) -> None:
        await self._run(self._policy.set_membership, raw, version)

    async def assigned_bytes(self, assigner: str) -> int:
        return await self._run(self._policy.assigned_bytes, assigner)

    async def record_assigned(self, cid: str, assigner: str, nbytes: int) -> None:
        await self._run(self._policy.record_assigned, cid, assigner, nbytes)
