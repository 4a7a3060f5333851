"""The load of the stages a stage server serves: counters, and the share of recent time their ONNX
Runtime slots were busy (what a node announces with each stage, see :class:`StageLoad`).

Kept apart from :mod:`accel_node.shard.server` so that the server's module is about the protocol.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from accel_node.shard.runner import StageRunner


@dataclass(frozen=True)
class StageLoad:
    """Load of one served stage (what a node announces with it)."""

    model: str
    stage: int
    queued: int  # checked requests waiting for an ONNX Runtime slot
    running: int  # ONNX Runtime runs in progress
    in_flight: int  # RUNs accepted and not yet answered (includes those waiting on later stages)
    busy_fraction: float  # share of the last `busy_window_s` this stage kept the ORT slots busy
    served: int  # RUNs answered with ACK
    failed: int  # RUNs answered with FAIL
    replays: int  # outputs sent again to another replica of the next stage


@dataclass
class ServedStage:
    """A stage served here: its runner, its counters and its recent busy spans."""

    model: str
    stage: int
    runner: StageRunner
    admitted: int = 0  # RUNs holding a share of this stage (accepted, answer not yet sent)
    queued: int = 0
    running: int = 0
    in_flight: int = 0
    served: int = 0
    failed: int = 0
    replays: int = 0
    busy: deque[tuple[float, float]] = field(default_factory=deque)
    active: dict[int, float] = field(default_factory=dict)

    def busy_fraction(self, now: float, window_s: float, concurrency: int) -> float:
        """The share of the last ``window_s`` that this stage kept ``concurrency`` ORT slots busy."""
        start = now - window_s
        while self.busy and self.busy[0][1] < start:
            self.busy.popleft()
        spans = [*self.busy, *((t, now) for t in self.active.values())]
        busy = sum(max(0.0, b - max(a, start)) for a, b in spans)
        return min(1.0, busy / (window_s * concurrency))

    def load(self, now: float, window_s: float, concurrency: int) -> StageLoad:
        return StageLoad(
            model=self.model,
            stage=self.stage,
            queued=self.queued,
            running=self.running,
            in_flight=self.in_flight,
            busy_fraction=self.busy_fraction(now, window_s, concurrency),
            served=self.served,
            failed=self.failed,
            replays=self.replays,
        )
