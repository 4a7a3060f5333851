"""Background tasks a service owns: started on behalf of its callers, in the service's own nursery.

Work that outlives the call that asked for it (a batcher, a held link, a served channel, a
background provide) belongs to a long-lived service, not to the caller. Such a service must never
hand its nursery out: whatever is spawned there can cancel every sibling (and the node) with one
exception, and nobody hears why. :class:`OwnedTasks` is the nursery behind one narrow door:

- :meth:`OwnedTasks.open` is entered by the service's ``run`` and holds the nursery; leaving it
  cancels every task still running, so none outlives its owner.
- :meth:`OwnedTasks.spawn` (fire and forget) and :meth:`OwnedTasks.start` (wait for
  ``task_status.started()``) take a task name and refuse with :class:`~p2p.errors.NotRunningError`
  while the service is not running. An exception a task raises after it started is logged with
  the service's and the task's name and passed to ``on_failure(service, task, exc)`` (the node
  counts them in ``accel_node_background_failures_total{service,task}``); it never reaches the
  siblings. An exception before ``started()`` is the caller's: :meth:`start` raises it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_typing import TaskStatus

from p2p.errors import NotRunningError, P2PError

log = logging.getLogger(__name__)

FailureHook = Callable[[str, str, BaseException], object]
"""``on_failure(service, task, exc)``: hears of every background task that failed."""


class _Status:
    """Passes ``started()`` on and remembers that it was called."""

    def __init__(self, inner: TaskStatus[Any]) -> None:
        self._inner = inner
        self.done = False

    def started(self, value: Any = None) -> None:
        self.done = True
        self._inner.started(value)


class OwnedTasks:
    """The background tasks of the service ``service``; see the module docstring."""

    def __init__(self, service: str, *, on_failure: FailureHook | None = None) -> None:
        self.service = service
        self.on_failure = on_failure
        self.failures = 0
        self._nursery: trio.Nursery | None = None

    @property
    def running(self) -> bool:
        return self._nursery is not None

    @asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        """Hold the nursery while the block runs (the service's lifetime)."""
        if self._nursery is not None:
            raise P2PError(f"{self.service} is already running")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    def _require(self) -> trio.Nursery:
        if self._nursery is None:
            raise NotRunningError(f"{self.service} is not running (start its run() first)")
        return self._nursery

    def spawn(self, name: str, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``await fn(*args)`` in the background, as task ``name``."""
        self._require().start_soon(self._guard, name, fn, args, name=f"{self.service}/{name}")

    async def start(self, name: str, fn: Callable[..., Awaitable[object]], *args: object) -> Any:
        """Run ``await fn(*args, task_status=...)`` in the background; returns what it passed to
        ``started()``, or raises what it raised before that."""
        return await self._require().start(self._guard_started, name, fn, args, name=f"{self.service}/{name}")

    async def _guard(self, name: str, fn: Callable[..., Awaitable[object]], args: tuple[object, ...]) -> None:
        try:
            await fn(*args)
        except Exception as exc:  # one task's failure ends that task, not the service
            self._failed(name, exc)

    async def _guard_started(
        self,
        name: str,
        fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
        *,
        task_status: TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        status = _Status(task_status)
        try:
            await fn(*args, task_status=status)
        except Exception as exc:
            if not status.done:
                raise  # the caller of start() gets it
            self._failed(name, exc)

    def _failed(self, name: str, exc: BaseException) -> None:
        self.failures += 1
        log.error(
            "background task failed",
            extra={"service": self.service, "task": name, "error": repr(exc)},
            exc_info=exc,
        )
        if self.on_failure is None:
            return
        try:
            self.on_failure(self.service, name, exc)
        except Exception as hook_exc:  # counting must never fail the owner
            log.warning("background failure hook failed", extra={"error": repr(hook_exc)})
