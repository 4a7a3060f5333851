"""The stages this node serves, as one small registry shared by the shard service (which adds and
removes them) and the capability record (which announces them with their load).

It exists so that both can be built with what they need (constructor injection): the capability
service is built before the shard service, which needs it, yet announces what the shard service serves.
"""

from __future__ import annotations

from collections.abc import Iterator

from accel_node.capability import ShardEntry
from accel_node.shard.server import StageServer


class ServedStages:
    """(plan CID, stage) -> model CID of every stage served here, with the figures to announce."""

    def __init__(self, server: StageServer) -> None:
        self.server = server
        self._stages: dict[tuple[str, int], str] = {}

    def add(self, plan_cid: str, stage: int, model_cid: str) -> None:
        self._stages[(plan_cid, stage)] = model_cid

    def remove(self, plan_cid: str, stage: int) -> str | None:
        """The model CID of the stage no longer served (None if it was not)."""
        return self._stages.pop((plan_cid, stage), None)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._stages

    def __iter__(self) -> Iterator[tuple[tuple[str, int], str]]:
        """``((plan CID, stage), model CID)`` pairs, sorted."""
        return iter(sorted(self._stages.items()))

    def entries(self) -> list[ShardEntry]:
        """What the capability record says about the stages served here (with their load)."""
        loads = {(load.model, load.stage): load for load in self.server.loads()}
        out = []
        for (plan_cid, stage), model_cid in self:
            load = loads.get((plan_cid, stage))
            out.append(
                ShardEntry(
                    model=model_cid,
                    stage=stage,
                    plan=plan_cid,
                    queue_depth=load.queued if load else 0,
                    busy=min(1.0, load.busy_fraction) if load else 0.0,
                )
            )
        return out
