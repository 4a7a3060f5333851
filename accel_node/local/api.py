""":class:`LocalApi`: the node's services behind the core API, domain by domain."""

from __future__ import annotations

from dataclasses import dataclass

from accel_node.audit import AuditLog
from accel_node.capability import CapabilityService
from accel_node.config import Config
from accel_node.core.contract import CoreApi
from accel_node.hardware import HardwareService
from accel_node.home import ApiTokens
from accel_node.local.audit import LocalAudit
from accel_node.local.hardware import LocalHardware
from accel_node.local.inference import LocalInference
from accel_node.local.keys import LocalKeys
from accel_node.local.models import LocalModels
from accel_node.local.node import LocalNode
from accel_node.local.peers import LocalPeers
from accel_node.local.policy import LocalPolicy
from accel_node.local.shards import LocalShards
from accel_node.metrics import NodeMetrics
from accel_node.models.service import ModelService
from accel_node.models.trust import TrustStore
from accel_node.network import PeerNetwork
from accel_node.policy import PolicyService
from accel_node.runtime.library import ModelLibrary
from accel_node.runtime.service import InferenceService
from accel_node.shard.service import ShardService
from accel_node.store import AsyncStore


@dataclass(frozen=True)
class LocalServices:
    """The services the core API is implemented over (built by the node)."""

    network: PeerNetwork
    capability: CapabilityService
    hardware: HardwareService
    store: AsyncStore
    trust: TrustStore
    models: ModelService
    inference: InferenceService
    library: ModelLibrary
    shards: ShardService
    policy: PolicyService
    config: Config
    metrics: NodeMetrics
    name: str
    audit: AuditLog
    tokens: ApiTokens


class LocalApi:
    """The core API of this node, in process."""

    def __init__(self, services: LocalServices) -> None:
        s = services
        self.services = services
        self._node = LocalNode(s.network, s.config, s.metrics, s.name, tokens=s.tokens, audit=s.audit)
        self._peers = LocalPeers(s.network, s.capability, s.store)
        self._hardware = LocalHardware(s.hardware)
        self._keys = LocalKeys(s.trust, s.audit)
        self._audit = LocalAudit(s.audit)
        self._models = LocalModels(s.models, s.library, s.inference, s.config)
        self._inference = LocalInference(s.inference, s.shards, s.store)
        self._shards = LocalShards(s.shards)
        self._policy = LocalPolicy(s.policy, s.audit)

    @property
    def node(self) -> LocalNode:
        return self._node

    @property
    def peers(self) -> LocalPeers:
        return self._peers

    @property
    def hardware(self) -> LocalHardware:
        return self._hardware

    @property
    def keys(self) -> LocalKeys:
        return self._keys

    @property
    def audit(self) -> LocalAudit:
        return self._audit

    @property
    def models(self) -> LocalModels:
        return self._models

    @property
    def inference(self) -> LocalInference:
        return self._inference

    @property
    def shards(self) -> LocalShards:
        return self._shards

    @property
    def policy(self) -> LocalPolicy:
        return self._policy


def as_core(api: LocalApi) -> CoreApi:
    """``api`` as the contract; mypy checks here that the in-process API implements every domain."""
    return api
