"""Why a model cannot be sharded as asked, or why a shard plan is refused.

Every message says what was wrong (and, for memory, what would be needed), so that the API and the CLI
can show it as is.
"""

from __future__ import annotations

from accel_node.errors import AccelNodeError


class ShardError(AccelNodeError):
    """Base class of the errors of sharded inference."""


class PartitionError(ShardError):
    """The model cannot be cut as asked: unsupported graph, bad arguments, no cut within the memory caps."""


class PlanError(ShardError):
    """A shard plan is malformed, oversize, wrongly signed, or does not match the model it names."""
