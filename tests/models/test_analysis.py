"""Model analysis checked against FLOPs and parameter counts computed by hand from the zoo's architectures."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from accel_node.models.analysis import AnalysisError, ModelAnalysis, analyse, load_model, node_costs
from accel_node.models.errors import ModelError
from tests.support.modelzoo import build_cnn, build_mlp, build_transformer

ort: Any = importlib.import_module("onnxruntime")  # ships no type information

F32 = 4  # bytes
# the zoo's transformer defaults
L, D, H, FF, VOCAB, MAX_LEN = 2, 64, 4, 128, 100, 512


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("zoo")
    return {
        "mlp": build_mlp(directory),
        "cnn": build_cnn(directory),
        "transformer": build_transformer(directory),
    }


def check_node_costs(path: Path, analysis: ModelAnalysis) -> None:
    model = load_model(path)
    costs = node_costs(model, analysis.dim_values)
    assert [c.index for c in costs] == list(range(len(model.graph.node)))
    assert [c.name for c in costs] == [n.name for n in model.graph.node]
    assert sum(c.flops for c in costs) == analysis.flops
    assert sum(c.param_bytes for c in costs) == analysis.param_bytes
    assert sum(c.output_bytes for c in costs) == analysis.activation_sum_bytes


# -- MLP -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 7])
def test_mlp(models: dict[str, Path], batch: int) -> None:
    a = analyse(models["mlp"], {"batch": batch})
    i, h, o = 64, 128, 10
    params = i * h + h + h * o + o
    assert (a.param_count, a.param_bytes) == (params, params * F32)
    assert a.params_by_dtype == {"float32": (params, params * F32)}
    gemm = 2 * i * h + h + 2 * h * o + o  # per sample, bias adds included
    assert a.flops_by_op == {"Gemm": batch * gemm, "Relu": batch * h}
    assert a.flops == batch * (gemm + h)
    assert a.flops_by_kind() == {"matmul": batch * gemm, "attention": 0, "conv": 0, "other": batch * h}
    d = a.to_dict()
    assert d["flops"]["polynomial"] == {
        "total": {"batch": gemm + h},
        "by_op": {"Gemm": {"batch": gemm}, "Relu": {"batch": h}},
    }
    assert d["flops"]["polynomial_exact"] is True
    assert a.op_histogram == {"Gemm": 2, "Relu": 1}
    # outputs: fc1 [b,h], relu [b,h], fc2 [b,o]; live at most: fc1 out + relu out (x freed after fc1)
    assert a.activation_sum_bytes == batch * (h + h + o) * F32
    assert a.activation_peak_bytes == batch * 2 * h * F32
    assert d["activations"]["sum_bytes_polynomial"] == {"batch": (h + h + o) * F32}
    assert d["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 64]}]
    assert d["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["batch", 10]}]
    assert a.dynamic_axes == {"x": {0: "batch"}, "y": {0: "batch"}}
    assert d["opsets"] == {"ai.onnx": 17} and d["dims"] == ["batch"] and d["unresolved_nodes"] == []
    assert json.loads(json.dumps(d)) == d
    check_node_costs(models["mlp"], a)


# -- CNN -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [2, 5])
def test_cnn(models: dict[str, Path], batch: int) -> None:
    a = analyse(models["cnn"], {"batch": batch})
    params = (8 * 3 * 9 + 8) + (16 * 8 * 9 + 16) + (16 * 10 + 10)
    assert (a.param_count, a.param_bytes) == (params, params * F32)
    conv1_out, pool_out, conv2_out = 8 * 16 * 16, 8 * 8 * 8, 16 * 8 * 8  # elements per sample
    conv = (2 * conv1_out * 3 * 9 + conv1_out) + (2 * conv2_out * 8 * 9 + conv2_out)
    expected = {
        "Conv": conv,
        "Relu": conv1_out + conv2_out,
        "MaxPool": pool_out * 2 * 2,  # 2x2 window per output
        "GlobalAveragePool": conv2_out,  # reads every input element
        "Gemm": 2 * 16 * 10 + 10,
    }
    assert a.flops_by_op == {k: batch * v for k, v in expected.items()}
    assert a.flops == batch * sum(expected.values())
    assert a.to_dict()["flops"]["polynomial"]["by_op"] == {k: {"batch": v} for k, v in expected.items()}
    assert a.flops_by_kind()["conv"] == batch * conv
    assert a.op_histogram == {
        "Conv": 2,
        "Relu": 2,
        "Flatten": 1,
        "Gemm": 1,
        "GlobalAveragePool": 1,
        "MaxPool": 1,
    }
    outputs = [conv1_out, conv1_out, pool_out, conv2_out, conv2_out, 16, 16, 10]  # node by node
    assert a.activation_sum_bytes == batch * sum(outputs) * F32
    assert a.activation_peak_bytes == batch * 2 * conv1_out * F32  # conv1 output + relu output
    assert a.inputs[0].shape == ("batch", 3, 16, 16)
    check_node_costs(models["cnn"], a)


# -- transformer -----------------------------------------------------------------------------------


def transformer_poly() -> dict[str, dict[str, int]]:
    """FLOPs by op as coefficients of batch*seq and batch*seq^2, from build_transformer's architecture."""
    return {
        "MatMul": {"batch*seq": L * 2 * (4 * D * D + 2 * D * FF)},  # q, k, v, o, fc1, fc2 per token
        "attention": {"batch*seq^2": L * 2 * 2 * H * (D // H)},  # QK^T and probs.V: 2*h*s*s*dh each
        # embedding add; per layer: q/k/v/o biases, 2 residuals, fc2 bias (7 * D), fc1 bias; mask add
        "Add": {"batch*seq": D + L * (7 * D + FF), "batch*seq^2": L * H},
        "Mul": {"batch*seq": 1, "batch*seq^2": L * H},  # mask scaling; 1/sqrt(dh) scaling of the scores
        "Sub": {"batch*seq": 1},  # 1 - mask
        "Softmax": {"batch*seq^2": L * H},
        "Relu": {"batch*seq": L * FF},
        "LayerNormalization": {"batch*seq": (2 * L + 1) * D},  # 1 per output element
    }


def transformer_flops(batch: int, seq: int) -> dict[str, int]:
    terms = {"batch*seq": batch * seq, "batch*seq^2": batch * seq * seq}
    return {op: sum(c * terms[t] for t, c in poly.items()) for op, poly in transformer_poly().items()}


def test_transformer(models: dict[str, Path]) -> None:
    path = models["transformer"]
    params = VOCAB * D + MAX_LEN * D + L * (4 * (D * D + D) + (D * FF + FF) + (FF * D + D) + 4 * D) + 2 * D
    for batch, seq in [(1, 16), (3, 40)]:
        a = analyse(path, {"batch": batch, "seq": seq})
        assert a.params_by_dtype["float32"] == (params, params * F32)
        expected = transformer_flops(batch, seq)
        assert a.flops_by_op == expected
        assert a.flops == sum(expected.values())
        kinds = a.flops_by_kind()
        assert (kinds["matmul"], kinds["attention"]) == (expected["MatMul"], expected["attention"])
        check_node_costs(path, a)
        flops = a.to_dict()["flops"]
        assert flops["polynomial"]["by_op"] == transformer_poly()
        total: dict[str, int] = {}
        for poly in transformer_poly().values():
            for term, c in poly.items():
                total[term] = total.get(term, 0) + c
        assert flops["polynomial"]["total"] == total
        assert flops["polynomial_exact"] is True
    assert a.dynamic_axes == {
        "input_ids": {0: "batch", 1: "seq"},
        "attention_mask": {0: "batch", 1: "seq"},
        "hidden": {0: "batch", 1: "seq"},
    }
    assert [(t.name, t.dtype) for t in a.inputs] == [("input_ids", "int64"), ("attention_mask", "int64")]
    assert a.outputs[0].shape == ("batch", "seq", D)
    assert a.op_histogram["MatMul"] == L * 8 and a.op_histogram["Softmax"] == L
    assert a.op_histogram["LayerNormalization"] == 2 * L + 1


def test_transformer_defaults_and_node_costs(models: dict[str, Path]) -> None:
    path = models["transformer"]
    a = analyse(path)
    assert a.dim_values == {"batch": 1, "seq": 128}  # seq-like dims default to 128, others to 1
    assert a.flops == sum(transformer_flops(1, 128).values())
    costs = {c.name: c for c in node_costs(load_model(path), {"batch": 2, "seq": 8})}
    q = costs["/blocks.0/attn/q/MatMul"]
    assert (q.op_type, q.flops, q.param_bytes, q.output_bytes) == (
        "MatMul",
        2 * 2 * 8 * D * D,
        D * D * F32,
        2 * 8 * D * F32,
    )
    scores = costs["/blocks.1/attn/MatMul"]
    assert (scores.flops, scores.param_bytes, scores.output_bytes) == (
        2 * 2 * H * 8 * 8 * (D // H),
        0,
        2 * H * 8 * 8 * F32,
    )
    assert costs["/tok/Gather"].param_bytes == VOCAB * D * F32
    assert costs["/Slice"].param_bytes == MAX_LEN * D * F32 and costs["/Slice"].output_bytes == 8 * D * F32


def test_transformer_layers_are_contiguous(models: dict[str, Path]) -> None:
    """What the zoo promises the partitioner: each layer is one run of nodes, and only the hidden state
    and the mask bias cross a layer boundary."""
    nodes = list(load_model(models["transformer"]).graph.node)
    for layer in range(L):
        inside = [i for i, n in enumerate(nodes) if n.name.startswith(f"/blocks.{layer}/")]
        first, last = inside[0], inside[-1]
        assert nodes[first].name == f"/blocks.{layer}/ln1/LayerNormalization"
        assert nodes[last].name == f"/blocks.{layer}/Add_1"
        strays = [n for n in nodes[first : last + 1] if not n.name.startswith(f"/blocks.{layer}/")]
        assert all(n.op_type == "Constant" and "/" not in n.name for n in strays)
        produced_before = {o for n in nodes[:first] for o in n.output}
        read = {i for n in nodes[first : last + 1] for i in n.input}
        hidden = "/Add_output_0" if layer == 0 else f"/blocks.{layer - 1}/Add_1_output_0"
        assert read & produced_before == {hidden, "/Mul_output_0"}


def test_zoo_models_run_with_dynamic_axes(models: dict[str, Path]) -> None:
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        out = ort.InferenceSession(str(models["mlp"])).run(
            None, {"x": rng.standard_normal((batch, 64), np.float32)}
        )
        assert out[0].shape == (batch, 10)
        x = rng.standard_normal((batch, 3, 16, 16), np.float32)
        assert ort.InferenceSession(str(models["cnn"])).run(None, {"x": x})[0].shape == (batch, 10)
        ids = rng.integers(0, VOCAB, (batch, 9), dtype=np.int64)
        mask = np.ones((batch, 9), np.int64)
        session = ort.InferenceSession(str(models["transformer"]))
        (hidden,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
        assert hidden.shape == (batch, 9, D) and np.isfinite(hidden).all()
        mask[:, 6:] = 0  # padded positions: what they hold must not reach the visible ones
        masked = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        ids[:, 6:] = (ids[:, 6:] + 1) % VOCAB
        repadded = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        np.testing.assert_allclose(repadded[:, :6], masked[:, :6], atol=1e-6)
        assert not np.allclose(masked[:, :6], hidden[:, :6])


# -- other operators, errors -----------------------------------------------------------------------


def test_einsum_attention_convtranspose_and_unknown_ops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # ONNX Runtime's own infer_shapes would write a debug model here
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])
    img = helper.make_tensor_value_info("img", TensorProto.FLOAT, ["batch", 4, 5, 5])
    outs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("scores", "proj", "up", "odd")
    ]
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 6], np.zeros(48, np.float32))
    k = helper.make_tensor("k", TensorProto.FLOAT, [4, 2, 3, 3], np.zeros(72, np.float32))
    nodes = [
        helper.make_node("Einsum", ["x", "x"], ["scores"], equation="bid,bjd->bij", name="qk"),
        helper.make_node("Einsum", ["x", "w"], ["proj"], equation="bsd,de->bse", name="proj"),
        helper.make_node("ConvTranspose", ["img", "k"], ["up"], name="up"),
        helper.make_node("Mystery", ["proj"], ["odd"], domain="example.ops", name="mystery"),
    ]
    graph = helper.make_graph(nodes, "g", [x, img], outs, [w, k])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.ops", 1)]
    )
    b, s = 3, 10
    a = analyse(model, {"batch": b, "seq": s})
    assert a.flops_by_op == {
        "attention": 2 * b * s * s * 8,
        "Einsum": 2 * b * s * 6 * 8,
        "ConvTranspose": 2 * (b * 4 * 5 * 5) * 2 * 9,  # every input pixel times C_out/group * kernel
    }
    assert a.unresolved_nodes == ("mystery",)
    assert a.op_histogram["example.ops.Mystery"] == 1
    assert a.to_dict()["flops"]["polynomial"]["by_op"]["attention"] == {"batch*seq^2": 16}
    assert list(tmp_path.iterdir()) == []


def test_unreadable_and_unsupported(tmp_path: Path, models: dict[str, Path]) -> None:
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x01\xff\xfe not a protobuf" * 10)
    (tmp_path / "empty.onnx").write_bytes(b"")
    for name in ("garbage.onnx", "empty.onnx", "missing.onnx"):
        with pytest.raises(AnalysisError, match=name):
            analyse(tmp_path / name)
    assert issubclass(AnalysisError, ModelError)
    with pytest.raises(AnalysisError, match=r"unknown dim.*seq"):
        analyse(models["mlp"], {"seq": 4})
    with pytest.raises(AnalysisError, match="positive"):
        analyse(models["mlp"], {"batch": 0})
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    unsorted = helper.make_graph(
        [helper.make_node("Relu", ["h"], ["y"]), helper.make_node("Neg", ["x"], ["h"])], "g", [x], [x]
    )
    with pytest.raises(AnalysisError, match="topologically"):
        analyse(helper.make_model(unsorted, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(AnalysisError, match="not an ONNX model"):
        analyse(onnx.ModelProto())
