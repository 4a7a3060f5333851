"""Sharded pipeline inference: a model cut into stages that several peers run in sequence.

- ``errors``: the error taxonomy (:class:`ShardError`, :class:`PartitionError`, :class:`PlanError`).
- ``partition``: cut an ONNX graph into contiguous stages at cheap cut points, balanced to the peers'
  measured throughput within their memory; each stage a standalone, deterministic ONNX model with a CID.
- ``plan``: the shard plan (model CID, stage CIDs, cuts, boundary tensors, dims, weights), signed by the
  planning node's libp2p key and verified by re-extracting the stages from the model.
"""

from accel_node.shard.errors import PartitionError, PlanError, ShardError
from accel_node.shard.partition import (
    CutPoint,
    GraphProfile,
    Partition,
    Stage,
    extract_stages,
    partition,
    profile_graph,
)
from accel_node.shard.plan import (
    ShardPlan,
    StagePlan,
    decode_plan,
    make_plan,
    plan_cid,
    sign_plan,
    verify_plan,
)

__all__ = [
    "CutPoint",
    "GraphProfile",
    "Partition",
    "PartitionError",
    "PlanError",
    "ShardError",
    "ShardPlan",
    "Stage",
    "StagePlan",
    "decode_plan",
    "extract_stages",
    "make_plan",
    "partition",
    "plan_cid",
    "profile_graph",
    "sign_plan",
    "verify_plan",
]
