"""Why a model cannot be sharded as asked, or why a shard plan is refused.

Every message says what was wrong (and, for memory, what would be needed), so that the API and the CLI
can show it as is.
"""

from __future__ import annotations

from collections.abc import Sequence

from accel_node.errors import AccelNodeError


class ShardError(AccelNodeError):
    """Base class of the errors of sharded inference."""


class PartitionError(ShardError):
    """The model cannot be cut as asked: unsupported graph, bad arguments, no cut within the memory caps."""


class PlanError(ShardError):
    """A shard plan is malformed, oversize, wrongly signed, or does not match the model it names."""


class ShardWireError(ShardError, ValueError):
    """A shard message is malformed or oversize. ``request_id``/``tag`` are set when they could be read,
    so that the receiver can answer with a FAIL the sender can match."""

    def __init__(self, message: str, *, request_id: bytes | None = None, tag: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.tag = tag


class ShardLinkError(ShardError):
    """A channel to a peer could not be opened, broke, or the peer answered with garbage."""


class ShardRouteError(ShardError):
    """No capable replica is left for ``stage`` (None: the route itself is unusable); ``reasons`` says
    what each replica did."""

    def __init__(self, message: str, *, stage: int | None = None, reasons: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.stage = stage
        self.reasons = list(reasons)


class ShardRequestError(ShardError, ValueError):
    """A sharded request is unusable as given (no inputs, bad micro-batch size, malformed route)."""


class ShardTimeoutError(ShardError):
    """A sharded request did not finish within its timeout."""


class ShardVerificationError(ShardError):
    """A spot check found two replicas disagreeing and no referee could say which one is right."""


class StageLoadError(ShardError):
    """A stage model cannot be loaded, or does not match its spec."""


class StageInputError(ShardError):
    """An incoming frame does not fit the stage (names, dtypes, shapes)."""


class StageRunFailed(ShardError):
    """ONNX Runtime failed while running the stage."""
