"""The DHT benchmark's network: a sparse topology, hop distances, one capability lookup, and the
daemons' log complaints grouped by message."""

from __future__ import annotations

import collections
import concurrent.futures
import random
import re
import time
from typing import Any

from accel_node.client import Client
from accel_node.core import endpoints as E
from accel_node.errors import ApiError, DaemonTimeoutError
from scripts.bench.harness import Daemon

LOG_LINE = re.compile(r"^\S+Z\s+(WARNING|ERROR|CRITICAL)\s")  # accel_node's text log format
LIBP2P_LINE = re.compile(r"^(Failed|Error|Exception|Timeout|Unexpected)")  # py-libp2p's own messages
TIMESTAMP = re.compile(r"^\S+Z\s+")
PEER_ID = re.compile(r"\b(12D3KooW|Qm)[1-9A-HJ-NP-Za-km-z]{20,}")
NUMBER = re.compile(r"\d+(\.\d+)?")


def build_edges(n: int, chords: int, rng: random.Random) -> list[tuple[int, int]]:
    """A ring over ``n`` nodes plus ``chords`` random extra edges (no duplicates, no self-loops)."""
    edges = {(min(i, (i + 1) % n), max(i, (i + 1) % n)) for i in range(n)}
    target = min(n * (n - 1) // 2, len(edges) + chords)
    while len(edges) < target:
        a, b = rng.sample(range(n), 2)
        edges.add((min(a, b), max(a, b)))
    return sorted(edges)


def hop_matrix(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    adj: dict[int, list[int]] = collections.defaultdict(list)
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    dist = []
    for src in range(n):
        row = [-1] * n
        row[src] = 0
        queue = collections.deque([src])
        while queue:
            u = queue.popleft()
            for v in adj[u]:
                if row[v] < 0:
                    row[v] = row[u] + 1
                    queue.append(v)
        dist.append(row)
    return dist


def lookup(client: Client, peer_id: str) -> tuple[float, int, dict[str, Any] | None, float]:
    """One capability lookup: (seconds, status code, body or None, unix time at start)."""
    wall = time.time()
    t0 = time.perf_counter()
    try:
        response = client.transport.send(E.PEER, path={"peer_id": peer_id}, checked=False)
    except DaemonTimeoutError:  # the daemon is slow, not gone: a lookup that took too long
        return time.perf_counter() - t0, 0, None, wall
    elapsed = time.perf_counter() - t0
    body = (
        response.json() if response.headers.get("content-type", "").startswith("application/json") else None
    )
    return elapsed, response.status_code, body, wall


def fresh_capability(status: int, body: dict[str, Any] | None, started_wall: float) -> bool:
    """The lookup returned a capability verified during this request (not an older stored copy)."""
    if status != 200 or not body or body.get("capability") is None:
        return False
    verified = body.get("capability_verified_at")
    return verified is not None and float(verified) >= started_wall - 1.0


def p2p_addr(daemon: Daemon) -> str:
    """The daemon's loopback address with its ``/p2p/`` suffix."""
    addr = daemon.addr
    return addr if "/p2p/" in addr else f"{addr}/p2p/{daemon.peer_id}"


def connected_counts(clients: list[Client]) -> list[int]:
    return [c.node.status().connected_peers for c in clients]


def connect_topology(clients: list[Client], addrs: list[str], edges: list[tuple[int, int]]) -> None:
    def one(edge: tuple[int, int]) -> None:
        a, b = edge
        try:
            clients[a].peers.connect(addrs[b])
        except ApiError as exc:
            raise RuntimeError(f"connect {a} -> {b} failed: {exc}") from exc

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, edges))


def _normalize(line: str) -> str:
    line = TIMESTAMP.sub("", line.strip())
    line = PEER_ID.sub("<peer>", line)
    return NUMBER.sub("N", line)[:200]


def scan_logs(daemons: list[Daemon], top: int = 10) -> dict[str, Any]:
    """Group the daemons' warnings, errors, tracebacks and py-libp2p complaints by message."""
    counts: collections.Counter[str] = collections.Counter()
    groups: collections.Counter[str] = collections.Counter()
    for d in daemons:
        try:
            lines = d.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                counts["traceback"] += 1
                # the exception is the first unindented line after the frames
                exc = next(
                    (
                        x
                        for x in lines[i + 1 : i + 400]
                        if x and not x[0].isspace() and not x.startswith(("Traceback", "During", "The above"))
                    ),
                    "?",
                )
                groups[f"traceback: {_normalize(exc)}"] += 1
            elif m := LOG_LINE.search(line):
                counts[m.group(1).lower()] += 1
                groups[_normalize(line)] += 1
            elif LIBP2P_LINE.match(line):
                counts["libp2p"] += 1
                groups[f"libp2p: {_normalize(line)}"] += 1
    return {"counts": dict(counts), "top": groups.most_common(top)}
