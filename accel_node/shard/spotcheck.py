"""Spot checks: the judgement as a pure function, and the checker that gathers what it judges.

With probability ``spot_check_p`` the router runs a micro-batch hop by hop (each stage's replica returns
its output to the router) and one randomly chosen stage on two replicas (or one replica and a local
session of the stage). :func:`judge` decides from the outputs alone:

- two outputs that agree within the tolerance: go on with the first (:attr:`Judgement.AGREED`);
- one output and no local copy of the stage: nothing to compare with, go on (:attr:`Judgement.UNCHECKED`);
- otherwise a referee is needed (:attr:`Judgement.NEEDS_REFEREE`): the local session, or else a third
  replica. Given the referee's output, every replica that disagrees with it lied
  (:attr:`Judgement.REFEREED`, the referee's output goes on), except that when a third *replica* referees
  and disagrees with everyone, nobody can be blamed (:attr:`Judgement.INCONCLUSIVE`).

:class:`SpotChecker` runs the I/O around it: the hops (through the router's fail-over), the local referee
sessions (cached, loaded through an :class:`~accel_node.shard.runner.Offload`) and the penalties.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio
from libp2p.peer.id import ID

from accel_node.shard.errors import ShardRouteError, ShardVerificationError
from accel_node.shard.frames import frames_agree
from accel_node.shard.health import ReplicaHealth
from accel_node.shard.results import RouterStats
from accel_node.shard.runner import Offload, StageRunner, StageSpec
from p2p.penalties import PenaltyBox

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


Hop = Callable[[int, Sequence[ID], Arrays], Awaitable[Arrays]]
"""``await hop(stage, replicas, frame)``: the stage's output for ``frame`` from the first replica that
delivers (the router's fail-over); raises :class:`ShardRouteError` when none does."""


class SpotChecker:
    """Runs spot-checked micro-batches for a router; see the module docstring."""

    def __init__(
        self,
        *,
        health: ReplicaHealth,
        penalties: PenaltyBox | None,
        stats: RouterStats,
        penalise: Callable[[ID, str], None],
        rng: random.Random,
        offload: Offload,
        intra_op_threads: int = 0,
    ) -> None:
        self.health = health
        self.penalties = penalties
        self.stats = stats
        self._penalise = penalise
        self.rng = rng
        self.offload = offload
        self.intra_op_threads = intra_op_threads
        self._runners: OrderedDict[tuple[str, int], StageRunner] = OrderedDict()
        self._runner_lock = trio.Lock()

    def _usable(self, peers: Sequence[ID]) -> list[ID]:
        return [p for p in peers if self.health.usable(p, self.penalties)]

    def checkable(self, route: Sequence[Sequence[ID]], local_stages: LocalStages) -> list[int]:
        """Stages that can be checked: two usable replicas, or one and a local session."""
        return [
            i for i, replicas in enumerate(route) if len(self._usable(replicas)) + (i in local_stages) >= 2
        ]

    async def run(
        self,
        hop: Hop,
        route: Sequence[Sequence[ID]],
        frame: Arrays,
        *,
        model: str,
        tolerance: Tolerance,
        local_stages: LocalStages,
    ) -> Arrays:
        """Hop by hop through ``route``, one random checkable stage verified (there must be one)."""
        checked = self.rng.choice(self.checkable(route, local_stages))
        self.stats.spot_checks += 1
        for stage, replicas in enumerate(route):
            if stage == checked:
                frame = await self._verify(
                    hop, route, stage, frame, model=model, tolerance=tolerance, local_stages=local_stages
                )
            else:
                frame = await hop(stage, replicas, frame)
        return frame

    async def _verify(
        self,
        hop: Hop,
        route: Sequence[Sequence[ID]],
        stage: int,
        frame: Arrays,
        *,
        model: str,
        tolerance: Tolerance,
        local_stages: LocalStages,
    ) -> Arrays:
        usable = self._usable(route[stage])
        local = await self._local_runner(model, stage, local_stages)
        pair = self.rng.sample(usable, 2) if len(usable) >= 2 else usable[:1]
        outputs: dict[ID, Arrays] = {}

        async def run_on(peer: ID) -> None:
            try:
                outputs[peer] = await hop(stage, (peer,), frame)
            except ShardRouteError as exc:  # judged with what the others answered
                log.info("spot check replica failed", extra={"peer_id": str(peer), "error": str(exc)})

        async with trio.open_nursery() as nursery:
            for peer in pair:
                nursery.start_soon(run_on, peer)
        if not outputs:
            return await hop(stage, route[stage], frame)
        verdict = judge(outputs, tolerance, local_referee=local is not None)
        if verdict.output is not None:
            return verdict.output
        if verdict.mismatch:
            self.stats.mismatches += 1
        referee = await self._referee(
            hop, route, stage, frame, local=local, exclude=pair, model=model, fp16=tolerance.fp16
        )
        verdict = judge(outputs, tolerance, local_referee=local is not None, referee=referee)
        if verdict.judgement == Judgement.INCONCLUSIVE:
            raise ShardVerificationError(
                f"spot check of stage {stage} of {model}: replicas {[str(p) for p in outputs]} and the "
                "referee replica all disagree"
            )
        for peer, diff in verdict.liars.items():
            self._penalise(
                peer,
                f"stage {stage} of {model}: activations differ from the referee's (max abs diff {diff:.3g})",
            )
        return referee

    async def _referee(
        self,
        hop: Hop,
        route: Sequence[Sequence[ID]],
        stage: int,
        frame: Arrays,
        *,
        local: StageRunner | None,
        exclude: Sequence[ID],
        model: str,
        fp16: bool,
    ) -> Arrays:
        if local is not None:
            out = await self.offload(lambda: local.run(frame))
            if fp16:  # what an honest replica's output looks like after the trip
                out = {n: a.astype(np.float16).astype(np.float32) if a.dtype == np.float32 else a
                       for n, a in out.items()}  # fmt: skip
            return out
        others = [p for p in self._usable(route[stage]) if p not in exclude]
        if not others:
            raise ShardVerificationError(
                f"spot check of stage {stage} of {model}: two replicas disagree and there is no referee "
                "(no third replica, no local copy of the stage)"
            )
        return await hop(stage, others, frame)

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
