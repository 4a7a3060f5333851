"""The shard benchmark's daemons and models: five daemons (s0, s1, s2, a spare r and L), the
models built, published on s0 and fetched where their stages run, plans made and stages served."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from accel_node.client import Client
from accel_node.core.schemas import PlanRequest, PublishRequest, ServeRequest
from scripts.bench.harness import (
    REPO_ROOT,
    Cluster,
    Daemon,
    in_threads,
    log,
    process_env,
)

TRANSPORT_COLUMNS = 1 << 20  # float32 per row: 4 MiB
TRANSPORT_ADDS = 8


def build_transport_model(
    directory: Path, *, columns: int = TRANSPORT_COLUMNS, adds: int = TRANSPORT_ADDS
) -> Path:
    """``y = x + c_1 + ... + c_adds`` on ``x`` float32 ``[rows, columns]`` (rows dynamic): every cut
    point moves the whole tensor, and there is next to nothing to compute."""
    import onnx
    from onnx import TensorProto, helper

    nodes, inits = [], []
    prev = "x"
    for i in range(adds):
        const = f"c{i}"
        inits.append(helper.make_tensor(const, TensorProto.FLOAT, [1], [0.25 * (i + 1)]))
        out = "y" if i == adds - 1 else f"h{i}"
        nodes.append(helper.make_node("Add", [prev, const], [out], name=f"add{i}"))
        prev = out
    graph = helper.make_graph(
        nodes,
        "transport",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", columns])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", columns])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "transport.onnx"
    onnx.save(model, str(path))
    return path


TF12_SCRIPT = """
import sys
from pathlib import Path
from tests.support.modelzoo import build_transformer
print(build_transformer(Path(sys.argv[1]), layers=12, d_model=256, heads=4, ff=1024))
"""


def start_tf12_build(directory: Path) -> subprocess.Popen[str]:
    """Build the 12-layer transformer in a child process (torch import and export take a while)."""
    return subprocess.Popen(
        [sys.executable, "-c", TF12_SCRIPT, str(directory)],
        cwd=REPO_ROOT,
        env=process_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def token_inputs(rng: np.random.Generator, batch: int, seq: int) -> dict[str, np.ndarray[Any, Any]]:
    ids = rng.integers(0, 100, (batch, seq)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class ShardCluster(Cluster):
    """The benchmark's daemons, by name, and the models published on s0 (name -> CID, name -> file)."""

    def __init__(self, root: Path, specs: dict[str, dict[str, str]]) -> None:
        super().__init__(root, specs)
        self.models: dict[str, str] = {}
        self.paths: dict[str, Path] = {}


def new_cluster(tmp: Path, micro_batch: int) -> ShardCluster:
    one = {"ACCEL_NODE_RUNTIME_INTRA_OP_THREADS": "1"}
    specs = {
        "s0": {**one, "ACCEL_NODE_SHARD_MICRO_BATCH": str(micro_batch)},
        "s1": one,
        "s2": one,
        "r": one,
        "L": {"ACCEL_NODE_RUNTIME_INTRA_OP_THREADS": "2"},
    }
    return ShardCluster(tmp / "nodes", specs)


@contextmanager
def cluster_of(tmp: Path, micro_batch: int) -> Iterator[ShardCluster]:
    """The five daemons started, each pair connected; stopped (SIGTERM, then SIGKILL) afterwards."""
    cluster = new_cluster(tmp, micro_batch)
    try:
        cluster.start(timeout=180)
        cluster.connect()
        yield cluster
    except BaseException:
        for node in cluster:
            if node.proc is not None:
                log(f"log tail of {node.name}:\n{node.log(tail=3000)}")
        raise
    finally:
        cluster.stop()


def share_models(cluster: ShardCluster, dirs: dict[str, Path], holders: dict[str, list[str]]) -> None:
    """Publish each model directory on s0 and fetch it on the daemons ``holders[name]``."""
    s0 = cluster["s0"]
    key = s0.api.keys.new_key("bench")
    for node in cluster.nodes.values():
        if node is not s0:
            node.api.keys.trust(key.public_key, "bench")
    for name, directory in dirs.items():
        view = s0.api.models.publish(PublishRequest(dir=str(directory), key="bench"))
        cluster.models[name] = view.cid
        cluster.paths[name] = next(directory.glob("*.onnx"))
    calls: list[Callable[[], Any]] = []
    for name, names in holders.items():
        cid = cluster.models[name]
        for holder in names:
            calls.append(partial(cluster[holder].api.models.fetch, cid))
    in_threads(calls)


def make_plan(cluster: ShardCluster, model: str, stage_nodes: list[str]) -> dict[str, Any]:
    """Plan ``model`` on s0 for ``stage_nodes`` (one stage each) and serve every stage on its node."""
    peers = [cluster[n].peer_id for n in stage_nodes]
    cid = cluster.models[model]
    plan = cluster["s0"].api.shards.plan(PlanRequest(cid=cid, stages=len(peers), peers=peers))
    serve_stages(cluster, model, plan["plan"], list(enumerate(stage_nodes)))
    return plan


def serve_stages(cluster: ShardCluster, model: str, plan_cid: str, placement: list[tuple[int, str]]) -> None:
    cid = cluster.models[model]
    in_threads(
        [
            partial(cluster[name].api.shards.serve, ServeRequest(cid=cid, stage=stage, plan=plan_cid))
            for stage, name in placement
        ]
    )


def wait_for_route(
    cluster: ShardCluster, model: str, plan_cid: str, want: list[set[str]], timeout: float = 90
) -> None:
    """Until s0 lists exactly the peers ``want[i]`` (daemon names) as serving stage i of the plan."""
    ids = {cluster[n].peer_id: n for n in cluster.nodes}
    deadline = time.monotonic() + timeout
    seen: list[set[str]] = []
    while time.monotonic() < deadline:
        listing = cluster["s0"].api.shards.list(cid=cluster.models[model])
        found = next((p for p in listing["plans"] if p["plan"] == plan_cid), None)
        if found is not None:
            seen = [{ids.get(p, p) for p in s.get("peers", [])} for s in found["stages"]]
            if seen == want:
                return
        time.sleep(0.5)
    raise RuntimeError(f"s0 does not see the replicas of plan {plan_cid}: {seen} (want {want})")


def stage_loads(node: Daemon, plan_cid: str, client: Client | None = None) -> dict[int, dict[str, Any]]:
    """``GET /v1/shards`` loads of ``plan_cid``'s stages served by ``node`` (through ``client``, one
    of ``node``'s, or a new one), by stage index."""
    if client is None:
        with node.client(30) as own:
            listing = own.shards.list(lookup=False)
    else:
        listing = client.shards.list(lookup=False)
    return {int(load["stage"]): load for load in listing["loads"] if load["model"] == plan_cid}


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)
