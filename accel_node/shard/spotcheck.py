"""Spot checks: the judgement as a pure function, and the local sessions that referee.

Audits (:mod:`accel_node.shard.audit`) compare a stage's committed output with a referee's: a local
session of the stage (:class:`LocalReferees`) or other replicas. :func:`judge` decides from the outputs
alone:

- two outputs that agree within the tolerance: go on with the first (:attr:`Judgement.AGREED`);
- one output and no local copy of the stage: nothing to compare with, go on (:attr:`Judgement.UNCHECKED`);
- otherwise a referee is needed (:attr:`Judgement.NEEDS_REFEREE`): the local session, or else a third
  replica. Given the referee's output, every replica that disagrees with it lied
  (:attr:`Judgement.REFEREED`, the referee's output goes on), except that when a third *replica* referees
  and disagrees with everyone, nobody can be blamed (:attr:`Judgement.INCONCLUSIVE`).

The old distinguishable spot check (a hop-by-hop run with empty routes, from the router) is gone: a
stage could tell it apart from pipelined traffic and lie only on the rest (issue 11, finding 1).
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio
from libp2p.peer.id import ID

from accel_node.shard.frames import frames_agree
from accel_node.shard.runner import Offload, StageRunner, StageSpec

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]
LocalStages = Mapping[int, tuple[Path | bytes, StageSpec]]
FP16_RTOL = 2.0**-9
LOCAL_RUNNERS = 8


@dataclass(frozen=True)
class Tolerance:
    """How close two outputs of a stage must be to agree. Under fp16 compression outputs travel rounded to
    float16, so the relative tolerance is then at least two float16 steps (2**-9)."""

    atol: float
    rtol: float
    fp16: bool = False

    def agree(self, a: Arrays, b: Arrays) -> tuple[bool, float]:
        rtol = max(self.rtol, FP16_RTOL) if self.fp16 else self.rtol
        return frames_agree(a, b, atol=self.atol, rtol=rtol)


class Judgement(enum.Enum):
    AGREED = "agreed"
    UNCHECKED = "unchecked"
    NEEDS_REFEREE = "needs-referee"
    REFEREED = "refereed"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Verdict:
    """What :func:`judge` decided: the output to go on with (None when a referee is needed or nobody can
    be trusted), the liars with their largest absolute difference from the referee, and whether two
    replicas disagreed with each other."""

    judgement: Judgement
    output: Arrays | None = None
    liars: dict[ID, float] = field(default_factory=dict)
    mismatch: bool = False


def judge(
    outputs: Mapping[ID, Arrays],
    tolerance: Tolerance,
    *,
    local_referee: bool,
    referee: Arrays | None = None,
) -> Verdict:
    """Judge a spot check (see the module docstring). ``outputs`` are the replicas' outputs (one or two, in
    the order they answered), ``local_referee`` whether a local session of the stage exists (its output,
    when ``referee`` is given, is trusted), ``referee`` the referee's output once it ran."""
    if not outputs:
        raise ValueError("a spot check needs at least one replica's output")
    answered = list(outputs)
    first = outputs[answered[0]]
    if referee is None:
        if len(answered) == 2 and tolerance.agree(first, outputs[answered[1]])[0]:
            return Verdict(Judgement.AGREED, first)
        if len(answered) == 1 and not local_referee:
            return Verdict(Judgement.UNCHECKED, first)
        return Verdict(Judgement.NEEDS_REFEREE, mismatch=len(answered) == 2)
    liars: dict[ID, float] = {}
    for peer in answered:
        agree, diff = tolerance.agree(outputs[peer], referee)
        if not agree:
            liars[peer] = diff
    mismatch = len(answered) == 2 and not tolerance.agree(first, outputs[answered[1]])[0]
    if not local_referee and len(liars) == len(answered):
        return Verdict(Judgement.INCONCLUSIVE, liars=liars, mismatch=mismatch)
    return Verdict(Judgement.REFEREED, referee, liars, mismatch)


class LocalReferees:
    """ONNX Runtime sessions of stages this node holds, loaded on first use (cached, at most
    :data:`LOCAL_RUNNERS`), to re-execute a stage when auditing it or verifying evidence."""

    def __init__(self, offload: Offload, intra_op_threads: int = 0) -> None:
        self.offload = offload
        self.intra_op_threads = intra_op_threads
        self._runners: OrderedDict[tuple[str, int], StageRunner] = OrderedDict()
        self._runner_lock = trio.Lock()

    async def run(self, model: str, stage: int, local_stages: LocalStages, frame: Arrays) -> Arrays | None:
        """The stage's outgoing frame for ``frame``, computed here; None when the stage is not held."""
        runner = await self.runner(model, stage, local_stages)
        if runner is None:
            return None
        return await self.offload(lambda: runner.run(frame))

    async def runner(self, model: str, stage: int, local_stages: LocalStages) -> StageRunner | None:
        return await self._local_runner(model, stage, local_stages)

    async def _local_runner(self, model: str, stage: int, local_stages: LocalStages) -> StageRunner | None:
        if stage not in local_stages:
            return None
        key = (model, stage)
        async with self._runner_lock:
            runner = self._runners.get(key)
            if runner is None:
                source, spec = local_stages[stage]
                runner = await self.offload(
                    lambda: StageRunner.load(source, spec, intra_op_threads=self.intra_op_threads)
                )
                self._runners[key] = runner
                while len(self._runners) > LOCAL_RUNNERS:
                    self._runners.popitem(last=False)
            self._runners.move_to_end(key)
            return runner
