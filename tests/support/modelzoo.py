"""Small real models for tests: built in torch with fixed seeds and exported to ONNX.

Each ``build_*`` function writes one ``.onnx`` file into the directory it is given and returns its path.
Weights come from ``torch.manual_seed(seed)``, so the same call gives the same weights (and, with the
pinned torch, the same bytes). The exact architecture is written in each docstring so that tests can
hand-compute parameter counts and FLOPs. Export uses the TorchScript exporter (``dynamo=False``), opset 17,
with named dynamic axes.

Node names follow torch's module scopes (``/blocks.0/attn/q/MatMul``). In the transformer each layer is one
contiguous run of the graph's node list: it starts with ``/blocks.{i}/ln1/LayerNormalization`` and ends with
``/blocks.{i}/Add_1``; inside it a few shape ``Constant`` nodes carry no scope (``Constant_87``). Every
initializer has exactly one consumer node except ``pos``/``tok.weight`` (one each too); the only tensors that
cross a layer boundary are the hidden state and ``mask_bias`` (``/Mul_output_0``).

``zoo`` is a session-scoped pytest fixture (a :class:`Zoo` whose models are built once per session in a
temporary directory); to use it from any test module, ``from tests.support.modelzoo import zoo  # noqa: F401``
or move it to ``tests/conftest.py``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

OPSET = 17
SEED = 0


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, *, input_names: list[str],
            output_names: list[str], dynamic_axes: dict[str, dict[int, str]]) -> Path:  # fmt: skip
    module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # the TorchScript exporter is deprecated, not gone
        torch.onnx.export(
            module, args, str(path), opset_version=OPSET, dynamo=False, input_names=input_names,
            output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True,
        )  # fmt: skip
    return path


# -- MLP ---------------------------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: int, out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.fc2(torch.relu(self.fc1(x)))
        return y


def build_mlp(directory: Path, *, in_features: int = 64, hidden: int = 128, out: int = 10,
              seed: int = SEED, name: str = "mlp.onnx") -> Path:  # fmt: skip
    """Two-layer perceptron: ``x -> Linear(in, hidden) -> ReLU -> Linear(hidden, out) -> y``.

    I/O: ``x`` float32 ``[batch, in_features]`` -> ``y`` float32 ``[batch, out]`` (``batch`` dynamic).
    Graph: ``Gemm`` (transB=1, bias), ``Relu``, ``Gemm`` (transB=1, bias).
    Parameters (float32): ``in*hidden + hidden + hidden*out + out``.
    FLOPs per sample: Gemm ``2*in*hidden + hidden`` + ``2*hidden*out + out`` (bias add 1 per output),
    Relu ``hidden``.
    """
    torch.manual_seed(seed)
    model = MLP(in_features, hidden, out)
    x = torch.randn(2, in_features)
    return _export(model, (x,), Path(directory) / name, input_names=["x"], output_names=["y"],
                   dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})  # fmt: skip


# -- CNN ---------------------------------------------------------------------------------------------


class CNN(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        y: torch.Tensor = self.fc(x)
        return y


def build_cnn(directory: Path, *, classes: int = 10, seed: int = SEED, name: str = "cnn.onnx") -> Path:
    """Small convolutional net on ``x`` float32 ``[batch, 3, 16, 16]`` -> ``y`` float32 ``[batch, classes]``.

    Layers (every conv: stride 1, padding 1, bias):
    ``Conv(3->8, k3)`` [b,8,16,16] -> ``Relu`` -> ``MaxPool(k2, s2)`` [b,8,8,8] -> ``Conv(8->16, k3)``
    [b,16,8,8] -> ``Relu`` -> ``GlobalAveragePool`` [b,16,1,1] -> ``Flatten`` [b,16] ->
    ``Gemm(16->classes)`` (transB=1, bias).
    Parameters (float32): ``8*3*9 + 8 + 16*8*9 + 16 + 16*classes + classes``.
    """
    torch.manual_seed(seed)
    model = CNN(classes)
    x = torch.randn(2, 3, 16, 16)
    return _export(model, (x,), Path(directory) / name, input_names=["x"], output_names=["y"],
                   dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})  # fmt: skip


# -- transformer -------------------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        h, dh = self.heads, self.head_dim
        q = self.q(x).reshape(b, s, h, dh).transpose(1, 2)  # [b, h, s, dh]
        k = self.k(x).reshape(b, s, h, dh).transpose(1, 2)
        v = self.v(x).reshape(b, s, h, dh).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(dh))  # [b, h, s, s]
        probs = torch.softmax(scores + mask_bias, dim=-1)
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, d)
        out: torch.Tensor = self.o(ctx)
        return out


class Block(nn.Module):
    def __init__(self, d_model: int, heads: int, ff: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ff)
        self.fc2 = nn.Linear(ff, d_model)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask_bias)
        out: torch.Tensor = x + self.fc2(torch.relu(self.fc1(self.ln2(x))))
        return out


class Transformer(nn.Module):
    def __init__(self, layers: int, d_model: int, heads: int, ff: int, vocab: int, max_len: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(d_model, heads, ff) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        s = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos[:s]
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0  # [b, 1, 1, s]
        for block in self.blocks:
            x = block(x, mask_bias)
        out: torch.Tensor = self.ln_f(x)
        return out


def build_transformer(directory: Path, *, layers: int = 2, d_model: int = 64, heads: int = 4, ff: int = 128,
                      vocab: int = 100, max_len: int = 512, seed: int = SEED,
                      name: str = "transformer.onnx") -> Path:  # fmt: skip
    """Pre-LN transformer encoder.

    I/O: ``input_ids`` int64 ``[batch, seq]``, ``attention_mask`` int64 ``[batch, seq]`` (1 = attend,
    0 = padding) -> ``hidden`` float32 ``[batch, seq, d_model]``; ``batch`` and ``seq`` dynamic,
    ``seq <= max_len``.

    Embedding section: ``x = tok[input_ids] + pos[:seq]`` (``Gather`` + ``Slice`` + ``Add``) and
    ``mask_bias = (1 - float(attention_mask)[:, None, None, :]) * -10000`` (``Sub``, ``Mul``; shape
    ``[batch, 1, 1, seq]``), computed once and read by every layer.

    Each of the ``layers`` blocks (nodes named ``/blocks.{i}/...``), with ``dh = d_model / heads``::

        a = LayerNorm(x)                                       # ln1
        q, k, v = a @ Wq + bq, a @ Wk + bk, a @ Wv + bv        # MatMul + Add, each [b, s, d]
        q, k, v -> reshape [b, s, h, dh] -> transpose [b, h, s, dh]
        scores = (q @ k^T) * (1 / sqrt(dh))                   # MatMul [b, h, s, s] + Mul
        probs = Softmax(scores + mask_bias)                    # Add + Softmax over the last axis
        ctx = (probs @ v) -> transpose/reshape [b, s, d]       # MatMul [b, h, s, dh]
        x = x + ctx @ Wo + bo                                  # MatMul + Add + Add
        x = x + Relu(LayerNorm(x) @ W1 + b1) @ W2 + b2         # ln2, MatMul [d->ff] + Add, Relu,
                                                               # MatMul [ff->d] + Add, Add

    then a final ``LayerNorm`` (``ln_f``). Parameters (float32): ``vocab*d + max_len*d`` (embeddings)
    + per layer ``4*(d*d + d)`` (q, k, v, o) ``+ d*ff + ff + ff*d + d`` (MLP) ``+ 4*d`` (two LayerNorms),
    + ``2*d`` (ln_f). Per layer FLOPs: weight MatMuls ``2*b*s*(4*d*d + 2*d*ff)``, attention MatMuls
    ``2 * 2*b*h*s*s*dh = 4*b*s*s*d``.
    """
    torch.manual_seed(seed)
    model = Transformer(layers, d_model, heads, ff, vocab, max_len)
    with torch.no_grad():  # non-trivial LayerNorm weights: identical ones would be shared by the exporter
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.copy_(1.0 + 0.1 * torch.randn_like(module.weight))
                module.bias.copy_(0.1 * torch.randn_like(module.bias))
    ids = torch.randint(0, vocab, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.int64)
    mask[1, 5:] = 0
    return _export(
        model, (ids, mask), Path(directory) / name, input_names=["input_ids", "attention_mask"],
        output_names=["hidden"],
        dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                      "hidden": {0: "batch", 1: "seq"}},
    )  # fmt: skip


# -- per-session cache -------------------------------------------------------------------------------


class Zoo:
    """Builds each (function, keyword arguments) model once, in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._built: dict[tuple[str, tuple[tuple[str, Any], ...]], Path] = {}

    def get(self, build: Callable[..., Path], **kwargs: Any) -> Path:
        key = (build.__name__, tuple(sorted(kwargs.items())))
        if key not in self._built:
            sub = self.directory / f"{build.__name__}-{len(self._built)}"
            self._built[key] = build(sub, **kwargs)
        return self._built[key]

    def mlp(self, **kwargs: Any) -> Path:
        return self.get(build_mlp, **kwargs)

    def cnn(self, **kwargs: Any) -> Path:
        return self.get(build_cnn, **kwargs)

    def transformer(self, **kwargs: Any) -> Path:
        return self.get(build_transformer, **kwargs)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    """Models built once per test session (see :class:`Zoo`)."""
    return Zoo(tmp_path_factory.mktemp("modelzoo"))
