"""Partitioner and shard plans: stages run in sequence with real ONNX Runtime sessions equal the full model;
cuts are the exact optimum of the balance objective; memory caps hold; stage bytes are deterministic (also in
another process); plans round-trip and every tampering is refused."""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import cbor2
import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pytest
import torch
from libp2p.crypto.keys import KeyPair
from onnx import TensorProto, helper
from torch import nn

from accel_node.shard import PartitionError, PlanError
from accel_node.shard import plan as plan_module
from accel_node.shard.partition import GraphProfile, Stage, extract_stages, partition, profile_graph
from accel_node.shard.plan import decode_plan, make_plan, plan_cid, sign_plan, verify_plan
from p2p.content import import_bytes
from p2p.identity import generate_identity, peer_id_of
from tests.support.daemons import REPO_ROOT
from tests.support.modelzoo import Zoo, zoo  # noqa: F401

REPO = REPO_ROOT
MODEL_CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
TOLERANCE = 1e-4


# -- models ------------------------------------------------------------------------------------------


class DeepMLP(nn.Module):
    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight equal Linear(64, 64) layers with ReLUs between (Gemm/Relu alternating), batch dynamic."""
    torch.manual_seed(0)
    model = DeepMLP([64] * 9).eval()
    path = tmp_path_factory.mktemp("deep-mlp") / "mlp8.onnx"
    with torch.no_grad():
        torch.onnx.export(
            model, (torch.randn(2, 64),), str(path), opset_version=17, dynamo=False, input_names=["x"],
            output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def models(mlp_path: Path, zoo: Zoo) -> dict[str, onnx.ModelProto]:  # noqa: F811
    return {
        "mlp": onnx.load(str(mlp_path)),
        "cnn": onnx.load(str(zoo.cnn())),
        "transformer": onnx.load(str(zoo.transformer(layers=4))),
    }


@pytest.fixture(scope="module")
def profiles(models: dict[str, onnx.ModelProto]) -> dict[str, GraphProfile]:
    return {name: profile_graph(model) for name, model in models.items()}


def feeds_for(name: str, batch: int, seq: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if name == "mlp":
        return {"x": rng.standard_normal((batch, 64), dtype=np.float32)}
    if name == "cnn":
        return {"x": rng.standard_normal((batch, 3, 16, 16), dtype=np.float32)}
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[0, seq - 2 :] = 0  # padding in the first sequence: the mask must reach every layer
    return {"input_ids": rng.integers(0, 100, (batch, seq), dtype=np.int64), "attention_mask": mask}


def sessions(stages: Sequence[Stage]) -> list[ort.InferenceSession]:
    return [ort.InferenceSession(s.model_bytes, providers=["CPUExecutionProvider"]) for s in stages]


def run_chain(
    stages: Sequence[Stage], runs: Sequence[ort.InferenceSession], feeds: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run the stages as a pipeline does: each gets the frame of its start boundary, hands on the next."""
    frame = dict(feeds)
    for stage, session in zip(stages, runs, strict=True):
        assert [i.name for i in session.get_inputs()] == [t.name for t in stage.inputs]
        names = [t.name for t in stage.outputs]
        produced = dict(
            zip(names, session.run(names, {t.name: frame[t.name] for t in stage.inputs}), strict=True)
        )
        frame = {name: produced[name] if name in produced else frame[name] for name in stage.boundary}
    return frame


def assert_chain_matches(
    model: onnx.ModelProto, stages: Sequence[Stage], feeds_list: list[dict[str, np.ndarray]]
) -> None:
    full = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    runs = sessions(stages)
    for feeds in feeds_list:
        expected = dict(zip([o.name for o in full.get_outputs()], full.run(None, feeds), strict=True))
        frame = run_chain(stages, runs, feeds)
        assert list(frame) == [o.name for o in model.graph.output]
        for name, value in expected.items():
            assert frame[name].shape == value.shape
            assert float(np.max(np.abs(frame[name] - value))) <= TOLERANCE, name


