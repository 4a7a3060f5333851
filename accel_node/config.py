"""Typed, validated configuration loaded from TOML, with ``ACCEL_NODE_<SECTION>_<KEY>`` overrides.

Unknown keys and wrong types are errors that name the key (``[p2p] listen_addrs[0]: ...``); a
daemon never starts on a configuration it only half understood. The sections below are the single
source of truth: ``config.example.toml`` is rendered from their field descriptions by
:func:`render_example` (a test keeps the checked-in file equal to it).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from accel_node.errors import ConfigError
from p2p.addrs import is_loopback_host, parse_listen_addr, parse_peer_addr
from p2p.errors import InvalidAddressError

ENV_PREFIX = "ACCEL_NODE_"
MAX_CONFIG_BYTES = 1 << 20

LogLevel = Literal["debug", "info", "warning", "error"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NodeSection(_Section):
    """[node]: the daemon as a whole."""

    name: str = Field(
        default="",
        max_length=64,
        description="Human-readable name of this node; empty means the machine's host name.",
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="On SIGINT/SIGTERM, how long in-flight API requests may take to finish (s).",
    )


class P2PSection(_Section):
    """[p2p]: the libp2p host."""

    listen_addrs: list[str] = Field(
        default_factory=lambda: ["/ip4/0.0.0.0/tcp/4011"],
        min_length=1,
        description="TCP multiaddrs the libp2p host listens on (Noise + yamux). Port 0 picks a free port.",
    )
    bootstrap: list[str] = Field(
        default_factory=list,
        description="Peers to connect to at start and whenever the connection drops: "
        "/ip4/<addr>/tcp/<port>/p2p/<peer-id>.",
    )
    mdns: bool = Field(default=True, description="Find and connect to peers on the LAN with mDNS.")
    dial_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Give up connecting to a peer after this long (s)."
    )
    ping_interval_s: float = Field(
        default=15.0,
        ge=1,
        le=3600,
        description="How often to measure round-trip time to each peer (s).",
    )
    bootstrap_retry_s: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="Delay before redialling an unreachable bootstrap peer (s).",
    )
    auto_connect: bool = Field(
        default=True,
        description="Dial peers this node has learned of (DHT, heartbeats) while it has fewer "
        "connections than the midpoint of low_water and high_water.",
    )
    low_water: int = Field(default=32, ge=0, le=10000, description="Connection manager low watermark.")
    high_water: int = Field(
        default=96,
        ge=1,
        le=10000,
        description="Connection manager high watermark: prune connections above it.",
    )
    cap_refresh_s: float = Field(
        default=60.0,
        ge=1,
        le=86400,
        description="How often this node republishes its signed capability record in the DHT (s); "
        "each record is valid for twice this.",
    )
    presence_interval_s: float = Field(
        default=30.0,
        ge=0.5,
        le=3600,
        description="How often this node gossips a signed heartbeat on /accel/presence/1 (s); "
        "each heartbeat is valid for three times this.",
    )
    perf_interval_s: float = Field(
        default=600.0,
        ge=0,
        le=86400,
        description="How often to measure round-trip time and throughput to each connected peer over "
        "/accel/perf/1.0.0 (s); 0 measures only on demand.",
    )
    perf_payload_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        le=256 * 1024 * 1024,
        description="Bytes sent each way by a throughput measurement.",
    )

    @field_validator("listen_addrs")
    @classmethod
    def _check_listen(cls, value: list[str]) -> list[str]:
        for i, text in enumerate(value):
            try:
                parse_listen_addr(text)
            except InvalidAddressError as exc:
                raise ValueError(f"item {i}: {exc}") from exc
        return value

    @field_validator("high_water")
    @classmethod
    def _check_watermarks(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("low_water")
        if low is not None and value < low:
            raise ValueError(f"must be >= low_water ({low})")
        return value

    @field_validator("bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: list[str]) -> list[str]:
        for i, text in enumerate(value):
            try:
                parse_peer_addr(text)
            except InvalidAddressError as exc:
                raise ValueError(f"item {i}: {exc}") from exc
        return value


class ApiSection(_Section):
    """[api]: the local HTTP control API."""

    allow_remote: bool = Field(
        default=False,
        description="Permit a non-loopback [api] host. Every request still needs the bearer token.",
    )
    host: str = Field(
        default="127.0.0.1",
        description="Address the control API binds to. Loopback unless allow_remote = true.",
    )
    port: int = Field(
        default=0, ge=0, le=65535, description="TCP port of the control API; 0 picks a free port."
    )

    @field_validator("host")
    @classmethod
    def _loopback_unless_allowed(cls, value: str, info: ValidationInfo) -> str:
        if not info.data.get("allow_remote", False) and not is_loopback_host(value):
            raise ValueError(
                f"{value!r} is not a loopback address; set [api] allow_remote = true to expose the API"
            )
        return value


class StoreSection(_Section):
    """[store]: the local SQLite database."""

    path: str = Field(
        default="node.db", min_length=1, description="Database file, relative to the node home."
    )
    synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="SQLite synchronous mode: NORMAL (fast, safe with WAL) or FULL (survives power loss).",
    )


class AuditSection(_Section):
    """[audit]: the hash-chained audit log of security-relevant events (in the store)."""

    queue_size: int = Field(
        default=4096,
        ge=16,
        le=1_000_000,
        description="Events waiting to be written; beyond it events are dropped and counted.",
    )
    max_records: int = Field(
        default=1_000_000,
        ge=0,
        le=1_000_000_000,
        description="Records kept (the oldest are pruned; the chain stays verifiable); 0 = keep all.",
    )
    checkpoint_every: int = Field(
        default=1000, ge=1, le=1_000_000, description="Records between checkpoints signed with the node key."
    )


class ProfileSection(_Section):
    """[profile]: hardware self-profiling."""

    auto: Literal["quick", "full", "off"] = Field(
        default="quick",
        description="Profile at start when no profile exists for this hardware's fingerprint: "
        "quick (under a minute), full, or off.",
    )


class IpfsSection(_Section):
    """[ipfs]: where model content is stored and how it travels."""

    backend: Literal["embedded", "kubo"] = Field(
        default="embedded",
        description="Content backend: embedded = on-disk block store in the node home + Bitswap over libp2p; "
        "kubo = a Kubo (IPFS) node at kubo_api publishes and fetches the blocks (the node still keeps "
        "verified copies in its block store).",
    )
    kubo_api: str = Field(
        default="/ip4/127.0.0.1/tcp/5001",
        description="Multiaddr of the Kubo RPC API used by backend = kubo: /ip4/<addr>/tcp/<port> "
        "(or /ip6, /dns4, /dns6, /dns; optionally ending in /http or /https).",
    )
    store_max_bytes: int = Field(
        default=50 * 1024**3, ge=1024**2, description="Upper bound of the block store's size (bytes)."
    )

    @field_validator("kubo_api")
    @classmethod
    def _check_kubo_api(cls, value: str) -> str:
        from p2p.content.kubo_rpc import api_url

        try:
            api_url(value)
        except InvalidAddressError as exc:
            raise ValueError(str(exc)) from exc
        return value


class ModelsSection(_Section):
    """[models]: limits on the model packages this node accepts and publishes."""

    max_manifest_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest manifest accepted (bytes)."
    )
    max_file_bytes: int = Field(
        default=16 * 1024**3, ge=1024, description="Largest single model file accepted (bytes)."
    )
    publish_ttl_days: float = Field(
        default=365.0, gt=0, le=3650, description="Manifests this node publishes expire after this many days."
    )


class RuntimeSection(_Section):
    """[runtime]: ONNX Runtime sessions, dynamic batching and request limits of the inference service."""

    intra_op_threads: int = Field(
        default=0, ge=0, le=256, description="ORT intra-op threads per session; 0 = one per physical core."
    )
    inter_op_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="ORT inter-op threads (parallel execution when > 1); 0 = default.",
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        default="all", description="ORT graph optimisation level: disable, basic, extended or all."
    )
    memory_budget_bytes: int = Field(
        default=2 * 1024**3,
        ge=1 << 20,
        description="Cached sessions are evicted (least recently used first) beyond this estimated memory.",
    )
    max_batch: int = Field(default=32, ge=1, le=4096, description="Most rows merged into one batch.")
    max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="How long a request may wait for others to batch with while a worker is free (ms); "
        "0 batches only what queues while workers are busy.",
    )
    max_queue: int = Field(
        default=256, ge=1, le=100_000, description="Waiting requests per model and variant; beyond it: 429."
    )
    request_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Default per-request timeout, queueing included (s); then 504.",
    )
    concurrency: int = Field(
        default=1, ge=1, le=64, description="ORT runs executing at once on this node, all models together."
    )
    max_body_bytes: int = Field(default=64 * 1024**2, ge=1024, description="Largest inference request body.")
    max_json_bytes: int = Field(
        default=4 * 1024**2, ge=1024, description="Largest JSON inference request body."
    )
    max_elements: int = Field(
        default=16 * 1024**2, ge=1, description="Most tensor elements in a binary request."
    )
    max_json_elements: int = Field(
        default=1024**2, ge=1, description="Most tensor elements in a JSON request."
    )
    sample_rate: float = Field(
        default=0.01, ge=0, le=1, description="Fraction of executed batches stored as live measurements."
    )
    resolve_cache_s: float = Field(
        default=5.0, ge=0, le=3600, description="How long a model's path and signature are cached (s)."
    )


class ShardSection(_Section):
    """[shard]: sharded (pipeline) inference across peers."""

    bulk_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="TCP port of bulk channels, on the IPs of [p2p] listen_addrs; 0 = random.",
    )
    spot_check_p: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Audit probability per request and stage: after the answer, the requester checks "
        "a stage's signed receipt against the tensors it retained and re-executes it (locally or on "
        "another replica). A replica not yet proven by an audit is always audited; 0 turns audits off.",
    )
    retention_bytes: int = Field(
        default=64 << 20,
        ge=0,
        le=1 << 34,
        description="Bytes of recent stage inputs/outputs a stage server keeps for audits; 0 = none.",
    )
    retention_s: float = Field(
        default=60.0, ge=0, le=3600, description="How long a stage server keeps them for audits (s)."
    )
    audit_concurrency: int = Field(
        default=4, ge=1, le=64, description="Audits a requester runs at once (in the background)."
    )
    micro_batch: int = Field(
        default=0,
        ge=0,
        le=4096,
        description="Rows per micro-batch in the pipeline; 0 = the whole batch at once.",
    )
    compress_fp16: bool = Field(
        default=False, description="Send float32 activations as float16 between stages."
    )
    hop_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="Per remaining stage: how long one attempt may take (s)."
    )
    accept_assignments: bool = Field(
        default=False,
        description="Serve the stages a planning peer assigns (plan verified against the local model).",
    )
    stage_in_flight: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="RUNs one served stage holds at once (all peers); beyond: busy.",
    )
    peer_in_flight: int = Field(
        default=16,
        ge=1,
        le=4096,
        description="RUNs one upstream peer may have in flight here (all stages); beyond: busy.",
    )
    total_in_flight: int = Field(
        default=256, ge=1, le=65536, description="RUNs in flight here from all peers; beyond: busy."
    )
    peer_queued_bytes: int = Field(
        default=256 * 1024**2,
        ge=1024**2,
        le=64 * 1024**3,
        description="Tensor bytes of one peer's RUNs in flight here; beyond: busy.",
    )
    total_queued_bytes: int = Field(
        default=1024**3, ge=1024**2, le=256 * 1024**3, description="Tensor bytes of all RUNs in flight here."
    )
    peer_reassembly_bytes: int = Field(
        default=256 * 1024**2,
        ge=1024**2,
        le=64 * 1024**3,
        description="Bytes of one peer's multi-part messages being reassembled; beyond: busy.",
    )
    total_reassembly_bytes: int = Field(
        default=1024**3, ge=1024**2, le=256 * 1024**3, description="Bytes being reassembled for all peers."
    )
    peer_channels: int = Field(
        default=16, ge=1, le=4096, description="shard/1 channels one peer may hold open to this node."
    )
    total_channels: int = Field(default=256, ge=1, le=65536, description="shard/1 channels from all peers.")
    max_ttl_s: float = Field(
        default=3600.0,
        gt=0,
        le=3600,
        description="Cap of a RUN's time to live (s); also bounded by (stages left + 1) x hop_timeout_s.",
    )


class BulkSection(_Section):
    """[bulk]: what peers may hold on the bulk port (reachable from the network, bounded before and
    after the handshake; see p2p/bulk/limits.py). The port itself is [shard] bulk_port."""

    handshake_timeout_s: float = Field(
        default=3.0, gt=0, le=60, description="Time a new bulk connection has to prove its ticket (s)."
    )
    pending_handshakes_per_ip: int = Field(
        default=8, ge=1, le=4096, description="Unproved bulk connections one remote IP may hold."
    )
    pending_handshakes: int = Field(
        default=64, ge=1, le=65536, description="Unproved bulk connections in total."
    )
    tickets_per_peer: int = Field(
        default=8, ge=1, le=4096, description="Granted, unredeemed bulk channel tickets per peer."
    )
    tickets: int = Field(default=256, ge=1, le=65536, description="Granted, unredeemed tickets in total.")
    ticket_ttl_s: float = Field(
        default=5.0, gt=0, le=60, description="How long a granted bulk channel ticket stays valid (s)."
    )
    channels_per_peer: int = Field(
        default=32, ge=1, le=4096, description="Bulk channels one peer may have open to this node."
    )
    channels: int = Field(default=256, ge=1, le=65536, description="Bulk channels open in total.")
    idle_timeout_s: float = Field(
        default=600.0,
        gt=0,
        le=86400,
        description="Close a served bulk channel with no frame either way for this long (s).",
    )

    @field_validator("pending_handshakes", "tickets", "channels")
    @classmethod
    def _total_covers_share(cls, value: int, info: ValidationInfo) -> int:
        share = {"pending_handshakes": "pending_handshakes_per_ip"}.get(
            str(info.field_name), f"{info.field_name}_per_peer"
        )
        per = info.data.get(share)
        if per is not None and value < per:
            raise ValueError(f"must be >= {share} ({per})")
        return value


PolicyAction = Literal["compute", "assign", "content", "learn", "capabilities"]
ED25519_KEY_PATTERN = r"^ed25519:[A-Za-z0-9_-]{43}$"


def _safe_open_actions() -> list[PolicyAction]:
    return ["content", "capabilities"]


def _all_actions() -> list[PolicyAction]:
    return ["compute", "assign", "content", "learn", "capabilities"]


class PolicySection(_Section):
    """[policy]: who may use this node for what (see accel_node.policy)."""

    mode: Literal["open", "private"] = Field(
        default="open",
        description="open: any peer gets open_actions; private: only members, allow rules and token holders "
        "get anything.",
    )
    open_actions: list[PolicyAction] = Field(
        default_factory=_safe_open_actions,
        max_length=5,
        description="Actions every peer may perform in open mode (compute, assign, content, learn, "
        "capabilities). The safe default serves content and capabilities only.",
    )
    member_actions: list[PolicyAction] = Field(
        default_factory=_all_actions,
        max_length=5,
        description="Actions the members of the signed membership list may perform.",
    )
    owner_key: str = Field(
        default="",
        pattern=r"^(ed25519:[A-Za-z0-9_-]{43})?$",
        description="Public key (ed25519:<base64url>) of the network owner, who signs the membership list; "
        "empty: no membership list is accepted.",
    )
    issuer_keys: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Public keys (ed25519:<base64url>) trusted to issue capability tokens, besides this "
        "node's own identity key.",
    )
    grants_file: str = Field(
        default="grants.txt",
        max_length=4096,
        description="File (relative to the home) of the capability tokens this node holds and presents to "
        "peers, one per line ('accel-node policy token add').",
    )
    max_grants_per_peer: int = Field(
        default=8, ge=1, le=64, description="Tokens remembered per presenting peer (4096 in total)."
    )
    assign_quota_bytes: int = Field(
        default=64 << 20,
        ge=0,
        le=1 << 40,
        description="Content (shard plans) one assigning peer may make this node fetch and pin, in bytes.",
    )

    @field_validator("issuer_keys")
    @classmethod
    def _issuer_keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if not re.fullmatch(ED25519_KEY_PATTERN, key):
                raise ValueError(f"{key[:60]!r} is not an ed25519:<base64url> public key")
        return value


class PredictSection(_Section):
    """[predict]: performance prediction from this node's own measurements (accel_node.predict)."""

    enabled: bool = Field(
        default=True, description="Train predictors from measurements and answer predictions."
    )
    min_samples: int = Field(
        default=40,
        ge=10,
        le=1_000_000,
        description="Measurements needed before a learnt predictor replaces the roofline baseline.",
    )
    retrain_after: int = Field(
        default=50,
        ge=1,
        le=1_000_000,
        description="New measurements since the last training that trigger a retrain.",
    )
    check_interval_s: float = Field(
        default=60.0, ge=1, le=86_400, description="How often the node checks whether to retrain (s)."
    )
    calibration_fraction: float = Field(
        default=0.2,
        ge=0.05,
        le=0.5,
        description="Share of measurements held out to calibrate the prediction intervals (split conformal).",
    )
    profile_ops: bool = Field(
        default=True,
        description="Benchmarks also record per-operator timings from ONNX Runtime's profiler (one extra run "
        "per point), for the kernel-level predictor.",
    )
    keep_versions: int = Field(
        default=5, ge=1, le=1000, description="Trained predictor versions kept in the store."
    )
    max_import_bytes: int = Field(
        default=16 * 1024**2, ge=1024, le=1 << 30, description="Largest predictor export accepted for import."
    )


