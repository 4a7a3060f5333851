"""Request and response bodies of the core API, shared by the HTTP server and the client.

Response models ignore unknown fields when a client reads them (``extra="ignore"`` is pydantic's
default), so an older client keeps working against a newer daemon that adds fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    ok: bool


class Status(BaseModel):
    peer_id: str
    name: str
    version: str
    addrs: list[str] = Field(description="Dialable libp2p addresses of this node, ending in /p2p/<peer-id>")
    uptime_s: float
    connected_peers: int


class Peer(BaseModel):
    peer_id: str
    addrs: list[str]
    connected: bool = Field(description="Whether a libp2p connection is open now")
    latency_ms: float | None = Field(description="Last measured ping round trip; null until measured")
    measured_at: float | None = Field(description="Unix time of the last latency measurement")
    capability: dict[str, Any] | None = Field(
        default=None, description="Body of the peer's last verified capability record (hardware, load, ...)"
    )
    capability_seq: int | None = None
    capability_verified_at: float | None = Field(
        default=None, description="Unix time the capability record was last fetched and verified"
    )
    capability_expires_at: float | None = None
    last_heartbeat_at: float | None = Field(
        default=None, description="Unix time of the last presence heartbeat"
    )
    load: dict[str, Any] | None = None
    perf: dict[str, Any] | None = Field(
        default=None, description="Last /accel/perf/1.0.0 measurement: rtt_ms, upload_mbps, download_mbps"
    )
    penalties: int = Field(
        default=0, description="Penalties for provably bad data (bad blocks, malformed messages), unforgiven"
    )
    excluded: bool = Field(default=False, description="Whether protocols currently refuse to ask this peer")
    penalty_reason: str | None = Field(default=None, description="Reason of the latest penalty")


class Peers(BaseModel):
    peers: list[Peer]


class ConnectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    addr: str = Field(max_length=1024, description="Peer multiaddr ending in /p2p/<peer-id>")


class ConfigView(BaseModel):
    config: dict[str, Any]


class Hardware(BaseModel):
    fingerprint: str
    static: dict[str, Any] | None = Field(description="Facts read from the system (CPU, memory, GPUs, ...)")
    summary: dict[str, Any] = Field(description="What this node advertises to peers")
    profile: dict[str, Any] | None = Field(
        description="The measured profile for this hardware; null until profiled"
    )
    job: dict[str, Any] | None = Field(description="The current or last profiling run")


class ProfileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["quick", "full"] = "quick"


class ProfileJob(BaseModel):
    job: dict[str, Any] | None


class Perf(BaseModel):
    peer_id: str
    rtt_ms: float
    upload_mbps: float
    download_mbps: float
    payload_bytes: int
    measured_at: float


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str = Field(description="Stable machine-readable error code, e.g. invalid_cid, model_not_found")
    message: str = Field(description="What was wrong, for people")


class ErrorResponse(BaseModel):
    """The body of every error answer (4xx and 5xx)."""

    error: ErrorInfo
    detail: str = Field(description="The message again (kept for clients written before error.code)")


# -- keys and trust ------------------------------------------------------------------------------


class TrustedKey(BaseModel):
    name: str
    key_id: str
    public_key: str = Field(description="ed25519:<base64url>")
    own: bool = Field(description="A key this node holds the private half of (always trusted)")


class TrustedKeys(BaseModel):
    keys: list[TrustedKey]


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64)


class TrustRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    public_key: str = Field(max_length=128, description="ed25519:<base64url>")
    name: str = Field(max_length=64)


# -- audit log and API tokens ------------------------------------------------------------------


class AuditRecord(BaseModel):
    seq: int = Field(description="Position in the chain, from 1")
    at: float = Field(description="Unix time of the event")
    kind: str = Field(
        description="refused, limit, policy-denied, bad-signature, bad-content, cheating, "
        "token-used, penalised, model-load, key-change, trust-change, policy-change, "
        "api-token-rotated, audit-dropped, ..."
    )
    protocol: str = Field(description="The protocol that reported it (accel-node: the node itself)")
    peer: str | None
    reason: str
    details: dict[str, Any] = Field(description="Short scalar facts")
    prev: str = Field(description="Hex SHA-256 of the record before (zeros for the first)")
    hash: str = Field(description="Hex SHA-256 of this record's canonical encoding, prev included")


class AuditRecords(BaseModel):
    records: list[AuditRecord] = Field(description="Oldest first")
    head_seq: int = Field(description="Seq of the newest record written")
    dropped: int = Field(description="Events dropped since the daemon started (queue full)")


class AuditQuery(BaseModel):
    """The query of ``GET /v1/audit``: the ``limit`` newest records, or the first after ``after``."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=100, ge=1, le=1000)
    after: int | None = Field(default=None, ge=0, description="Only records with a higher seq, oldest first")
    kind: str | None = Field(default=None, max_length=64)


class AuditVerification(BaseModel):
    ok: bool
    records: int = Field(description="Records checked")
    anchor_seq: int = Field(description="Records up to this seq were pruned (retention); 0 if none")
    head_seq: int
    checkpoints: int = Field(description="Signed checkpoints checked")
    bad_seq: int | None = Field(default=None, description="The first record that does not fit")
    problem: str | None = None


class TokenRotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Literal["admin", "read"] = "admin"


