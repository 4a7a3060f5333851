"""GEMM throughput through ONNX Runtime's CPU provider: fp32 ``MatMul`` and int8 ``MatMulInteger``.

The model is a single node built in memory with ``onnx.helper``: input ``A`` [n, n], constant
``B`` [n, n] as an initializer (as a model's weights would be, so ORT may pre-pack it), output
``Y``. Runs go through an IOBinding with a preallocated output, so the timed call is the kernel
and not a copy of the result into a fresh numpy array.

int8 uses the layout ORT's quantizer produces on x86: uint8 activations, int8 weights. The
weights are drawn from the 7-bit range [-64, 63]: ORT's AVX2/AVX-512 u8s8 kernels multiply with
``vpmaddubsw``, whose int16 intermediate saturates for full-range int8 (measured here: wrong results
in 99% of outputs), which is why ORT's quantizer has ``reduce_range``. With 7-bit weights the
kernel is exact and the figure measures a computation that is actually correct.

onnxruntime ships no type information and is loaded through importlib (typed ``Any``).
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from accel_node.profile import stats
from accel_node.profile.model import Measurement, Scope

GemmKind = Literal["fp32", "int8"]
OPSET = 17
IR_VERSION = 8  # the oldest IR that opset 17 allows: readable by every ORT this project supports


def load_onnxruntime() -> Any:
    return importlib.import_module("onnxruntime")


def build_gemm_model(n: int, kind: GemmKind, *, seed: int = 0) -> tuple[bytes, npt.NDArray[Any]]:
    """Serialized single-node GEMM model ``Y = A @ B`` and its constant ``B``."""
    rng = np.random.default_rng(seed)
    if kind == "fp32":
        b: npt.NDArray[Any] = rng.standard_normal((n, n), dtype=np.float32)
        in_type, out_type, op = TensorProto.FLOAT, TensorProto.FLOAT, "MatMul"
    else:
        b = rng.integers(-64, 64, (n, n), dtype=np.int8)
        in_type, out_type, op = TensorProto.UINT8, TensorProto.INT32, "MatMulInteger"
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["Y"])],
        f"gemm_{kind}_{n}",
        [helper.make_tensor_value_info("A", in_type, [n, n])],
        [helper.make_tensor_value_info("Y", out_type, [n, n])],
        [numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model.SerializeToString(), b


def random_input(n: int, kind: GemmKind, *, seed: int = 1) -> npt.NDArray[Any]:
    rng = np.random.default_rng(seed)
    if kind == "fp32":
        return rng.standard_normal((n, n), dtype=np.float32)
    return rng.integers(0, 256, (n, n), dtype=np.uint8)


def reference(a: npt.NDArray[Any], b: npt.NDArray[Any], kind: GemmKind) -> npt.NDArray[Any]:
    """What the model must compute, with numpy (int8 in exact int32 arithmetic)."""
    wide = np.float64 if kind == "fp32" else np.int32
    result: npt.NDArray[Any] = np.matmul(a.astype(wide), b.astype(wide))
    return result


class GemmSession:
    """An ORT session over :func:`build_gemm_model` with a fixed thread count and bound I/O."""

    def __init__(self, n: int, kind: GemmKind, *, threads: int, seed: int = 0) -> None:
        ort = load_onnxruntime()
        model, self.b = build_gemm_model(n, kind, seed=seed)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.n = n
        self.kind: GemmKind = kind
        self.a = random_input(n, kind, seed=seed + 1)
        self.y = np.empty((n, n), dtype=np.float32 if kind == "fp32" else np.int32)
        self.binding = self.session.io_binding()
        self.binding.bind_input("A", "cpu", 0, self.a.dtype, list(self.a.shape), self.a.ctypes.data)
        self.binding.bind_output("Y", "cpu", 0, self.y.dtype, list(self.y.shape), self.y.ctypes.data)

    def set_input(self, a: npt.NDArray[Any]) -> None:
        if a.shape != self.a.shape or a.dtype != self.a.dtype:
            raise ValueError(f"input must be {self.a.dtype}{list(self.a.shape)}")
        np.copyto(self.a, a)  # the binding points at self.a's buffer

    def run(self) -> npt.NDArray[Any]:
        """One timed-path run; the result lands in (and is) the preallocated output array."""
        self.session.run_with_iobinding(self.binding)
        return self.y

    def check(self, rows: int = 8) -> None:
        """Verify the first ``rows`` output rows against numpy; raises ``AssertionError`` if wrong."""
        y = self.run()[:rows]
        expected = reference(self.a[:rows], self.b, self.kind)
        if self.kind == "fp32":
            np.testing.assert_allclose(y, expected, rtol=1e-3, atol=1e-3 * np.sqrt(self.n))
        else:
            np.testing.assert_array_equal(y, expected)


def ort_gemm(
    kind: GemmKind,
    n: int,
    *,
    scope: Scope,
    threads: int,
    repeats: int,
    min_sample_s: float,
    isa_flags: tuple[str, ...] = (),
) -> Measurement:
    """Throughput of one GEMM kind at one thread count (GFLOP/s for fp32, GOP/s for int8)."""
    name = f"ort_gemm_{kind}_{scope}"
    unit = "GFLOP/s" if kind == "fp32" else "GOP/s"
    ort_version = load_onnxruntime().__version__
    vnni = [f for f in isa_flags if "vnni" in f]
    detail = (
        "MatMul float32"
        if kind == "fp32"
        else f"MatMulInteger uint8 x int8 (7-bit weights) -> int32, CPU VNNI: {', '.join(vnni) or 'none'}"
    )
    method = (
        f"onnxruntime {ort_version} CPUExecutionProvider {detail}, "
        f"A [{n},{n}] input, B [{n},{n}] initializer, "
        f"intra_op_num_threads={threads}, run_with_iobinding into a preallocated output; 2n^3 ops per call; "
        f"output rows checked against numpy"
    )
    try:
        gemm = GemmSession(n, kind, threads=threads)
        gemm.check()
    except Exception as exc:  # ORT raises its own exception types (Fail, NotImplemented, ...)
        return Measurement.unavailable(name, unit, method, threads, f"{type(exc).__name__}: {exc}")
    timing = stats.time_calls(gemm.run, repeats=repeats, min_sample_s=min_sample_s)
    samples = [r / 1e9 for r in stats.rates(2.0 * n**3, timing)]
    return Measurement.from_samples(
        name, unit, f"{method}; {timing.calls_per_sample} calls per sample", threads, samples
    )
