"""PyTorch -> ONNX with the model card inside, checked against PyTorch before the file appears.

Every zoo model is an ONNX file, so the rest of foolbench needs only onnxruntime. The card travels
inside the file (metadata key `foolbench.card`), so a copied model still says how to feed it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from foolbench.fileio import atomic_path
from foolbench.models.card import CARD_METADATA_KEY, ModelCard

PROB_TOLERANCE = 1e-4


def export_onnx(
    module: torch.nn.Module,
    path: str | Path,
    card: ModelCard,
    example: torch.Tensor,
    check: Callable[[np.ndarray], None] | None = None,
) -> Path:
    """Write `module` to `path` as ONNX (input "input", output "output", any batch size) with `card`.

    The file is written to a temporary name and renamed only after its softmax outputs on `example`
    match PyTorch's within 1e-4 and `check(onnx_probs)` (if given) has not raised.
    """
    import onnx

    module.eval()
    model = _to_onnx(module, example)
    model.metadata_props.add(key=CARD_METADATA_KEY, value=card.to_json())
    onnx.checker.check_model(model)
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
        probs = compare_with_torch(module, tmp, example)
        if check is not None:
            check(probs)
    return path


def _to_onnx(module: torch.nn.Module, example: torch.Tensor):
    """The torch.export-based exporter, with the batch axis left free ("batch")."""
    import onnx

    if example.shape[0] < 2:  # torch.export fixes a dimension whose example size is 1
        example = example.expand(2, *example.shape[1:])
    with tempfile.TemporaryDirectory() as tmpdir:
        raw = Path(tmpdir) / "model.onnx"
        torch.onnx.export(
            module,
            (example,),
            str(raw),
            input_names=["input"],
            output_names=["output"],
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
        )
        return without_stack_traces(onnx.load(str(raw)))


STACK_TRACE = "pkg.torch.onnx.stack_trace"  # node metadata naming the source files, by absolute path


def without_stack_traces(model):
    """The exported graph without the exporter's per-node stack traces: they hold the absolute paths
    of the Python files that traced it, so the same weights built in another folder would give a
    file of other bytes (and another sha256, which runs and leaderboard rows are keyed on)."""
    for node in model.graph.node:
        kept = [p for p in node.metadata_props if p.key != STACK_TRACE]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
    return model


def onnx_probs(path: str | Path, images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Softmax of the ONNX model's logits for already preprocessed float32 NCHW input, on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(["output"], {"input": np.asarray(images, dtype=np.float32)})[0]
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


def compare_with_torch(module: torch.nn.Module, path: str | Path, example: torch.Tensor) -> np.ndarray:
    """ONNX probabilities on `example`; raises if they differ from PyTorch's by 1e-4 or more."""
    with torch.no_grad():
        expected = torch.softmax(module(example), dim=1).numpy()
    got = onnx_probs(path, example.numpy())
    diff = float(np.abs(got - expected).max())
    if not diff < PROB_TOLERANCE:
        raise RuntimeError(
            f"ONNX export of {type(module).__name__} differs from PyTorch by {diff:.2e} in probability"
        )
    return got