# -- correctness -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
@pytest.mark.parametrize("k", [2, 3])
def test_stages_in_sequence_equal_the_full_model(
    name: str, k: int, models: dict[str, onnx.ModelProto]
) -> None:
    model = models[name]
    result = partition(model, stages=k)
    assert len(result.stages) == k and len(result.cuts) == k - 1
    rng = np.random.default_rng(k)
    seqs = (5, 16) if name == "transformer" else (1,)
    assert_chain_matches(model, result.stages, [feeds_for(name, b, s, rng) for b in (1, 3) for s in seqs])
    for stage in result.stages:
        stage_model = onnx.load_from_string(stage.model_bytes)
        onnx.checker.check_model(stage_model, full_check=True)
        assert list(stage_model.opset_import) == list(model.opset_import)
        assert stage.cid == str(import_bytes(stage.model_bytes)[0].root)
        assert stage.flops > 0 and stage.activation_bytes > 0
        held = [
            *stage_model.graph.initializer,
            *(n.attribute[0].t for n in stage_model.graph.node if n.op_type == "Constant"),
        ]
        assert stage.param_bytes == sum(onnx.numpy_helper.to_array(t).nbytes for t in held) > 0
        for spec in (*stage.inputs, *stage.outputs):  # the dynamic batch dim stays symbolic at every boundary
            assert spec.shape[0] == "batch", spec
    assert sum(s.flops for s in result.stages) == profile_graph(model).total_flops


def test_transformer_cuts_only_where_hidden_state_and_mask_cross(models: dict[str, onnx.ModelProto]) -> None:
    model = models["transformer"]
    nodes = model.graph.node
    for dims in ({"batch": 1, "seq": 128}, {"batch": 4, "seq": 512}):
        profile = profile_graph(model, dims)
        layer_cuts = [p for p in profile.candidates() if nodes[p.position - 1].name.startswith("/blocks.")]
        # after each of the 4 layers' attention residual (Add) and after each layer (Add_1): nothing inside
        # an attention block or after a LayerNorm
        assert [nodes[p.position - 1].name for p in layer_cuts] == [
            f"/blocks.{i}/{add}" for i in range(4) for add in ("Add", "Add_1")
        ]
        hidden = dims["batch"] * dims["seq"] * 64 * 4
        for p in layer_cuts[:-2]:  # the last layer no longer needs the mask
            assert set(p.crossing) == {nodes[p.position - 1].output[0], "/Mul_output_0"}
            assert p.crossing_bytes == hidden + dims["batch"] * dims["seq"] * 4
        assert [p.crossing_bytes for p in layer_cuts[-2:]] == [hidden, hidden]


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_candidates_are_the_cut_points_without_a_much_cheaper_cut_on_both_sides(
    name: str, profiles: dict[str, GraphProfile]
) -> None:
    profile = profiles[name]
    points = profile.cut_points()
    ends = [sum(profile.sizes[t] for t in profile.graph.boundaries[i]) for i in (0, profile.graph.n)]
    expected = []
    for i, p in enumerate(points):
        before = [ends[0], *(q.crossing_bytes for q in points[:i])]
        after = [*(q.crossing_bytes for q in points[i + 1 :]), ends[1]]
        dominated = min(before) * 1.5 < p.crossing_bytes and min(after) * 1.5 < p.crossing_bytes
        if not dominated:
            expected.append(p)
    assert profile.candidates() == expected
    assert len(expected) >= 3


def test_transformer_stage_boundaries(models: dict[str, onnx.ModelProto]) -> None:
    model = models["transformer"]
    nodes = model.graph.node
    result = partition(model, stages=2, dims={"batch": 2, "seq": 32})
    assert nodes[result.cuts[0] - 1].name == "/blocks.1/Add_1"  # 2 layers each
    first, second = result.stages
    assert [t.name for t in first.inputs] == ["input_ids", "attention_mask"]
    assert [(t.name, t.dtype, t.shape) for t in first.outputs] == [
        ("/Mul_output_0", "float32", ("batch", 1, 1, "seq")),
        ("/blocks.1/Add_1_output_0", "float32", ("batch", "seq", 64)),
    ]
    assert [t.name for t in second.inputs] == [t.name for t in first.outputs]
    three = partition(model, stages=3)
    assert [t.name for t in three.stages[1].carried] == ["/Mul_output_0"]  # read by stage 2 too


