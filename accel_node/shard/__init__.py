"""Sharded pipeline inference: a model cut into stages that several peers run in sequence.

The package exports only its errors, so that importing the data plane (``wire``, ``parts``, ``frames``)
never loads onnx; import the rest from its module.

- ``errors``: the error taxonomy (:class:`ShardError`, :class:`PartitionError`, :class:`PlanError`, ...).
- ``limits``: limits shared by the partitioner, the plans and the wire (``MAX_STAGES``); imports nothing.
- ``partition``: the partitioner's entry (:func:`~accel_node.shard.partition.partition`,
  ``profile_graph``, ``extract_stages``, ``Stage``, ``Partition``, ``CutPoint``); its parts are
  ``structure`` (positions and boundaries), ``profile`` (costs and boundary types at the dims),
  ``candidates`` (cut points worth considering), ``balance`` (the pure balance solver) and ``extract``
  (each stage a standalone, deterministic ONNX model with a CID).
- ``plan``: the shard plan (model CID, stage CIDs, cuts, boundary tensors, dims, weights), signed by the
  planning node's libp2p key and verified by re-extracting the stages from the model.
"""

from accel_node.shard.errors import PartitionError, PlanError, ShardError

__all__ = ["PartitionError", "PlanError", "ShardError"]
