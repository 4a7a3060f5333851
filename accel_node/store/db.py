"""Opening the node database and bringing its schema up to date.

- WAL journal, so readers never block the writer and a crash loses at most the last transaction.
- Versioned migrations keyed on ``PRAGMA user_version``: each entry of :data:`MIGRATIONS` runs once,
  in order, inside a transaction, and a database newer than this code is refused. The migration
  functions are history: existing ``node.db`` files were built by them, so they are never edited,
  only appended to.
- :class:`Database` is synchronous and not thread-safe by itself; the repositories use it only from
  the one worker thread of :class:`accel_node.store.facade.AsyncStore`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import sqlite_utils

from accel_node.errors import StoreError

Migration = Callable[[sqlite_utils.Database], None]


def _migration_1(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("peers").create(
        {
            "peer_id": str,
            "addrs": str,  # JSON list of multiaddr strings
            "first_seen": float,
            "last_seen": float,
            "latency_ms": float,
            "source": str,  # how we learned of the peer: dial, inbound, bootstrap, mdns
        },
        pk="peer_id",
        not_null={"addrs", "first_seen", "last_seen", "source"},
    )


def _migration_2(db: sqlite_utils.Database) -> None:
    peers = db.table("peers")
    for column, kind in (
        ("cap", str),  # JSON body of the last verified capability record
        ("cap_seq", int),
        ("cap_verified_at", float),
        ("cap_expires_at", float),
        ("hb_seq", int),  # last presence heartbeat
        ("hb_at", float),
        ("hb_expires_at", float),
        ("load", str),  # JSON load from the newest of capability record and heartbeat
    ):
        peers.add_column(column, kind)
    db.table("peer_perf").create(
        {
            "peer_id": str,
            "rtt_ms": float,
            "upload_mbps": float,
            "download_mbps": float,
            "payload_bytes": int,
            "measured_at": float,
        },
        pk="peer_id",
    )
    db.table("hardware_profiles").create(
        {"fingerprint": str, "mode": str, "created_at": float, "data": str},
        pk=("fingerprint", "mode"),
        not_null={"created_at", "data"},
    )


def _migration_3(db: sqlite_utils.Database) -> None:
    db.table("publishers").create(
        {"key_id": str, "name": str, "public_key": bytes, "own": int, "added_at": float},
        pk="key_id",
        not_null={"name", "public_key", "own", "added_at"},
    )
    db.table("publishers").create_index(["name"], unique=True)
    db.table("model_versions").create(
        {"publisher": str, "name": str, "version": int, "accepted_at": float},
        pk=("publisher", "name"),
        not_null={"version", "accepted_at"},
    )


def _migration_4(db: sqlite_utils.Database) -> None:
    db.table("models").create(
        {"cid": str, "name": str, "version": int, "publisher": str, "size": int, "manifest": str,
         "local": int, "installed_at": float},
        pk="cid",
        not_null={"name", "version", "publisher", "size", "manifest", "local", "installed_at"},
    )  # fmt: skip


def _migration_5(db: sqlite_utils.Database) -> None:
    peers = db.table("peers")
    for column, kind in (
        ("penalties", int),  # penalties since last forgiven (see p2p.penalties)
        ("penalised_at", float),
        ("penalty_exclusions", int),
        ("penalty_reason", str),
    ):
        peers.add_column(column, kind)


def _migration_6(db: sqlite_utils.Database) -> None:
    db.table("model_analysis").create(
        {"cid": str, "dims": str, "data": str, "created_at": float},
        pk=("cid", "dims"),  # dims: canonical JSON of the symbolic dims the figures were evaluated at
        not_null={"data", "created_at"},
    )
    db.table("model_variants").create(
        {"cid": str, "parent": str, "variant": str, "accuracy": str, "size": int, "created_at": float},
        pk="cid",
        not_null={"parent", "variant", "size", "created_at"},
    )
    db.table("model_variants").create_index(["parent", "variant"], unique=True)
    db.table("measurements").create(
        {
            "id": int,
            "model_cid": str,
            "variant": str,
            "batch": int,
            "threads": int,
            "seq_len": int,
            "latency_ms": float,  # median
            "latency_p90_ms": float,
            "throughput": float,  # items (rows) per second
            "peak_rss_bytes": int,
            "fingerprint": str,  # hardware fingerprint of the machine that measured
            "source": str,  # bench | live
            "created_at": float,
        },
        pk="id",
        not_null={"model_cid", "variant", "batch", "latency_ms", "throughput", "source", "created_at"},
    )
    db.table("measurements").create_index(["model_cid", "variant", "batch"])


def _migration_7(db: sqlite_utils.Database) -> None:
    db.table("shard_plans").create(
        {"plan_cid": str, "model_cid": str, "raw": bytes, "planner": str, "created_at": float},
        pk="plan_cid",
        not_null={"model_cid", "raw", "planner", "created_at"},
    )
    db.table("shard_plans").create_index(["model_cid"])
    db.table("shard_served").create(
        {"plan_cid": str, "stage": int, "model_cid": str, "started_at": float},
        pk=("plan_cid", "stage"),
        not_null={"model_cid", "started_at"},
    )


def _migration_8(db: sqlite_utils.Database) -> None:
    # The audit log (accel_node.audit): append-only, each record chained to the one before by hash.
    db.table("audit_log").create(
        {"seq": int, "at": float, "kind": str, "protocol": str, "peer": str, "reason": str,
         "details": str, "prev": str, "hash": str},
        pk="seq",
        not_null={"at", "kind", "protocol", "reason", "details", "prev", "hash"},
    )  # fmt: skip
    db.table("audit_log").create_index(["kind", "seq"])
    # Where the kept chain starts once older records were pruned: the last pruned record's seq/hash.
    db.table("audit_anchor").create({"id": int, "seq": int, "hash": str}, pk="id", not_null={"seq", "hash"})
    # Heads of the chain signed with the node key: a rewritten or truncated chain fails against them.
    db.table("audit_checkpoints").create(
        {"seq": int, "hash": str, "at": float, "signature": bytes},
        pk="seq",
        not_null={"hash", "at", "signature"},
    )


def _migration_9(db: sqlite_utils.Database) -> None:
    db.table("policy_rules").create(
        {"subject": str, "action": str, "effect": str, "added_at": float},
        pk=("subject", "action"),
        not_null={"effect", "added_at"},
    )
    db.table("token_revocations").create({"token_id": str, "revoked_at": float}, pk="token_id")
    db.table("policy_membership").create(
        {"id": int, "raw": bytes, "version": int, "set_at": float}, pk="id", not_null={"raw", "version"}
    )
    db.table("assign_pins").create(
        {"cid": str, "assigner": str, "bytes": int, "pinned_at": float},
        pk="cid",
        not_null={"assigner", "bytes", "pinned_at"},
    )
    db.table("assign_pins").create_index(["assigner"])


def _migration_10(db: sqlite_utils.Database) -> None:
    """Performance prediction and adaptive tuning (issue 12)."""
    measurements = db.table("measurements")
    for column in (
        "dims",  # JSON: symbolic dim name -> value the run used
        "features",  # JSON: the predictor's workload features at this point (predict.types.Workload)
        "hardware",  # JSON: hardware features of the machine that measured (predict.types.HardwareFeatures)
        "op_times",  # JSON: ONNX operator type -> mean ms per run, from ONNX Runtime's profiler
    ):
        measurements.add_column(column, str)
    db.table("predictors").create(
        {
            "id": int,
            "kind": str,  # xgboost | kernel | roofline
            "created_at": float,
            "trained_on": int,  # measurements it learnt from
            "source": str,  # local, or import:<where it came from>
            "data": str,  # JSON export of the fitted predictor (never pickle)
            "metrics": str,  # JSON: held-out errors and interval coverage
        },
        pk="id",
        not_null={"kind", "created_at", "trained_on", "source", "data", "metrics"},
    )
    db.table("tuning_policies").create(
        {
            "cid": str,
            "variant": str,  # the variant the requests asked for (the tuner may serve another)
            "fingerprint": str,
            "state": str,  # JSON: sufficient statistics per arm, current choice
            "pinned": str,  # JSON arm the operator pinned, or NULL
            "updated_at": float,
        },
        pk=("cid", "variant", "fingerprint"),
        not_null={"state", "updated_at"},
    )


MIGRATIONS: list[Migration] = [
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
    _migration_7,
    _migration_8,
    _migration_9,
    _migration_10,
]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration] = MIGRATIONS) -> None:
    """Run the migrations the database at ``conn`` has not had yet, one transaction each.

    ``migrations`` is the full list in production; a test passes a prefix of it to build a database
    as an older accel-node left it.
    """
    db = sqlite_utils.Database(conn)
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"store {path} has schema version {current}, newer than this accel-node "
            f"understands ({SCHEMA_VERSION}); upgrade accel-node"
        )
    for version in range(current + 1, len(migrations) + 1):
        try:
            with conn:  # one transaction per migration
                conn.execute("BEGIN IMMEDIATE")
                migrations[version - 1](db)
                conn.execute(f"PRAGMA user_version={version}")
        except sqlite3.Error as exc:
            raise StoreError(f"migrating store {path} to version {version} failed: {exc}") from exc


def connect(path: Path, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open (creating if needed) the database file with the node's pragmas; not yet migrated."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open store {path}: {exc}") from exc
    return conn


class Database:
    """The one connection to the node database, opened and migrated to :data:`SCHEMA_VERSION`."""

    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        self.path = path
        self.conn = connect(path, synchronous=synchronous)
        try:
            migrate(self.conn, path)
        except BaseException:
            self.conn.close()
            raise
        self.db = sqlite_utils.Database(self.conn)

    @property
    def schema_version(self) -> int:
        return schema_version(self.conn)

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close the connection."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self.conn.close()
