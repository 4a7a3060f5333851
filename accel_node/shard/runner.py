"""One pipeline stage as something to run: its ONNX Runtime session and the frame rules.

A stage receives the *frame* of its start boundary and hands on the frame of its end boundary (see
:mod:`accel_node.shard.partition`): the incoming frame must hold exactly the stage's ``inputs`` and
``carried`` tensors (checked like any inference request: names, dtypes, ranks, static dims, shared
symbolic dims); the outgoing frame is ``boundary`` in order, computed outputs and carried tensors passed
through untouched.

Both the stage server and the router's local referee use :class:`StageRunner`. Loading and running are
blocking: call them through an :class:`Offload` (:func:`in_worker_thread` by default; :func:`inline` in
tests on a mock clock).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import trio

from accel_node.runtime.errors import InputError, RuntimeFailure
from accel_node.runtime.sessions import available_providers, create_session, ort, session_options
from accel_node.runtime.validation import SpecLike, validate
from accel_node.shard.errors import StageInputError, StageLoadError, StageRunFailed
from accel_node.shard.wire import WIRE_DTYPES

Arrays = dict[str, np.ndarray[Any, Any]]


class StageSpec(Protocol):
    """What serving a stage needs to know of it (:class:`~accel_node.shard.partition.Stage` and
    :class:`~accel_node.shard.plan.StagePlan` both fit)."""

    @property
    def inputs(self) -> Sequence[SpecLike]: ...
    @property
    def outputs(self) -> Sequence[SpecLike]: ...
    @property
    def carried(self) -> Sequence[SpecLike]: ...
    @property
    def boundary(self) -> Sequence[str]: ...


def _check_dtypes(specs: Sequence[SpecLike], where: str) -> None:
    for spec in specs:
        if spec.dtype not in WIRE_DTYPES:
            raise StageLoadError(f"{where} tensor {spec.name!r} has dtype {spec.dtype}, which cannot travel")


class StageRunner:
    """A loaded stage; see the module docstring."""

    def __init__(self, session: Any, spec: StageSpec) -> None:
        self.session = session
        self.spec = spec
        self.frame_in: tuple[SpecLike, ...] = (*spec.inputs, *spec.carried)
        self.output_names = [t.name for t in spec.outputs]
        self.input_names = [t.name for t in spec.inputs]
        got_in = [i.name for i in session.get_inputs()]
        got_out = {o.name for o in session.get_outputs()}
        if sorted(got_in) != sorted(self.input_names):
            raise StageLoadError(f"the stage model's inputs {got_in} are not the spec's {self.input_names}")
        missing = [n for n in self.output_names if n not in got_out]
        if missing:
            raise StageLoadError(f"the stage model does not produce {missing}")
        names = {*self.output_names, *(t.name for t in spec.carried)}
        if set(spec.boundary) != names or len(spec.boundary) != len(names):
            raise StageLoadError("the stage's boundary is not exactly its outputs and carried tensors")
        _check_dtypes(self.frame_in, "frame")
        _check_dtypes(spec.outputs, "output")

    @classmethod
    def load(
        cls,
        model: Path | bytes,
        spec: StageSpec,
        *,
        intra_op_threads: int = 0,
        graph_optimization: str = "all",
        providers: Sequence[str] | None = None,
    ) -> StageRunner:
        """Create the session for ``model`` (a file, or the stage's bytes) and check it against ``spec``."""
        try:
            if isinstance(model, bytes):
                options = session_options(
                    intra_op_threads=intra_op_threads, graph_optimization=graph_optimization
                )
                try:
                    session = ort.InferenceSession(
                        model, sess_options=options, providers=list(providers or available_providers())
                    )
                except Exception as exc:  # ORT raises its own pybind exception types
                    raise StageLoadError(f"ONNX Runtime cannot load the stage: {exc}") from exc
            else:
                session = create_session(
                    Path(model),
                    intra_op_threads=intra_op_threads,
                    graph_optimization=graph_optimization,
                    providers=providers,
                )
        except RuntimeFailure as exc:
            raise StageLoadError(str(exc)) from exc
        return cls(session, spec)

    def check(self, frame: Mapping[str, Any]) -> Arrays:
        """The incoming frame, validated (native, contiguous arrays); raises :class:`StageInputError`."""
        try:
            return validate(frame, self.frame_in)
        except InputError as exc:
            raise StageInputError(f"frame does not fit the stage: {exc}") from exc

    def compute(self, frame: Arrays) -> Arrays:
        """The stage's computed outputs for a checked frame (blocking)."""
        try:
            values = self.session.run(self.output_names, {n: frame[n] for n in self.input_names})
        except Exception as exc:  # ORT raises its own pybind exception types
            raise StageRunFailed(f"ONNX Runtime failed to run the stage: {exc}") from exc
        return dict(zip(self.output_names, values, strict=True))

    def next_frame(self, frame: Arrays, produced: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
        """The outgoing frame: ``boundary`` in order, computed or carried."""
        return {name: produced[name] if name in produced else frame[name] for name in self.spec.boundary}

    def run(self, frame: Mapping[str, Any]) -> Arrays:
        """Check, compute and build the outgoing frame (blocking)."""
        checked = self.check(frame)
        return self.next_frame(checked, self.compute(checked))


_T = TypeVar("_T")


class Offload(Protocol):
    """How blocking stage work (loading a session, running it) is kept off the event loop."""

    def __call__(self, work: Callable[[], _T], /) -> Awaitable[_T]: ...


async def in_worker_thread(work: Callable[[], _T]) -> _T:
    """The default :class:`Offload`: a trio worker thread, so networking never stalls on ORT."""
    return await trio.to_thread.run_sync(work)


async def inline(work: Callable[[], _T]) -> _T:
    """An :class:`Offload` that runs the work on the event loop. For tests on ``trio.testing.MockClock``
    with ``autojump_threshold=0``: waiting on a worker thread counts as idle there, so the clock would
    jump past every timeout while ONNX Runtime computes; run inline, the computation takes no clock time."""
    await trio.lowlevel.checkpoint()
    return work()
