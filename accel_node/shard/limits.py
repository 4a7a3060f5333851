"""Limits shared by the partitioner, the plans and the data plane.

Kept apart so that the data plane (:mod:`accel_node.shard.wire` and what serves stages) can bound its
messages without importing the partitioner, which loads onnx and onnxruntime.
"""

from __future__ import annotations

MAX_STAGES = 64
"""Most stages a model is cut into; also bounds the lists of a plan and of a route on the wire."""