def test_shared_initializers_constants_and_early_outputs() -> None:
    """Every cut of a graph with a shared weight, a shared Constant, a graph input read at the end and a graph
    output produced early: the weight and the constant are duplicated, the rest is carried."""
    w = helper.make_tensor(
        "W", TensorProto.FLOAT, [8, 8], np.random.default_rng(1).standard_normal(64).tolist()
    )
    nodes = [
        helper.make_node(
            "Constant", [], ["c"], value=helper.make_tensor("cv", TensorProto.FLOAT, [8], [0.5] * 8)
        ),
        helper.make_node("MatMul", ["x", "W"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["aux"]),
        helper.make_node("MatMul", ["aux", "W"], ["h2"]),
        helper.make_node("Add", ["h2", "c"], ["s2"]),
        helper.make_node("Tanh", ["s2"], ["r2"]),
        helper.make_node("MatMul", ["r2", "W"], ["h3"]),
        helper.make_node("Add", ["h3", "c"], ["s3"]),
        helper.make_node("Add", ["s3", "x"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8]),
        helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["batch", 8]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], outputs, [w]), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.standard_normal((b, 8), dtype=np.float32)} for b in (1, 3)]
    extracted = 0
    for k in (1, 2, 3):
        for cuts in itertools.combinations(range(1, len(nodes)), k - 1):
            if cuts and cuts[0] == 1:  # the first stage would hold only the Constant
                with pytest.raises(PartitionError, match="non-empty"):
                    extract_stages(model, cuts)
                continue
            stages = extract_stages(model, cuts)
            assert_chain_matches(model, stages, feeds)
            for stage in stages:
                graph = onnx.load_from_string(stage.model_bytes).graph
                uses_w = any(n.op_type == "MatMul" for n in graph.node)
                assert [t.name for t in graph.initializer] == (["W"] if uses_w else [])  # one copy per stage
                reads_c = any("c" in n.input for n in graph.node)
                assert reads_c == any(n.op_type == "Constant" for n in graph.node)
                assert "c" not in stage.boundary
            extracted += 1
    assert extracted == 1 + 7 + 21
    stages = extract_stages(model, [3, 6])
    assert ([t.name for t in stages[0].outputs], [t.name for t in stages[0].carried]) == (["aux"], ["x"])
    assert ([t.name for t in stages[1].outputs], [t.name for t in stages[1].carried]) == (
        ["r2"],
        ["x", "aux"],
    )
    assert [t.name for t in stages[2].inputs] == ["x", "r2"] and stages[2].boundary == ("y", "aux")


# -- balance -----------------------------------------------------------------------------------------


def brute_force(
    profile: GraphProfile, k: int, weights: Sequence[float], caps: Sequence[int] | None = None
) -> tuple[tuple[int, ...], float]:
    """The lexicographically first optimum over every choice of k-1 candidate cuts."""
    n = profile.graph.n
    best: tuple[tuple[int, ...], float] = ((), float("inf"))
    for cuts in itertools.combinations([p.position for p in profile.candidates()], k - 1):
        bounds = [0, *cuts, n]
        if caps is not None and any(
            sum(profile.stage_memory(a, b)) > cap for a, b, cap in zip(bounds, bounds[1:], caps, strict=False)
        ):
            continue
        value = profile.objective(cuts, weights)
        if value < best[1]:
            best = (cuts, value)
    return best


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
@pytest.mark.parametrize("weights", [[1, 1], [1, 3], [3, 1], [1, 2, 1], [2, 1, 1]])
def test_cuts_are_the_optimum_of_the_objective(
    name: str, weights: list[float], profiles: dict[str, GraphProfile]
) -> None:
    profile = profiles[name]
    cuts, objective = profile.balance(len(weights), weights)
    assert (cuts, objective) == brute_force(profile, len(weights), weights)


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_weights_one_to_three_give_the_second_stage_three_times_the_flops(
    name: str, models: dict[str, onnx.ModelProto]
) -> None:
    result = partition(models[name], stages=2, weights=[1, 3])
    first, second = result.stages
    ratio = second.flops / first.flops
    # MLP: the cut after the 2nd of 8 equal layers; transformer: after the 1st of 4 layers (+ embedding)
    assert 2.5 <= ratio <= 3.1, ratio
    assert result.objective == max(first.flops / 1, second.flops / 3)


def test_memory_caps_are_respected(
    models: dict[str, onnx.ModelProto], profiles: dict[str, GraphProfile]
) -> None:
    model, profile = models["transformer"], profiles["transformer"]
    free = partition(model, stages=2)
    first = free.stages[0].memory_bytes
    caps = [first - 1, 10 * first]  # the balanced cut no longer fits the first peer
    capped = partition(model, stages=2, memory_caps=caps)
    assert capped.cuts != free.cuts
    assert all(s.memory_bytes <= cap for s, cap in zip(capped.stages, caps, strict=True))
    assert (capped.cuts, capped.objective) == brute_force(profile, 2, [1, 1], caps)

    n = profile.graph.n
    smallest = min(
        max(sum(profile.stage_memory(a, b)) for a, b in itertools.pairwise([0, *cuts, n]))
        for cuts in itertools.combinations([p.position for p in profile.candidates()], 2)
    )
    with pytest.raises(PartitionError, match=f"smallest cap that works for every peer is {smallest} bytes"):
        partition(model, stages=3, memory_caps=[smallest - 1] * 3)
    fits = partition(model, stages=3, memory_caps=[smallest] * 3)
    assert max(s.memory_bytes for s in fits.stages) <= smallest