class TuneSection(_Section):
    """[tune]: online tuning of batch size, batch wait, threads and precision per model (accel_node.tune)."""

    enabled: bool = Field(default=True, description="Tune serving configuration from live measurements.")
    slo_p95_ms: float = Field(
        default=100.0,
        gt=0,
        le=600_000,
        description="p95 latency objective per request, queueing included (ms).",
    )
    max_violation_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Most share of requests over the SLO that exploring configurations may cause.",
    )
    accuracy_tolerance: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="A precision variant is eligible only if its measured max abs output difference "
        "is within this.",
    )
    batch_choices: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32, 64],
        min_length=1,
        max_length=32,
        description="Max-batch values the tuner chooses among.",
    )
    wait_ms_choices: list[float] = Field(
        default_factory=lambda: [0.0, 1.0, 2.0, 5.0, 10.0],
        min_length=1,
        max_length=32,
        description="Max batch wait values (ms) the tuner chooses among (AIMD adjusts within them).",
    )
    thread_choices: list[int] = Field(
        default_factory=list,
        max_length=32,
        description="Intra-op thread counts the tuner chooses among; empty = 1, half and all physical cores.",
    )
    epoch_s: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="How long one configuration serves before its reward is scored (s).",
    )
    min_requests: int = Field(
        default=20,
        ge=1,
        le=1_000_000,
        description="Requests an epoch needs before it counts as a measurement.",
    )
    persist_interval_s: float = Field(
        default=30.0, ge=1, le=86_400, description="How often the tuning policies are saved to the store (s)."
    )


