"""Why a model cannot be sharded as asked, or why a shard plan is refused.

Every message says what was wrong (and, for memory, what would be needed), so that the API and the CLI
can show it as is; every class carries its HTTP status and code (see :mod:`accel_node.errors`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from accel_node.errors import AccelNodeError


class ShardError(AccelNodeError):
    """Base class of the errors of sharded inference."""

    status = 422
    code = "shard_refused"


class PartitionError(ShardError):
    """The model cannot be cut as asked: unsupported graph, bad arguments, no cut within the memory caps."""

    code = "partition_failed"


class PlanError(ShardError):
    """A shard plan is malformed, oversize, wrongly signed, or does not match the model it names."""

    code = "invalid_plan"


class ShardWireError(ShardError, ValueError):
    """A shard message is malformed or oversize. ``request_id``/``tag`` are set when they could be read,
    so that the receiver can answer with a FAIL the sender can match."""

    status = 502
    code = "peer_protocol_error"

    def __init__(self, message: str, *, request_id: bytes | None = None, tag: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.tag = tag


class ShardLinkError(ShardError):
    """A channel to a peer could not be opened, broke, or the peer answered with garbage."""

    status = 502
    code = "peer_link_failed"


class ShardRouteError(ShardError):
    """No capable replica is left for ``stage`` (None: the route itself is unusable); ``reasons`` says
    what each replica did."""

    status = 503
    code = "no_replica"

    def __init__(self, message: str, *, stage: int | None = None, reasons: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.stage = stage
        self.reasons = list(reasons)


class ShardRequestError(ShardError, ValueError):
    """A sharded request is unusable as given (no inputs, bad micro-batch size, malformed route)."""

    status = 400
    code = "invalid_shard_request"


class ShardTimeoutError(ShardError):
    """A sharded request did not finish within its timeout."""

    status = 504
    code = "shard_timeout"


class ShardVerificationError(ShardError):
    """A spot check found two replicas disagreeing and no referee could say which one is right."""

    status = 502
    code = "verification_failed"


class AssignmentError(ShardError):
    """A stage assignment was malformed, refused or failed."""

    status = 502
    code = "assignment_failed"


class StageLoadError(ShardError):
    """A stage model cannot be loaded, or does not match its spec."""

    code = "stage_load_failed"


class StageInputError(ShardError):
    """An incoming frame does not fit the stage (names, dtypes, shapes)."""

    status = 400
    code = "invalid_stage_input"


class StageRunFailed(ShardError):
    """ONNX Runtime failed while running the stage."""

    status = 500
    code = "stage_run_failed"


class ShardBusyError(ShardError):
    """Every replica asked answered ``busy`` (its share of a stage's queue, or the node's, is full):
    retry a little later. The API answers 429 with a Retry-After."""

    status = 429
    code = "shard_busy"
    retry_after_s = 1.0

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class ReassemblyRefused(ShardWireError):
    """A multi-part message was refused before it was buffered: the peer's (or the node's) bytes in
    reassembly would exceed their limit. Not malformed: the sender is answered ``busy``, not penalised."""
