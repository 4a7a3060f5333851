"""The penalty box: exclusion after the limit, backoff, forgiveness, persistence across restarts."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from accel_node.store import AsyncStore
from p2p.bitswap.service import BitswapService
from p2p.content.cid import CID, RAW
from p2p.host import HostSettings, build_host, run_host
from p2p.identity import generate_identity
from p2p.penalties import PenaltyBox
from tests.support.daemons import Daemon, api_error

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def peer() -> ID:
    return ID.from_pubkey(generate_identity().public_key)


def test_excluded_after_limit_and_forgiven_after_the_ban_with_backoff() -> None:
    clock = Clock()
    seen: list[tuple[str, int]] = []
    box = PenaltyBox(limit=3, ban_s=100, clock=clock, listener=lambda p, r, s: seen.append((r, s.count)))
    bad, good = peer(), peer()
    for _ in range(2):
        box.penalise(bad, "bad-block")
    assert not box.excluded(bad) and box.count(bad) == 2
    box.penalise(bad, "bad-block")
    assert box.excluded(bad) and not box.excluded(good)
    assert seen == [("bad-block", 1), ("bad-block", 2), ("bad-block", 3)]
    clock.now += 99
    assert box.excluded(bad)
    clock.now += 1
    assert not box.excluded(bad) and box.count(bad) == 0
    # A second exclusion lasts twice as long.
    for _ in range(3):
        box.penalise(bad, "malformed")
    clock.now += 150
    assert box.excluded(bad)
    clock.now += 50
    assert not box.excluded(bad)
    assert box.state(bad).exclusions == 2


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        PenaltyBox(limit=0)


async def test_penalties_persist_in_the_peer_table(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "node.db")
    offender = peer()
    await store.record_penalty(str(offender), count=3, at=1000.0, exclusions=1, reason="bad-block")
    record = await store.get_peer(str(offender))
    assert record is not None
    assert (record.penalties, record.penalty_exclusions, record.penalty_reason) == (3, 1, "bad-block")
    await store.close()


@pytest.mark.multinode
async def test_a_daemon_penalises_a_peer_sending_tampered_blocks_and_remembers_it(
    start_daemon: Callable[..., Daemon],
) -> None:
    """A liar (an in-process py-libp2p host) answers wants with tampered bytes; the daemon discards
    them, penalises the liar in its peer table and metrics, and still knows after a restart."""
    data = os.urandom(4096)
    cid = CID.compute(data, RAW, 1)
    tampered = {cid.encode(): b"X" + data[1:]}
    node = await trio.to_thread.run_sync(start_daemon, "node")
    liar_host = build_host(generate_identity(), HostSettings(listen_addrs=LOOPBACK))
    liar_id = str(liar_host.get_id())
    async with trio.open_nursery() as nursery:
        addrs = await nursery.start(run_host, liar_host, LOOPBACK)
        await nursery.start(BitswapService(liar_host, tampered.get).run)
        await trio.to_thread.run_sync(node.api.peers.connect, f"{addrs[0]}/p2p/{liar_id}")
        refused = await trio.to_thread.run_sync(api_error, partial(node.api.models.fetch, str(cid)))
        assert refused.http_status == 422, refused

        def liar_row() -> dict[str, Any]:
            peers = node.api.peers.list().peers
            return next(p.model_dump() for p in peers if p.peer_id == liar_id)

        row = await trio.to_thread.run_sync(liar_row)
        assert (row["penalties"], row["penalty_reason"], row["excluded"]) == (1, "bad-block", False)
        metrics = (await trio.to_thread.run_sync(node.api.node.metrics_text)).decode()
        assert 'accel_node_peer_penalties_total{reason="bad-block"} 1.0' in metrics
        nursery.cancel_scope.cancel()

    def restart() -> None:
        assert node.stop() == 0
        node.start().wait_ready()

    await trio.to_thread.run_sync(restart)
    # No longer connected nor live, so not in the table listing; its own entry still holds it.
    shown = await trio.to_thread.run_sync(node.api.peers.get, liar_id)
    assert (shown.penalties, shown.penalty_reason) == (1, "bad-block")
