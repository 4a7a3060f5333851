"""Background tasks a service owns (p2p.tasks): refused while not running, failures logged and
counted without touching the siblings, cancelled with their owner."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio_typing import TaskStatus

from p2p.errors import NotRunningError
from p2p.tasks import OwnedTasks


async def test_tasks_are_refused_while_the_owner_is_not_running() -> None:
    tasks = OwnedTasks("svc")
    with pytest.raises(NotRunningError, match="svc is not running"):
        tasks.spawn("job", trio.sleep, 0)
    with pytest.raises(NotRunningError):
        await tasks.start("job", trio.sleep, 0)


async def test_a_failing_task_is_logged_and_counted_and_its_siblings_go_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[tuple[str, str, str]] = []
    tasks = OwnedTasks("svc", on_failure=lambda service, task, exc: heard.append((service, task, str(exc))))
    sibling_done = trio.Event()

    async def fail() -> None:
        raise ValueError("boom")

    async def sibling() -> None:
        await trio.sleep(1)
        sibling_done.set()

    async with trio.open_nursery() as nursery:

        async def owner(task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with tasks.open():
                task_status.started()
                await trio.sleep_forever()

        await nursery.start(owner)
        tasks.spawn("sibling", sibling)
        tasks.spawn("fail", fail)
        await sibling_done.wait()
        assert heard == [("svc", "fail", "boom")] and tasks.failures == 1
        assert any(getattr(r, "task", None) == "fail" for r in caplog.records)
        nursery.cancel_scope.cancel()
    assert not tasks.running


async def test_start_raises_what_fails_before_started_and_counts_what_fails_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tasks = OwnedTasks("svc")
    gate = trio.Event()

    async def early(*, task_status: TaskStatus[int]) -> None:
        raise KeyError("early")

    async def late(*, task_status: TaskStatus[int]) -> None:
        task_status.started(7)
        await gate.wait()
        raise KeyError("late")

    async with trio.open_nursery() as nursery:

        async def owner(task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with tasks.open():
                task_status.started()
                await trio.sleep_forever()

        await nursery.start(owner)
        with pytest.raises(KeyError, match="early"):
            await tasks.start("early", early)
        assert await tasks.start("late", late) == 7
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert tasks.failures == 1
        nursery.cancel_scope.cancel()


async def test_leaving_the_owner_cancels_its_tasks(autojump_clock: trio.testing.MockClock) -> None:
    tasks = OwnedTasks("svc")
    cancelled = trio.Event()

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with tasks.open():
        tasks.spawn("forever", forever)
        await trio.testing.wait_all_tasks_blocked()
    assert cancelled.is_set() and not tasks.running