class TokenRotated(BaseModel):
    scope: str
    path: str = Field(description="The token file, replaced (the token itself is never sent)")
    rotated_at: float


# -- policy --------------------------------------------------------------------------------------

PolicyAction = Literal["compute", "assign", "content", "learn", "capabilities"]


class PolicyRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = Field(max_length=128, description="A peer id, or role:member / role:any")
    action: PolicyAction
    effect: Literal["allow", "deny"]


class MembershipView(BaseModel):
    network: str
    version: int
    expires_at: int
    members: list[str]


class PolicyView(BaseModel):
    mode: Literal["open", "private"]
    peer_id: str = Field(description="This node's peer id (the subject its own tokens name)")
    issuer_key: str = Field(description="This node's identity key (ed25519:...): it issues tokens")
    open_actions: list[str] = Field(description="What every peer may do in open mode")
    member_actions: list[str] = Field(description="What members of the signed membership list may do")
    owner_key: str | None = Field(description="Network owner key that signs the membership list")
    issuer_keys: list[str] = Field(description="Other keys trusted to issue tokens")
    rules: list[PolicyRule]
    revoked: list[str] = Field(description="Ids (nonces, hex) of revoked capability tokens")
    membership: MembershipView | None
    tokens_presented: int = Field(description="Valid tokens peers presented to this node, held now")
    tokens_held: int = Field(description="Tokens this node holds and presents to peers")


class PolicyPut(BaseModel):
    """A change to the persistent policy: fields left out (null) stay as they are."""

    model_config = ConfigDict(extra="forbid")
    rules: list[PolicyRule] | None = Field(default=None, max_length=10_000, description="Replace all rules")
    revoke: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=1000, description="Token ids to revoke"
    )
    membership: str | None = Field(
        default=None,
        max_length=1_500_000,
        description="A signed membership list (accelmembers1:...); empty string removes the list",
    )


# -- models --------------------------------------------------------------------------------------


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: str = Field(max_length=4096, description="Directory on the daemon's machine holding one .onnx model")
    key: str = Field(max_length=64, description="Name of this node's publisher key to sign with")
    name: str | None = Field(default=None, max_length=128)
    version: int | None = Field(default=None, ge=0)


class FetchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cid: str = Field(max_length=256)


class ModelView(BaseModel):
    cid: str
    name: str
    version: int
    publisher: str
    size: int
    local: bool = Field(description="Published by this node (rather than fetched)")
    pinned: bool
    path: str = Field(description="Directory holding the verified files")
    installed_at: float
    manifest: dict[str, Any]


class ModelList(BaseModel):
    models: list[ModelView]


class FetchProgressView(BaseModel):
    cid: str = Field(description="The model's manifest CID (CIDv1, base32)")
    phase: str = Field(description="providers, manifest, blocks, verifying, installing, then done or failed")
    running: bool
    blocks_done: int = Field(description="Blocks fetched and stored by this fetch")
    bytes_done: int = Field(description="File bytes held so far (those present before the fetch included)")
    bytes_total: int | None = Field(description="Sum of the manifest's file sizes; null until it is known")
    files: int
    started_at: float
    finished_at: float | None
    error: str | None


class FetchProgressList(BaseModel):
    fetches: list[FetchProgressView]


class VariantRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variant: str = Field(max_length=16, description="int8 (dynamic quantisation) or fp16")


class BenchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batches: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default=[1, 2, 4, 8], min_length=1, max_length=16
    )
    threads: list[Annotated[int, Field(ge=0, le=256)]] = Field(
        default=[0], min_length=1, max_length=8, description="intra-op threads; 0 = one per physical core"
    )
    variants: list[str] = Field(default=["fp32"], min_length=1, max_length=3)
    repeats: int = Field(default=20, ge=1, le=1000)
    seq_len: int = Field(default=128, ge=1, le=65536, description="value of dynamic non-batch dims")


class InferOptions(BaseModel):
    """How to run one inference request (the query parameters of ``POST /v1/infer/{cid}``)."""

    model_config = ConfigDict(extra="forbid")
    variant: str = Field(default="fp32", max_length=16)
    threads: int | None = Field(default=None, ge=0, le=256)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    mode: Literal["auto", "local", "sharded"] = Field(
        default="auto",
        description="auto: locally when the model fits this node's memory budget, else sharded",
    )
    plan: str | None = Field(default=None, max_length=256, description="Shard plan CID (sharded)")


# -- shards --------------------------------------------------------------------------------------


class PlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cid: str = Field(max_length=256, description="Model CID (the model must be held by this node)")
    stages: int = Field(ge=1, le=64)
    peers: list[Annotated[str, Field(max_length=128)]] | None = Field(
        default=None,
        max_length=64,
        description="Peer ids to plan for, in stage order ('self' = this node); default: this node and the "
        "connected peers with the highest measured throughput",
    )
    assign: bool = Field(
        default=False,
        description="Ask each placed peer to serve its stage now (peers need [shard] accept_assignments)",
    )


class ServeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cid: str = Field(max_length=256, description="Model CID (held and verified by this node)")
    stage: int = Field(ge=0, le=1024)
    plan: str | None = Field(default=None, max_length=256, description="Plan CID; default: the newest plan")


class UnserveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: str = Field(max_length=256)
    stage: int = Field(ge=0, le=1024)
