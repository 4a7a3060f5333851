"""Micro-benchmark: what the policy check costs per request, against no policy, in the same run.

Every stage RUN and every assignment calls :meth:`PolicyService.allowed` once; a node without a
policy calls a function that answers True (the stage server's default). This times both with
``timeit`` on the same interpreter and prints ns per call and the ratio, for each way a decision
can go (this node itself, an allow rule, a member, a token holder, the open default, a denial that
is reported to an event sink), and what checking one presented token costs (decode + Ed25519
verification: paid once per token, not per request).

Usage: ``python -m scripts.bench.policy [--calls N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import trio
from nacl.signing import SigningKey

from accel_node.config import PolicySection
from accel_node.policy import COMPUTE, CONTENT, PolicyService, PolicyUpdate, Rule
from accel_node.policy.membership import sign_membership
from accel_node.policy.signed import format_key
from accel_node.policy.tokens import check, decode
from accel_node.store import AsyncStore
from p2p.events import SecurityEvent
from p2p.identity import generate_identity, peer_id_of
from scripts.bench.harness import log, machine_info, source_revision


def no_policy(peer: object) -> bool:
    return True


async def build(home: Path) -> tuple[PolicyService, dict[str, str]]:
    owner = SigningKey.generate()
    keys = generate_identity()
    store = await AsyncStore.open(home / "node.db")
    events: list[SecurityEvent] = []
    policy = PolicyService(
        key_pair=keys,
        store=store,
        settings=PolicySection(owner_key=format_key(bytes(owner.verify_key))),
        home=home,
        events=lambda e: events.clear() if len(events) > 1000 else events.append(e),
    )
    await policy.load()
    peers = {name: str(peer_id_of(generate_identity())) for name in ("rule", "member", "token", "stranger")}
    members = sign_membership(
        lambda m: bytes(owner.sign(m).signature),
        bytes(owner.verify_key),
        [peers["member"], *(str(peer_id_of(generate_identity())) for _ in range(999))],
        version=1,
        ttl_s=3600,
        now=time.time(),
    )
    rules = [Rule(peers["rule"], COMPUTE, "allow")]
    await policy.update(PolicyUpdate(rules=rules, membership=members.text()))
    token = policy.issue(peers["token"], [COMPUTE], 3600)
    assert policy.accept(peers["token"], [token.encode()])[0][1] == "accepted"
    peers["self"] = policy.local_id
    peers["token_raw"] = token.encode().hex()
    return policy, peers


def ns_per_call(fn: Any, calls: int) -> float:
    best = min(timeit.repeat(fn, number=calls, repeat=5))
    return best / calls * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        policy, peers = trio.run(build, Path(tmp))
        baseline = ns_per_call(lambda: no_policy(peers["stranger"]), args.calls)
        cases = {
            "self": (peers["self"], COMPUTE),
            "allow rule": (peers["rule"], COMPUTE),
            "member (1000 listed)": (peers["member"], COMPUTE),
            "token holder": (peers["token"], COMPUTE),
            "open default (content)": (peers["stranger"], CONTENT),
            "denied + event": (peers["stranger"], COMPUTE),
        }
        rows = []
        for name, (peer, action) in cases.items():
            ns = ns_per_call(lambda p=peer, a=action: policy.allowed(p, a), args.calls)
            rows.append({"case": name, "ns_per_call": round(ns, 1), "ratio": round(ns / baseline, 2)})
        raw = bytes.fromhex(peers["token_raw"])
        verify_us = (
            ns_per_call(
                lambda: check(
                    decode(raw),
                    trusted_issuers=policy.trusted_issuers,
                    presenter=peers["token"],
                    now=time.time(),
                    revoked=lambda _: False,
                ),
                2000,
            )
            / 1000
        )
    result = {
        "source": source_revision(),
        "machine": machine_info(),
        "baseline_ns_per_call": round(baseline, 1),
        "cases": rows,
        "token_check_us": round(verify_us, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    log(f"source {result['source']}")
    print(f"no policy (allow-all function): {baseline:8.1f} ns/call")
    for row in rows:
        print(f"{row['case']:24} {row['ns_per_call']:8.1f} ns/call  x{row['ratio']:.2f} of no policy")
    print(f"checking one presented token (decode + Ed25519 verify): {verify_us:.1f} us, once per token")


if __name__ == "__main__":
    main()
