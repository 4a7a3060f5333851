"""Precision variants of an fp32 ONNX model, and how far their outputs are from the parent's.

- ``int8``: ONNX Runtime dynamic quantisation (``quantize_dynamic``, QInt8 per-channel weights; activations
  are quantised at run time), which needs no calibration data.
- ``fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16`` with
  ``keep_io_types=True`` (inputs and outputs stay float32, so requests are the same as for the
  parent). Not every operator has a float16 kernel on every execution provider: the converted model
  is loaded and run once on this machine's providers, and a :class:`VariantError` says where it
  does not run.

Each builder returns the variant's bytes; the caller stores them content-addressed with the parent
CID. All functions here block (seconds for large models): call them from a worker thread.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from accel_node.runtime.errors import VariantError
from accel_node.runtime.sessions import available_providers, create_session
from accel_node.runtime.synthetic import random_inputs
from accel_node.runtime.validation import Signature

VARIANTS = ("fp32", "int8", "fp16")
ACCURACY_BATCH = 2
ACCURACY_SEQ_LEN = 16


def quantize_int8(model_path: Path) -> bytes:
    """The int8 dynamically quantised variant of the model at ``model_path``."""
    quantization: Any = importlib.import_module("onnxruntime.quantization")

    with tempfile.TemporaryDirectory(prefix="accel-int8-") as tmp:
        out = Path(tmp) / "model.int8.onnx"
        try:
            # Per-channel weight scales: half the error of per-tensor on MiniLM, at the same speed.
            quantization.quantize_dynamic(
                model_path, out, weight_type=quantization.QuantType.QInt8, per_channel=True
            )
        except Exception as exc:  # onnx/ORT raise many error types for unsupported graphs
            raise VariantError(f"int8 quantisation of {model_path.name} failed: {exc}") from exc
        return out.read_bytes()


def convert_fp16(model_path: Path, signature: Signature, *, providers: Sequence[str] | None = None) -> bytes:
    """The float16 variant (float32 I/O kept), checked to load and run on ``providers``."""
    import onnx

    float16: Any = importlib.import_module("onnxruntime.transformers.float16")

    try:
        model = onnx.load(str(model_path))
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
        data: bytes = converted.SerializeToString()
    except Exception as exc:  # the converter raises plain Exceptions and onnx errors
        raise VariantError(f"fp16 conversion of {model_path.name} failed: {exc}") from exc
    used = list(providers or available_providers())
    with tempfile.TemporaryDirectory(prefix="accel-fp16-") as tmp:
        path = Path(tmp) / "model.fp16.onnx"
        path.write_bytes(data)
        try:
            session = create_session(path, providers=used)
            session.run(None, random_inputs(signature, batch=1, seq_len=ACCURACY_SEQ_LEN, seed=0))
        except Exception as exc:
            raise VariantError(
                f"the fp16 variant of {model_path.name} does not run on {', '.join(used)} here: {exc} "
                "(float16 support varies by operator and execution provider; serve fp32 or int8)"
            ) from exc
    return data


def build_variant(model_path: Path, variant: str, signature: Signature) -> bytes:
    """Bytes of ``variant`` (``int8`` or ``fp16``) of the fp32 model at ``model_path``."""
    if variant == "int8":
        return quantize_int8(model_path)
    if variant == "fp16":
        return convert_fp16(model_path, signature)
    raise VariantError(f"unknown variant {variant!r}; build one of int8, fp16 (fp32 is the model itself)")


def accuracy_delta(
    parent_path: Path,
    variant_path: Path,
    signature: Signature,
    seed: int = 0,
    *,
    batch: int = ACCURACY_BATCH,
    seq_len: int = ACCURACY_SEQ_LEN,
    providers: Sequence[str] | None = None,
) -> dict[str, float]:
    """How far the variant's outputs are from the parent's on one fixed random batch.

    The batch is :func:`~accel_node.runtime.synthetic.random_inputs` (``seed``, ``batch`` rows,
    ``seq_len`` for other dynamic dims). Over all outputs' elements together (float64):
    ``max_abs`` = max |a - b|, ``mean_abs`` = mean |a - b|, ``rel_l2`` = ||a - b|| / ||a||
    (a: parent, b: variant). Non-finite values in the variant show up as inf/nan.
    """
    feeds = random_inputs(signature, batch=batch, seq_len=seq_len, seed=seed)
    parent = create_session(parent_path, providers=providers)
    variant = create_session(variant_path, providers=providers)
    names = [o.name for o in parent.get_outputs()]
    try:
        expected = parent.run(names, feeds)
        got = variant.run(names, feeds)
    except Exception as exc:  # ORT pybind errors
        raise VariantError(f"comparing {variant_path.name} with {parent_path.name} failed: {exc}") from exc
    diffs = []
    refs = []
    for name, a, b in zip(names, expected, got, strict=True):
        a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a64.shape != b64.shape:
            raise VariantError(
                f"output {name!r} has shape {b64.shape} in the variant, {a64.shape} in the parent"
            )
        diffs.append((a64 - b64).ravel())
        refs.append(a64.ravel())
    diff = np.concatenate(diffs) if diffs else np.zeros(0)
    ref = np.concatenate(refs) if refs else np.zeros(0)
    if diff.size == 0:
        return {"max_abs": 0.0, "mean_abs": 0.0, "rel_l2": 0.0}
    norm = float(np.linalg.norm(ref))
    return {
        "max_abs": float(np.max(np.abs(diff))),
        "mean_abs": float(np.mean(np.abs(diff))),
        "rel_l2": float(np.linalg.norm(diff)) / norm if norm > 0 else float(np.linalg.norm(diff)),
    }
