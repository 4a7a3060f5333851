"""Request and response bodies of the control API."""

from __future__ import annotations

from typing import Any, Literal

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


class ErrorBody(BaseModel):
    detail: str


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
