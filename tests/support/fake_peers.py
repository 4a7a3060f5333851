"""A lying pipeline-stage server, run as its own OS process by tests:
``python -m tests.support.fake_peers ...``.

It joins the network the way a daemon that serves a stage does, built from library pieces only (no
test hooks in production code): a Noise-only py-libp2p host (:func:`p2p.host.build_host`), the record
DHT (:class:`p2p.dht.RecordDHT`), bulk channels (:class:`p2p.bulk.BulkService`) and a
:class:`~accel_node.shard.server.StageServer` whose :meth:`run_stage` shifts every computed float output
by ``--shift`` (carried tensors untouched). It serves one stage of a shard plan: the stage's bytes are
re-extracted from the model file at the plan's cuts and dims (:func:`accel_node.shard.extract_stages`)
and must have the plan's stage CID. It announces the stage like a daemon: a DHT provider record under
:func:`accel_node.shard.directory.shard_key` and a signed capability record (``/accel/cap/<peer-id>``)
whose ``shards`` entry names the model, stage and plan, refreshed while it runs.

Progress goes to ``--status`` (JSON, replaced atomically): ``peer_id``, ``addrs``, ``ready`` (serving and
announced), ``runs`` (stage computations, i.e. lies told) and ``published`` (capability records stored
by at least one peer).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import trio
from libp2p.crypto.keys import KeyPair
from multiaddr import Multiaddr

from accel_node import __version__
from accel_node.capability import KIND, NAMESPACE, CapabilityBody, HardwareSummary, Load, ShardEntry
from accel_node.shard import directory
from accel_node.shard.partition import Stage, extract_stages
from accel_node.shard.retention import Retention
from accel_node.shard.runner import StageRunner
from accel_node.shard.server import StageServer
from p2p.addrs import parse_peer_addr
from p2p.bulk import BulkService
from p2p.dht import RecordDHT, record_key
from p2p.host import HostSettings, build_host, dial, listening_addrs, run_host
from p2p.identity import generate_identity, peer_id_of
from p2p.records import sign_record

log = logging.getLogger("liar_stage")

LOOPBACK = Multiaddr("/ip4/127.0.0.1/tcp/0")
CAP_REFRESH_S = 10.0  # a record stays valid for twice this
EARLY_REFRESH_S = 1.0  # until some peer stored the record
ANNOUNCE_S = 30.0
Arrays = dict[str, np.ndarray[Any, Any]]


class Status:
    """The JSON status file the test reads (written whole, then renamed over the old one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {"ready": False, "runs": 0, "published": 0}

    def update(self, **changes: Any) -> None:
        with self._lock:
            self.data.update(changes)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.data))
            os.replace(tmp, self.path)

    def count_run(self) -> None:
        self.update(runs=int(self.data["runs"]) + 1)


class LyingStageServer(StageServer):
    """A stage server that returns wrong activations (and counts each computation in the status file)."""

    shift = np.float32(0.5)
    status: Status | None = None

    def run_stage(self, runner: StageRunner, frame: Arrays) -> Arrays:
        out = super().run_stage(runner, frame)
        if self.status is not None:
            self.status.count_run()
        return {
            name: value + self.shift if name in runner.output_names and value.dtype.kind == "f" else value
            for name, value in out.items()
        }


def load_stage(model_path: Path, cuts: list[int], dims: dict[str, int], index: int, stage_cid: str) -> Stage:
    """The plan's stage ``index``, re-extracted from the model; exits unless its CID is the plan's."""
    stages = extract_stages(onnx.load(str(model_path)), cuts, dims=dims)
    stage = stages[index]
    if stage.cid != stage_cid:
        raise SystemExit(
            f"stage {index} of the model at cuts {cuts} is {stage.cid}, not the plan's {stage_cid}"
        )
    return stage


