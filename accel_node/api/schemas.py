"""Request and response bodies of the control API."""

from __future__ import annotations

from typing import Any

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
    latency_ms: float | None = Field(description="Last measured ping round trip; null until measured")
    measured_at: float | None = Field(description="Unix time of the last latency measurement")


class Peers(BaseModel):
    peers: list[Peer]


class ConnectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    addr: str = Field(max_length=1024, description="Peer multiaddr ending in /p2p/<peer-id>")


class ConfigView(BaseModel):
    config: dict[str, Any]


class ErrorBody(BaseModel):
    detail: str
