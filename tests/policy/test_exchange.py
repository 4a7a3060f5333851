"""Presenting capability tokens over /accel/token/1.0.0 between real py-libp2p hosts on 127.0.0.1,
and the policy service's persistence (rules, revocations, membership) in a real store."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from multiaddr import Multiaddr
from nacl.signing import SigningKey

from accel_node.config import PolicySection
from accel_node.policy import ASSIGN, COMPUTE, CONTENT, PolicyService, PolicyUpdate, Rule
from accel_node.policy.errors import MembershipError
from accel_node.policy.exchange import TOKEN_PROTOCOL, present
from accel_node.policy.membership import sign_membership
from accel_node.policy.service import DENIAL_EVERY_S
from accel_node.policy.signed import format_key
from accel_node.policy.tokens import issue
from accel_node.store import AsyncStore
from p2p.events import BAD_SIGNATURE, POLICY_DENIED, REFUSED, TOKEN_USED, SecurityEvent
from p2p.host import HostSettings, build_host, dial, run_host
from p2p.identity import generate_identity, peer_id_of

LOOPBACK = [Multiaddr("/ip4/127.0.0.1/tcp/0")]


@dataclass
class Peer:
    keys: KeyPair
    host: IHost
    policy: PolicyService
    events: list[SecurityEvent] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.host.get_id())

    def kinds(self) -> list[tuple[str, str | None]]:
        return [(e.kind, e.peer) for e in self.events]


@asynccontextmanager
async def peers(tmp_path: Path, count: int, **settings: object) -> AsyncIterator[list[Peer]]:
    """``count`` hosts, each running its policy service (token protocol, presenting on connect)."""
    made = []
    async with trio.open_nursery() as nursery:
        for n in range(count):
            keys = generate_identity()
            host = build_host(keys, HostSettings(listen_addrs=LOOPBACK))
            store = await AsyncStore.open(tmp_path / f"{n}.db")
            events: list[SecurityEvent] = []
            home = tmp_path / f"home{n}"
            home.mkdir()
            policy = PolicyService(
                key_pair=keys,
                store=store,
                settings=PolicySection(**settings),
                home=home,
                events=events.append,
            )
            peer = Peer(keys, host, policy, events)
            addrs = await nursery.start(run_host, host, LOOPBACK)
            host.get_peerstore().add_addrs(host.get_id(), addrs, 3600)
            await nursery.start(policy.run, host)
            made.append(peer)
        yield made
        nursery.cancel_scope.cancel()


async def connect(a: Peer, b: Peer) -> None:
    await dial(a.host, b.host.get_id(), b.host.get_addrs()[0], timeout_s=5)


async def test_a_peer_is_refused_compute_until_it_presents_a_valid_token(tmp_path: Path) -> None:
    async with peers(tmp_path, 3) as (node, alice, mallory):
        await connect(alice, node)
        await connect(mallory, node)
        assert node.policy.allowed(alice.host.get_id(), CONTENT)  # the safe default: content is open
        assert not node.policy.allowed(alice.host.get_id(), COMPUTE)
        assert node.kinds() == [(POLICY_DENIED, alice.id)]

        token = node.policy.issue(alice.id, [COMPUTE], 3600)
        results = await present(alice.host, node.host.get_id(), [token.encode()])
        assert results == [(token.id, "accepted")]
        assert node.policy.allowed(alice.host.get_id(), COMPUTE)
        assert not node.policy.allowed(alice.host.get_id(), ASSIGN)  # only what the token names
        assert (TOKEN_USED, alice.id) in node.kinds()

        # Mallory replays Alice's token: the connection says who presents it, and it is not Alice.
        assert await present(mallory.host, node.host.get_id(), [token.encode()]) == [
            (token.id, "wrong subject")
        ]
        assert not node.policy.allowed(mallory.host.get_id(), COMPUTE)

        # A token Mallory signed for itself with its own key: untrusted issuer. One claiming the
        # node's key as issuer but signed by Mallory: bad signature. An expired one: expired.
        own = mallory.policy.issue(mallory.id, [COMPUTE], 3600)
        node_key = node.keys.public_key.to_bytes()
        forged = issue(mallory.keys.private_key.sign, node_key, subject=mallory.id, actions=[COMPUTE],
                       ttl_s=3600, now=time.time())  # fmt: skip
        expired = issue(node.keys.private_key.sign, node_key, subject=mallory.id, actions=[COMPUTE],
                        ttl_s=60, now=time.time() - 120)  # fmt: skip
        results = await present(
            mallory.host, node.host.get_id(), [own.encode(), forged.encode(), expired.encode()]
        )
        assert [r for _, r in results] == ["untrusted issuer", "bad signature", "expired"]
        assert not node.policy.allowed(mallory.host.get_id(), COMPUTE)
        refusals = [(e.kind, e.details.get("token")) for e in node.events if e.peer == mallory.id]
        assert (REFUSED, token.id) in refusals and (BAD_SIGNATURE, forged.id) in refusals
        assert (REFUSED, own.id) in refusals and (REFUSED, expired.id) in refusals
        # Denied twice within DENIAL_EVERY_S: reported once (a flood must not flood the audit log).
        assert [k for k, _ in refusals].count(POLICY_DENIED) == 1

        # Revoked: the held token stops working at once, and is refused when presented again.
        await node.policy.update(PolicyUpdate(revoke=[token.id]))
        assert not node.policy.allowed(alice.host.get_id(), COMPUTE)
        assert await present(alice.host, node.host.get_id(), [token.encode()]) == [(token.id, "revoked")]


async def test_held_tokens_are_presented_on_connect_and_garbage_is_reset(tmp_path: Path) -> None:
    async with peers(tmp_path, 2) as (node, alice):
        token = node.policy.issue(alice.id, [COMPUTE, ASSIGN], 3600)
        alice.policy.tokens_path.write_text(f"# given by the node\n{token.text()}\nnot a token\n")
        assert [t.id for t in alice.policy.held_tokens()] == [token.id]
        accepted = trio.Event()

        def sink(event: SecurityEvent) -> None:
            node.events.append(event)
            if event.kind == TOKEN_USED:
                accepted.set()

        node.policy.events = sink
        await connect(alice, node)  # alice's policy service presents its tokens on connect
        with trio.fail_after(10):
            await accepted.wait()
        assert node.policy.allowed(alice.host.get_id(), ASSIGN) and node.policy.book.count() == 1

        stream = await alice.host.new_stream(node.host.get_id(), [TOKEN_PROTOCOL])
        await stream.write(b"\xff\xff\xff\xff")  # a 4 GiB message: reset, nothing read
        with trio.fail_after(5), contextlib.suppress(StreamEOF, StreamReset):  # either way: no answer
            assert await stream.read(10) == b""


async def test_rules_revocations_and_membership_persist(tmp_path: Path) -> None:
    owner = SigningKey.generate()
    owner_key = format_key(bytes(owner.verify_key))
    keys = generate_identity()
    alice, bob = (str(peer_id_of(generate_identity())) for _ in range(2))
    store = await AsyncStore.open(tmp_path / "node.db")
    settings = PolicySection(owner_key=owner_key)
    policy = PolicyService(key_pair=keys, store=store, settings=settings, home=tmp_path)
    await policy.load()
    assert not policy.allowed(alice, COMPUTE)

    def members(version: int, *names: str, key: SigningKey = owner, ttl_s: int = 3600) -> str:
        sign = lambda m: bytes(key.sign(m).signature)  # noqa: E731
        return sign_membership(sign, bytes(owner.verify_key), names, version=version, ttl_s=ttl_s,
                               now=time.time()).text()  # fmt: skip

    await policy.update(PolicyUpdate(membership=members(2, alice), rules=[Rule(bob, COMPUTE, "allow")]))
    assert policy.allowed(alice, COMPUTE) and policy.allowed(bob, COMPUTE)
    with pytest.raises(MembershipError, match="older"):
        await policy.update(PolicyUpdate(membership=members(1, alice, bob)))
    with pytest.raises(MembershipError, match="signature"):
        await policy.update(PolicyUpdate(membership=members(3, bob, key=SigningKey.generate())))
    token = policy.issue(bob, [COMPUTE], 60)
    await policy.update(PolicyUpdate(revoke=[token.id]))

    reopened = PolicyService(key_pair=keys, store=store, settings=settings, home=tmp_path)
    await reopened.load()
    view = reopened.view()
    assert view["membership"]["members"] == [alice] and view["membership"]["version"] == 2
    assert view["rules"] == [{"subject": bob, "action": COMPUTE, "effect": "allow"}]
    assert view["revoked"] == [token.id]
    assert reopened.accept(bob, [token.encode()]) == [(token.id, "revoked")]

    # A node configured with another owner key ignores the stored list.
    other = PolicySection(owner_key=format_key(bytes(SigningKey.generate().verify_key)))
    stranger = PolicyService(key_pair=keys, store=store, settings=other, home=tmp_path)
    await stranger.load()
    assert stranger.membership is None and not stranger.allowed(alice, COMPUTE)
    await store.close()


async def test_repeated_denials_are_reported_once_per_period_with_a_count(tmp_path: Path) -> None:
    now = [1000.0]
    events: list[SecurityEvent] = []
    async with peers(tmp_path, 1) as (node,):
        node.policy.events = events.append
        node.policy.clock = lambda: now[0]
        stranger = "12D3KooWStrangerStrangerStrangerStrangerStrangerStr"
        for _ in range(500):
            assert not node.policy.allowed(stranger, COMPUTE)
        assert [e.kind for e in events] == [POLICY_DENIED]
        now[0] += DENIAL_EVERY_S
        assert not node.policy.allowed(stranger, COMPUTE)
        assert len(events) == 2 and events[1].details["suppressed"] == 499