def test_bad_arguments_are_refused(models: dict[str, onnx.ModelProto]) -> None:
    model = models["cnn"]
    for kwargs, match in [
        ({"stages": 0}, "stages must be"),
        ({"stages": 2, "weights": [1.0]}, "1 weights given for 2 stages"),
        ({"stages": 2, "weights": [1.0, -1.0]}, "finite and positive"),
        ({"stages": 2, "memory_caps": [10]}, "1 memory caps"),
        ({"stages": 40}, "cannot be split into 40 stages"),
        ({"stages": 2, "dims": {"nope": 3}}, "unknown dim"),
    ]:
        with pytest.raises(PartitionError, match=match):
            partition(model, **kwargs)  # type: ignore[arg-type]
    for cuts in ([0], [3, 3], [5, 2], [len(model.graph.node)]):
        with pytest.raises(PartitionError):
            extract_stages(model, cuts)


# -- determinism -------------------------------------------------------------------------------------


def test_stage_bytes_are_deterministic(models: dict[str, onnx.ModelProto]) -> None:
    model = models["transformer"]
    first = partition(model, stages=3, weights=[1, 2, 1])
    again = partition(model, stages=3, weights=[1, 2, 1])
    assert [s.model_bytes for s in first.stages] == [s.model_bytes for s in again.stages]
    # the bytes depend on the cuts only, never on the dims the figures were computed at
    other_dims = extract_stages(model, first.cuts, dims={"batch": 7, "seq": 40})
    assert [s.cid for s in other_dims] == [s.cid for s in first.stages]
    assert [s.flops for s in other_dims] != [s.flops for s in first.stages]
    for stage in first.stages:
        m = onnx.load_from_string(stage.model_bytes)
        assert (m.producer_name, m.doc_string, m.graph.doc_string, len(m.metadata_props)) == (
            "accel-node-shard",
            "",
            "",
            0,
        )

    code = (
        "import sys, onnx\n"
        "from accel_node.shard.partition import partition\n"
        "model = onnx.load_from_string(sys.stdin.buffer.read())\n"
        "print(' '.join(s.cid for s in partition(model, stages=3, weights=[1, 2, 1]).stages))\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], input=model.SerializeToString(), capture_output=True, cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": "4242"}, check=False, timeout=120,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr.decode()
    assert child.stdout.decode().split() == [s.cid for s in first.stages]


# -- plans -------------------------------------------------------------------------------------------


def resign(body: dict[str, object], key_pair: KeyPair) -> bytes:
    """Sign an arbitrary plan map the way sign_plan does (to forge structurally bad but well-signed plans)."""
    signed = plan_module.DOMAIN + cbor2.dumps(body, canonical=True)
    return cbor2.dumps(
        {"plan": body, "pubkey": key_pair.public_key.serialize(), "sig": key_pair.private_key.sign(signed)},
        canonical=True,
    )


def test_plan_sign_verify_round_trip(models: dict[str, onnx.ModelProto]) -> None:
    model = models["transformer"]
    key = generate_identity()
    result = partition(model, stages=3, weights=[1, 2, 1], dims={"batch": 4, "seq": 64})
    plan = make_plan(result, model_cid=MODEL_CID, planner=peer_id_of(key), created=1_700_000_000)
    raw = sign_plan(plan, key)
    checked = verify_plan(raw, model, expect_model_cid=MODEL_CID, expect_planner=peer_id_of(key))
    assert checked == plan
    assert checked.stage_cids == tuple(s.cid for s in result.stages)
    assert checked.cuts == result.cuts and checked.dims == {"batch": 4, "seq": 64}
    assert checked.weights == (1.0, 2.0, 1.0) and checked.planner == peer_id_of(key).to_base58()
    assert [t.shape for t in checked.stages[1].inputs] == [t.shape for t in result.stages[1].inputs]
    assert decode_plan(raw) == plan
    assert plan_cid(raw) == str(import_bytes(raw)[0].root)
    # a plan at valid cuts that are not the optimum is still a correct plan
    stages = tuple(extract_stages(model, [88], dims=result.dims))
    manual = dataclasses.replace(result, cuts=(88,), stages=stages, weights=(1.0, 1.0))
    manual_raw = sign_plan(make_plan(manual, model_cid=MODEL_CID, planner=peer_id_of(key)), key)
    assert verify_plan(manual_raw, model).cuts == (88,)


