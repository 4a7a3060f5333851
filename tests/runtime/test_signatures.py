"""Signatures as real exporters write them: validation is never stricter than ONNX Runtime.

paddle2onnx writes ``?`` on every dynamic axis, other exporters ``dim_value`` -1 or tf2onnx's
``unk__N``; a voice-activity model takes ``input [N, T]``, ``state [2, N, 128]`` (its batch on axis
1) and ``sr``, an int64 scalar. The models here are built with ``onnx.helper`` to look like that
and run through validation, the codecs and the real runtime (InferenceService and its batcher).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from onnx import TensorProto, helper, numpy_helper

from accel_node.api.media import decode_request
from accel_node.models.manifest import TensorSpec
from accel_node.models.service import onnx_signature
from accel_node.runtime.batcher import batch_axis_ok
from accel_node.runtime.codecs import JSON_TYPE, NPZ_TYPE, TensorLimits
from accel_node.runtime.errors import InputError
from accel_node.runtime.service import RuntimeSettings
from accel_node.runtime.synthetic import random_inputs
from accel_node.runtime.validation import Dim, is_free, validate
from tests.runtime.test_runtime import Registry, direct, serving

LIMITS = TensorLimits()
# max_wait_ms > 0: concurrent requests wait for company, so a batchable model would be merged
SETTINGS = RuntimeSettings(intra_op_threads=1, max_batch=16, max_wait_ms=20)


def spec(name: str, *shape: Dim, dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name, dtype, tuple(shape))


def _save(path: Path, nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any]) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def paddle_model(path: Path) -> Path:
    """A detector's head as paddle2onnx writes it: ``?`` on every dynamic axis of every input.

    ``image [?, 3, ?, ?]`` -> ``pooled [?, 3]`` (sum over the spatial axes), and ``scale_factor
    [?, 2]`` -> ``scaled [?, 2]`` (doubled); the spatial axes are independent (48 x 192 is normal).
    """
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    return _save(
        path,
        [
            helper.make_node("ReduceSum", ["image", "axes"], ["pooled"], keepdims=0),
            helper.make_node("Mul", ["scale_factor", "two"], ["scaled"]),
        ],
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["?", 3, "?", "?"]),
            helper.make_tensor_value_info("scale_factor", TensorProto.FLOAT, ["?", 2]),
        ],
        [
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["?", 3]),
            helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["?", 2]),
        ],
        [axes, two],
    )


def minus_one_model(path: Path) -> Path:
    """``x [-1, unk__12]`` -> ``y = -x`` (a batch dim written as -1, a tf2onnx placeholder)."""
    return _save(
        path,
        [helper.make_node("Neg", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, "unk__12"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, "unk__13"])],
        [],
    )


def vad_model(path: Path, *, state_first: Dim = 2, sr: bool = True) -> Path:
    """A voice-activity model's signature: ``input [N, T]``, ``state [2, N, 128]``, ``sr`` (int64
    scalar) -> ``output [N, 1]``, ``stateN [2, N, 128]``.

    ``output = sum_T(input) + sum_{0,2}(state) + sr / 1000`` and ``stateN = state + sum_T(input)``
    (broadcast over axes 0 and 2): every output row depends on its own rows of *both* tensors, so
    concatenating requests along axis 0 is wrong for it (here the merged run fails on the
    mismatched N; a model that tolerated the shapes would answer wrongly). ``sr=False`` leaves the
    scalar out, so that only the state's first dim tells the batcher not to merge.
    """
    consts = [
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        numpy_helper.from_array(np.array([0, 2], np.int64), "ax02"),
        numpy_helper.from_array(np.array([1, -1, 1], np.int64), "row_shape"),
        numpy_helper.from_array(np.array(1000.0, np.float32), "thousand"),
    ]
    return _save(
        path,
        [
            helper.make_node("ReduceSum", ["input", "ax1"], ["rows"], keepdims=1),  # [N, 1]
            helper.make_node("ReduceSum", ["state", "ax02"], ["srows"], keepdims=0),  # [N]
            helper.make_node("Unsqueeze", ["srows", "ax1"], ["scol"]),  # [N, 1]
            helper.make_node("Add", ["rows", "scol"], ["both" if sr else "output"]),
            helper.make_node("Reshape", ["rows", "row_shape"], ["rows3"]),  # [1, N, 1]
            helper.make_node("Add", ["state", "rows3"], ["stateN"]),
            *(
                [
                    helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
                    helper.make_node("Div", ["srf", "thousand"], ["srk"]),
                    helper.make_node("Add", ["both", "srk"], ["output"]),
                ]
                if sr
                else []
            ),
        ],
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", "T"]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [state_first, "N", 128]),
            *([helper.make_tensor_value_info("sr", TensorProto.INT64, [])] if sr else []),
        ],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [state_first, "N", 128]),
        ],
        consts if sr else consts[:3],
    )


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


# -- validation ------------------------------------------------------------------------------------


def test_placeholder_dims_are_free_axes() -> None:
    assert all(is_free(d) for d in ("?", "", " ", "-1", "unk__0", "unk__123", None, -1, 0))
    assert not any(is_free(d) for d in ("N", "batch", "seq", "unk", "unk__x", "s0", 1, 3))
    paddle = (spec("image", "?", 3, "?", "?"), spec("scale_factor", "?", 2))
    # the standard input shape: '?' is 1, 48 and 192 at once (used to be refused as a shared dim)
    image, scale = np.zeros((1, 3, 48, 192), np.float32), np.ones((2, 2), np.float32)
    out = validate({"image": image, "scale_factor": scale}, paddle)
    assert out["image"].shape == (1, 3, 48, 192) and out["scale_factor"].shape == (2, 2)
    for shape in ([-1, "unk__1"], [None, ""], ["unk__7", "unk__7"]):
        validate({"x": np.zeros((4, 9), np.float32)}, (spec("x", *shape),))
    with pytest.raises(InputError, match="fixes it to 3"):  # static dims still are what ORT checks
        validate({"image": np.zeros((1, 4, 8, 8), np.float32), "scale_factor": scale}, paddle)


def test_named_dims_stay_consistent_where_the_model_shares_them() -> None:
    sig = (spec("ids", "batch", "seq", dtype="int64"), spec("mask", "batch", "seq", dtype="int64"))
    validate({"ids": np.zeros((2, 5), np.int64), "mask": np.zeros((2, 5), np.int64)}, sig)
    with pytest.raises(
        InputError, match=r"'mask' has size 6 on axis 1 \('seq'\), but input 'ids' has 5"
    ) as bad:
        validate({"ids": np.zeros((2, 5), np.int64), "mask": np.zeros((2, 6), np.int64)}, sig)
    assert bad.value.input_name == "mask"
    vad = (spec("input", "N", "T"), spec("state", 2, "N", 128), spec("sr", dtype="int64"))
    with pytest.raises(InputError, match=r"'state' has size 3 on axis 1 \('N'\)"):
        state = np.zeros((2, 3, 128), np.float32)
        validate({"input": np.zeros((1, 4), np.float32), "state": state, "sr": np.array(16000)}, vad)


def test_rank_0_inputs_stay_rank_0_through_json_npz_and_validation() -> None:
    vad = (spec("input", "N", "T"), spec("state", 2, "N", 128), spec("sr", dtype="int64"))
    state = np.zeros((2, 1, 128), np.float32)
    bodies = {
        "plain number": (JSON_TYPE, {"input": [[0.5] * 4], "state": state.tolist(), "sr": 16000}),
        "explicit form": (
            JSON_TYPE,
            {
                "input": [[0.5] * 4],
                "state": state.tolist(),
                "sr": {"dtype": "int64", "shape": [], "data": [16000]},
            },
        ),
    }
    for kind, doc in bodies.values():
        out = decode_request(json.dumps({"inputs": doc}).encode(), kind, vad, LIMITS)
        assert out["sr"].shape == () and out["sr"].dtype == np.int64 and int(out["sr"]) == 16000
        assert validate(out, vad)["sr"].shape == ()  # validating twice (API, then service) keeps it
    body = npz(input=np.zeros((1, 4), np.float32), state=state, sr=np.array(16000, np.int64))
    out = decode_request(body, NPZ_TYPE, vad, LIMITS)
    assert out["sr"].shape == () and validate(out, vad)["sr"].shape == ()
    with pytest.raises(InputError, match=r"'sr' has rank 1 \(shape \[1\]\); the model expects rank 0"):
        validate({"input": np.zeros((1, 4), np.float32), "state": state, "sr": np.array([16000])}, vad)


def test_batch_axis_is_axis_0_only_where_the_signature_says_so() -> None:
    assert batch_axis_ok((spec("x", "N", 8),))
    assert batch_axis_ok((spec("ids", "batch", "seq"), spec("mask", "batch", "seq")))
    assert batch_axis_ok((spec("image", "?", 3, "?", "?"), spec("scale_factor", "?", 2)))
    assert batch_axis_ok((spec("x", -1, "unk__12"),))
    vad = (spec("input", "N", "T"), spec("state", 2, "N", 128), spec("sr", dtype="int64"))
    assert not batch_axis_ok(vad)  # a static first dim, and a scalar
    assert not batch_axis_ok(vad[:2])  # the static first dim alone
    assert not batch_axis_ok((spec("input", "N", "T"), spec("state", None, "N", 128)))  # N on axis 1
    assert not batch_axis_ok((spec("input", "N", "T"), spec("state", "?", "?", 128)))  # named + free
    assert not batch_axis_ok((spec("x", "N", 4), spec("pairs", "N", "N")))  # N on axis 1 too
    assert not batch_axis_ok((spec("a", "N", 4), spec("b", "M", 4)))
    assert not batch_axis_ok((spec("sr", dtype="int64"),))


def test_random_inputs_put_a_shared_batch_dim_where_the_model_has_it() -> None:
    vad = (spec("input", "N", "T"), spec("state", 2, "N", 128), spec("sr", dtype="int64"))
    feeds = random_inputs(vad, batch=3, seq_len=5, seed=0)
    assert feeds["input"].shape == (3, 5) and feeds["state"].shape == (2, 3, 128) and feeds["sr"].shape == ()
    validate(feeds, vad)
    paddle = (spec("image", "?", 3, "?", "?"), spec("scale_factor", "?", 2))
    feeds = random_inputs(paddle, batch=2, seq_len=7, seed=0)
    assert feeds["image"].shape == (2, 3, 7, 7) and feeds["scale_factor"].shape == (2, 2)


# -- the real runtime ------------------------------------------------------------------------------


async def test_placeholder_exports_run_at_their_standard_shapes(tmp_path: Path) -> None:
    registry = Registry()
    paddle = registry.add("paddle", paddle_model(tmp_path / "paddle.onnx"))
    neg = registry.add("neg", minus_one_model(tmp_path / "neg.onnx"))
    assert onnx_signature(tmp_path / "neg.onnx")[0][0].shape == (-1, "unk__12")
    rng = np.random.default_rng(0)
    feeds = [
        {
            "image": rng.standard_normal((1 + i % 2, 3, 48, 192)).astype(np.float32),
            "scale_factor": rng.standard_normal((1 + i % 2, 2)).astype(np.float32),
        }
        for i in range(6)
    ]
    xs = [rng.standard_normal((1 + i % 3, 5 + i)).astype(np.float32) for i in range(6)]
    got: dict[int, dict[str, np.ndarray]] = {}
    async with serving(registry, SETTINGS) as service:

        async def client(i: int) -> None:
            got[i] = await service.infer(paddle, feeds[i])
            got[10 + i] = await service.infer(neg, {"x": xs[i]})

        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(client, i)
    for i in range(6):
        want = direct(tmp_path / "paddle.onnx", feeds[i])
        for name in ("pooled", "scaled"):
            np.testing.assert_array_equal(got[i][name], want[name])
        np.testing.assert_array_equal(got[10 + i]["y"], -xs[i])


@pytest.mark.parametrize(
    ("state_first", "sr"),
    [(2, True), (None, True), (None, False)],
    ids=["static-first-dim", "free-first-dim", "free-first-dim-no-scalar"],
)
async def test_vad_like_model_is_never_merged_along_axis_0(
    tmp_path: Path, state_first: Dim, sr: bool
) -> None:
    registry = Registry()
    path = vad_model(tmp_path / "vad.onnx", state_first=state_first, sr=sr)
    vad = registry.add("vad", path)
    signature = onnx_signature(path)[0]
    assert [s.shape for s in signature] == [("N", "T"), (state_first, "N", 128), ()][: 2 + sr]
    rng = np.random.default_rng(1)
    n_clients = 12
    # batch 2 everywhere: input and state then agree on their first dim, as a careless merge needs
    feeds = [
        {
            "input": rng.standard_normal((2, 512)).astype(np.float32),
            "state": rng.standard_normal((2, 2, 128)).astype(np.float32),
            **({"sr": np.array(8000 * (1 + i % 2), np.int64)} if sr else {}),
        }
        for i in range(n_clients)
    ]
    got: dict[int, dict[str, np.ndarray]] = {}
    async with serving(registry, SETTINGS) as service:
        # the rank-0 sample rate (a plain JSON number, a 0-d .npy member) through decoding and ORT
        doc = {"input": feeds[0]["input"].tolist(), "state": feeds[0]["state"].tolist()}
        as_json = json.dumps({"inputs": doc | ({"sr": 8000} if sr else {})}).encode()
        ref = await service.model(vad)
        for body, kind in ((as_json, JSON_TYPE), (npz(**feeds[0]), NPZ_TYPE)):
            decoded = decode_request(body, kind, ref.signature, LIMITS)
            assert not sr or decoded["sr"].shape == ()
            out = await service.infer(vad, decoded)
            np.testing.assert_array_equal(out["output"], direct(path, feeds[0])["output"])

        async def client(i: int) -> None:
            got[i] = await service.infer(vad, feeds[i])

        async with trio.open_nursery() as nursery:
            for i in range(n_clients):
                nursery.start_soon(client, i)
        stats = service.stats()["batchers"]["vad/fp32"]
    for i in range(n_clients):
        want = direct(path, feeds[i])
        for name in ("output", "stateN"):
            np.testing.assert_array_equal(got[i][name], want[name])
    assert not stats["batchable"]
    assert stats["completed"] == n_clients + 2 and stats["failed"] == 0
    assert stats["batches"] == n_clients + 2  # one request per run: never merged