def capability_body(key_pair: KeyPair, addrs: list[Multiaddr], entry: ShardEntry) -> dict[str, Any]:
    peer_id = peer_id_of(key_pair)
    body = CapabilityBody(
        name="liar",
        version=__version__,
        addrs=[f"{a}/p2p/{peer_id}" for a in addrs],
        hw=HardwareSummary(mem_total_gb=1.0, mem_free_gb=1.0, cpu="liar", cores=1),
        shards=[entry],
        load=Load(queue_depth=0, utilisation=0.0),
    )
    return body.model_dump(mode="json")


async def publish_capability(
    dht: RecordDHT, key_pair: KeyPair, addrs: list[Multiaddr], entry: ShardEntry, status: Status
) -> None:
    """Publish the signed capability record now and then, as a daemon does (sequence: ms since epoch)."""
    key = record_key(NAMESPACE, KIND, peer_id_of(key_pair))
    seq = 0
    while True:
        seq = max(seq + 1, int(time.time() * 1000))
        record = sign_record(
            key_pair,
            kind=KIND,
            seq=seq,
            expires_at=math.ceil(time.time() + 2 * CAP_REFRESH_S),
            body=capability_body(key_pair, addrs, entry),
        )
        stored = 0
        try:
            stored = await dht.put(key, record.raw)
        except Exception:  # keep publishing on the next tick, like the daemon
            log.exception("publishing the capability record failed")
        if stored:
            status.update(published=int(status.data["published"]) + 1)
        await trio.sleep(CAP_REFRESH_S if stored else EARLY_REFRESH_S)


async def announce(dht: RecordDHT, model_cid: str, stage: int) -> None:
    while True:
        await directory.announce(dht, model_cid, stage)
        await trio.sleep(ANNOUNCE_S)


async def main(args: argparse.Namespace) -> None:
    status = Status(args.status)
    stage = await trio.to_thread.run_sync(
        load_stage, args.model, args.cuts, json.loads(args.dims), args.stage, args.stage_cid
    )
    key_pair = generate_identity()
    host = build_host(key_pair, HostSettings(listen_addrs=[LOOPBACK]))
    async with trio.open_nursery() as nursery:
        await nursery.start(run_host, host, [LOOPBACK])
        addrs = listening_addrs(host)
        dht = RecordDHT(host, namespace=NAMESPACE, kinds=[KIND])
        await nursery.start(dht.run)
        bulk = BulkService(host)
        await nursery.start(bulk.run)
        server = LyingStageServer(bulk, intra_op_threads=1, retention=Retention(key_pair))
        server.shift = np.float32(args.shift)
        server.status = status
        await nursery.start(server.run)
        await server.serve(args.plan_cid, args.stage, stage.model_bytes, stage)
        for text in args.connect:
            peer_id, addr = parse_peer_addr(text)
            await dial(host, peer_id, addr, timeout_s=10)
            await dht.add_peer(peer_id)
        entry = ShardEntry(model=args.model_cid, stage=args.stage, plan=args.plan_cid)
        nursery.start_soon(publish_capability, dht, key_pair, addrs, entry, status)
        nursery.start_soon(announce, dht, args.model_cid, args.stage)
        status.update(peer_id=str(host.get_id()), addrs=[str(a) for a in addrs], ready=True)
        log.info("lying stage server ready", extra={"peer_id": str(host.get_id())})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, required=True, help="the model's ONNX file")
    parser.add_argument("--model-cid", required=True)
    parser.add_argument("--plan-cid", required=True)
    parser.add_argument("--cuts", type=int, nargs="+", required=True, help="the plan's cut positions")
    parser.add_argument("--dims", default="{}", help="the plan's dims (JSON object)")
    parser.add_argument("--stage", type=int, required=True)
    parser.add_argument("--stage-cid", required=True, help="the plan's CID of that stage")
    parser.add_argument("--connect", action="append", default=[], help="peer address /ip4/.../p2p/<id>")
    parser.add_argument("--status", type=Path, required=True, help="JSON status file to write")
    parser.add_argument("--shift", type=float, default=0.5, help="added to every computed float output")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("libp2p").setLevel(logging.WARNING)
    trio.run(main, parse_args())