def test_tampered_plans_are_refused(models: dict[str, onnx.ModelProto]) -> None:
    model = models["transformer"]
    key, other = generate_identity(), generate_identity()
    result = partition(model, stages=2)
    plan = make_plan(result, model_cid=MODEL_CID, planner=peer_id_of(key), created=1_700_000_000)
    raw = sign_plan(plan, key)
    body = plan.to_map()

    # a stage CID that is not what the model gives, signed properly
    fake = dataclasses.replace(plan.stages[1], cid=result.stages[0].cid)
    with pytest.raises(PlanError, match="plan stage 1 has CID"):
        verify_plan(sign_plan(dataclasses.replace(plan, stages=(plan.stages[0], fake)), key), model)
    # another cut with the old stages
    moved = dataclasses.replace(
        plan,
        cuts=(88,),
        stages=(dataclasses.replace(plan.stages[0], end=88), dataclasses.replace(plan.stages[1], start=88)),
    )
    with pytest.raises(PlanError, match="has CID"):
        verify_plan(sign_plan(moved, key), model)
    # lying about the memory a stage needs
    light = dataclasses.replace(plan.stages[0], param_bytes=1)
    with pytest.raises(PlanError, match="differs from the model's in param_bytes"):
        verify_plan(sign_plan(dataclasses.replace(plan, stages=(light, plan.stages[1])), key), model)
    # figures for other dims than those claimed
    with pytest.raises(PlanError, match="differs"):
        verify_plan(sign_plan(dataclasses.replace(plan, dims={"batch": 2, "seq": 128}), key), model)
    # a signature that does not verify
    outer = cbor2.loads(raw)
    outer["sig"] = bytes([outer["sig"][0] ^ 1]) + outer["sig"][1:]
    with pytest.raises(PlanError, match="signature is invalid"):
        decode_plan(cbor2.dumps(outer, canonical=True))
    # a content change under the old signature
    outer = cbor2.loads(raw)
    outer["plan"]["created"] += 1
    with pytest.raises(PlanError, match="signature is invalid"):
        decode_plan(cbor2.dumps(outer, canonical=True))
    # signed by a key that is not the named planner's
    with pytest.raises(PlanError, match="not the planner's"):
        decode_plan(resign(body, other))
    with pytest.raises(PlanError, match="signing key is another peer's"):
        sign_plan(plan, other)
    # oversize, malformed, wrong expectations, structural nonsense (well signed)
    with pytest.raises(PlanError, match="limit"):
        decode_plan(raw, max_bytes=len(raw) - 1)
    with pytest.raises(PlanError, match="limit"):
        decode_plan(raw + b"\x00" * plan_module.MAX_PLAN_BYTES)
    with pytest.raises(PlanError, match="not valid CBOR"):
        decode_plan(raw[:-3])
    with pytest.raises(PlanError, match="expected"):
        decode_plan(raw, expect_model_cid="bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
    with pytest.raises(PlanError, match="expected"):
        decode_plan(raw, expect_planner=peer_id_of(other))
    for mutate, match in [
        (lambda b: b.update(extra=1), "expected fields"),
        (lambda b: b.update(v=2), "version"),
        (lambda b: b.update(cuts=[]), "one fewer than the stages"),
        (lambda b: b.update(cuts=[10**30]), "integer"),
        (lambda b: b.update(weights=[1.0, float("nan")]), "weights"),
        (lambda b: b.update(weights=[1.0, 10**400]), "weights"),
        (lambda b: b["stages"][1].update(flops=-(10**400)), "flops"),
        (lambda b: b.update(model="not-a-cid"), "not a CID"),
        (lambda b: b["stages"][0].update(cid="bafy"), "not a CID"),
        (lambda b: b["stages"][0].update(start=1), "does not start at its cut"),
        (lambda b: b["stages"][0]["inputs"][0].update(shape=[1] * 40), "at most 32"),
        (
            lambda b: b["stages"][0].update(inputs=[{"name": "x" * 2000, "dtype": "float32", "shape": []}]),
            "1024",
        ),
        (lambda b: b.update(stages=b["stages"] * 40), "at most 64"),
    ]:
        forged = cbor2.loads(cbor2.dumps(body))
        mutate(forged)
        with pytest.raises(PlanError, match=match):
            decode_plan(resign(forged, key))
    with pytest.raises(PlanError, match="does not fit the model"):
        verify_plan(raw, models["cnn"])