class LogSection(_Section):
    """[log]: logging."""

    level: LogLevel = Field(default="info", description="Log level: debug, info, warning or error.")
    format: Literal["text", "json"] = Field(
        default="text", description="text for people, json for one JSON object per line."
    )
    libp2p_level: LogLevel = Field(
        default="warning", description="Log level of py-libp2p's own (noisy) loggers."
    )


class Config(_Section):
    """The whole configuration of a node."""

    node: NodeSection = Field(default_factory=NodeSection)
    p2p: P2PSection = Field(default_factory=P2PSection)
    api: ApiSection = Field(default_factory=ApiSection)
    store: StoreSection = Field(default_factory=StoreSection)
    audit: AuditSection = Field(default_factory=AuditSection)
    profile: ProfileSection = Field(default_factory=ProfileSection)
    ipfs: IpfsSection = Field(default_factory=IpfsSection)
    models: ModelsSection = Field(default_factory=ModelsSection)
    runtime: RuntimeSection = Field(default_factory=RuntimeSection)
    shard: ShardSection = Field(default_factory=ShardSection)
    bulk: BulkSection = Field(default_factory=BulkSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    predict: PredictSection = Field(default_factory=PredictSection)
    tune: TuneSection = Field(default_factory=TuneSection)
    log: LogSection = Field(default_factory=LogSection)


SECTIONS: dict[str, type[_Section]] = {
    name: field.annotation  # type: ignore[misc]
    for name, field in Config.model_fields.items()
}


def _format_loc(loc: tuple[int | str, ...]) -> str:
    if not loc:
        return "(top level)"
    if len(loc) == 1:
        return f"[{loc[0]}]"
    key = f"[{loc[0]}]" if len(loc) > 1 else str(loc[0])
    for part in loc[1:]:
        key += f"[{part}]" if isinstance(part, int) else f" {part}" if key.endswith("]") else f".{part}"
    return key


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown section" if len(loc) == 1 else "unknown key"
        problems.append((_format_loc(loc), message))
    return problems


def env_overrides(
    environ: Mapping[str, str],
) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
    """Config values from ``ACCEL_NODE_<SECTION>_<KEY>`` variables.

    Values are parsed as TOML (``8080``, ``true``, ``["/ip4/..."]``); keys whose type is a string
    take the raw text. Variables naming no section (``ACCEL_NODE_HOME``) are not config.
    """
    values: dict[str, dict[str, Any]] = {}
    problems: list[tuple[str, str]] = []
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            continue
        key = rest[len(section) + 1 :]
        field = SECTIONS[section].model_fields.get(key)
        if field is None:
            problems.append((var, f"unknown key {key!r} in section [{section}]"))
            continue
        if field.annotation is str:
            value: Any = raw
        else:
            try:
                value = tomllib.loads(f"v = {raw}")["v"]
            except tomllib.TOMLDecodeError:
                value = raw
        values.setdefault(section, {})[key] = value
    return values, problems


def parse_config(data: Mapping[str, Any], *, source: str, environ: Mapping[str, str] | None = None) -> Config:
    """Validate ``data`` (a parsed TOML document) merged with environment overrides."""
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    overrides, problems = env_overrides(os.environ if environ is None else environ)
    if problems:
        raise ConfigError("environment", problems)
    for section, values in overrides.items():
        current = merged.get(section, {})
        if isinstance(current, dict):
            merged[section] = {**current, **values}
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        where = source + (" + environment" if overrides else "")
        raise ConfigError(where, _problems(exc)) from exc


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate the TOML file at ``path``; a missing file means all defaults."""
    data: dict[str, Any] = {}
    if path.exists():
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(str(path), [("(file)", f"cannot read: {exc.strerror}")]) from exc
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(str(path), [("(file)", f"larger than {MAX_CONFIG_BYTES} bytes")])
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(str(path), [("(file)", f"not valid TOML: {exc}")]) from exc
    return parse_config(data, source=str(path), environ=environ)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def render_example() -> str:
    """The documented example configuration: every key, its default and what it means."""
    lines = [
        "# accel-node configuration. Every key is optional; the values shown are the defaults.",
        "# Any key can be overridden with ACCEL_NODE_<SECTION>_<KEY>, e.g. ACCEL_NODE_API_PORT=8080",
        "# (values are parsed as TOML: ACCEL_NODE_P2P_BOOTSTRAP='[\"/ip4/10.0.0.2/tcp/4011/p2p/12D3...\"]').",
        "# Unknown keys and wrong types are errors.",
    ]
    defaults = Config()
    for name, section_type in SECTIONS.items():
        lines += ["", f"[{name}]"]
        section = getattr(defaults, name)
        for key, field in section_type.model_fields.items():
            lines.append(f"# {field.description}")
            lines.append(f"{key} = {_toml_value(getattr(section, key))}")
    return "\n".join(lines) + "\n"


def config_as_dict(config: Config) -> dict[str, Any]:
    """The configuration as plain data (for ``config show`` and the API)."""
    return config.model_dump(mode="json")
