"""What the API handlers may use; built by the node."""

from __future__ import annotations

from dataclasses import dataclass

from accel_node.capability import CapabilityService
from accel_node.config import Config
from accel_node.hardware import HardwareService
from accel_node.metrics import NodeMetrics
from accel_node.models.service import ModelService
from accel_node.models.trust import TrustStore
from accel_node.network import PeerNetwork
from accel_node.runtime.library import ModelLibrary
from accel_node.runtime.service import InferenceService
from accel_node.shard.service import ShardService
from accel_node.store import AsyncStore


@dataclass(frozen=True)
class ApiContext:
    """The services behind the control API."""

    network: PeerNetwork
    capability: CapabilityService
    hardware: HardwareService
    store: AsyncStore
    trust: TrustStore
    models: ModelService
    inference: InferenceService
    library: ModelLibrary
    shards: ShardService
    config: Config
    metrics: NodeMetrics
    token: str
    name: str
