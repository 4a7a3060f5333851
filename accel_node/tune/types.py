"""What the inference service and the tuner exchange.

An :class:`Arm` is one serving configuration of a (model, requested variant). The inference service
asks :meth:`Tuner.choose` which arm serves the next requests and reports what happened with
:meth:`Tuner.observe_batch` (every executed batch) and :meth:`Tuner.observe_request` (every answered
request, end to end: queueing included). Both are synchronous and cheap: they run on the event loop
for every request; the tuner persists its state from its own task.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True, order=True)
class Arm:
    """One serving configuration."""

    max_batch: int
    max_wait_ms: float
    threads: int  # intra-op threads (never 0 here: the tuner resolves ORT's default to a count)
    variant: str  # the precision variant that serves (fp32, fp16, int8)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> Arm:
        if not isinstance(data, dict) or set(data) != {"max_batch", "max_wait_ms", "threads", "variant"}:
            raise ValueError("arm: expected max_batch, max_wait_ms, threads and variant")
        batch, wait = data["max_batch"], data["max_wait_ms"]
        threads, variant = data["threads"], data["variant"]
        if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 4096:
            raise ValueError("arm.max_batch: expected an integer in 1..4096")
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 1000:
            raise ValueError("arm.max_wait_ms: expected a number in 0..1000")
        if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 256:
            raise ValueError("arm.threads: expected an integer in 1..256")
        if variant not in ("fp32", "fp16", "int8"):
            raise ValueError("arm.variant: expected fp32, fp16 or int8")
        return cls(batch, float(wait), threads, variant)


class Tuner(Protocol):
    """The tuner as the inference service sees it (implemented by accel_node.tune.service)."""

    def choose(self, cid: str, variant: str) -> Arm | None:
        """The arm that serves requests for ``cid`` asking for ``variant`` now; None: not tuned
        (tuning off, or nothing known yet), serve with the configured defaults."""
        ...

    def observe_batch(
        self, cid: str, variant: str, arm: Arm, *, rows: int, run_s: float, queue_depth: int
    ) -> None:
        """One executed batch of ``rows`` rows that took ``run_s`` of model time under ``arm``;
        ``queue_depth`` is what was still waiting when it finished."""
        ...

    def observe_request(self, cid: str, variant: str, arm: Arm, latency_s: float, ok: bool) -> None:
        """One request answered (``ok``) or failed under ``arm``, ``latency_s`` end to end."""
        ...
