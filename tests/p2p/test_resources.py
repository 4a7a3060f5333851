"""The resource manager: limits per scope and in total, fail-fast and waiting reservations."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from p2p.resources import Limit, ResourceLimitExceeded, ResourceManager


def test_per_peer_and_total_limits_refuse_and_count() -> None:
    rm = ResourceManager({"bulk.channels": Limit(per_peer=2, total=3)})
    a1 = rm.reserve("bulk.channels", "A")
    rm.reserve("bulk.channels", "A")
    with pytest.raises(ResourceLimitExceeded) as per_peer:
        rm.reserve("bulk.channels", "A")
    assert not per_peer.value.total
    rm.reserve("bulk.channels", "B")
    with pytest.raises(ResourceLimitExceeded) as total:
        rm.reserve("bulk.channels", "C")
    assert total.value.total
    a1.release()
    a1.release()  # idempotent: gives back once
    assert rm.used("bulk.channels") == 2
    assert rm.used("bulk.channels", "A") == 1
    rm.reserve("bulk.channels", "C")
    (usage,) = rm.usage()
    assert (usage.used, usage.refused, usage.scopes, usage.busiest) == (3, 2, 3, 1)


def test_unknown_resource_is_a_programming_error() -> None:
    with pytest.raises(KeyError, match="unknown resource"):
        ResourceManager().reserve("nope", "A")


def test_try_reserve_and_context_manager() -> None:
    rm = ResourceManager({"x.y": Limit(1, 1)})
    with rm.reserve("x.y", "A"):
        assert rm.try_reserve("x.y", "B") is None
    assert rm.try_reserve("x.y", "B") is not None


async def test_acquire_waits_for_a_release() -> None:
    rm = ResourceManager({"bitswap.bytes": Limit(per_peer=10, total=100)})
    first = rm.reserve("bitswap.bytes", "A", 8)
    got: list[int] = []

    async def waiter() -> None:
        r = await rm.acquire("bitswap.bytes", "A", 5)
        got.append(r.amount)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        first.release()
    assert got == [5]


async def test_acquire_of_more_than_the_limit_raises_instead_of_hanging() -> None:
    rm = ResourceManager({"bitswap.bytes": Limit(per_peer=10, total=100)})
    with pytest.raises(ResourceLimitExceeded):
        await rm.acquire("bitswap.bytes", "A", 11)
