"""Turn what a user typed (`--model ...`) into an adapter.

Accepted: a zoo name (built on first use), an `.onnx` file, a PyTorch file (TorchScript, or a state
dict with `--arch`), or `package.module:factory`. Card precedence: embedded < NAME.toml < flags.
"""

from __future__ import annotations

import re
from pathlib import Path

from foolbench.errors import FoolbenchError
from foolbench.models.base import DEFAULT_BATCH, Model
from foolbench.models.card import ModelCard, read_labels_file, sidecar_card

TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".pt2", ".bin")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


_SEED_TWIN = re.compile(r"^[a-z]+-mnist-s\d+$")


def _is_zoo_name(spec: str) -> bool:
    from foolbench.zoo import ZOO_NAMES

    return spec in ZOO_NAMES or bool(_SEED_TWIN.match(spec))


def resolve_path(spec: str) -> Path | None:
    """The model file a spec names, building a zoo model on first use; None for a factory spec."""
    path = Path(spec)
    if path.exists():
        if not path.is_file():
            raise FoolbenchError(f"{spec} is a folder, not a model file; pass an .onnx or PyTorch file")
        return path
    if _FACTORY.match(spec):
        return None
    if _is_zoo_name(spec):
        from foolbench.zoo import ensure

        return ensure(spec)
    raise FoolbenchError(
        f"model '{spec}' not found: pass an existing .onnx/.pt file, a zoo name (see "
        "'foolbench zoo list'), or package.module:factory"
    )


def load_model(
    spec: str,
    *,
    arch: str | None = None,
    labels: str | None = None,
    overrides: dict | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> Model:
    """Load one model; `overrides` holds card fields given on the command line."""
    path = resolve_path(spec)
    card = ModelCard()
    if path is not None:
        side = sidecar_card(path)
        card = card.merged(side) if side else card
    flags = dict(overrides or {})
    if labels:
        flags["labels"] = read_labels_file(labels)
    card = card.merged(flags)
    if path is None:
        from foolbench.models.torch_model import TorchModel, build_from_factory

        return TorchModel(build_from_factory(spec), card, name=spec.split(":")[-1], batch_size=batch_size)
    if path.suffix.lower() == ".onnx":
        from foolbench.models.onnx_model import OnnxModel

        return OnnxModel(path, card, batch_size=batch_size)
    if path.suffix.lower() in TORCH_SUFFIXES:
        from foolbench.models.torch_model import TorchModel, load_torch_file

        return TorchModel(load_torch_file(path, arch), card, name=path.stem, path=path, batch_size=batch_size)
    raise FoolbenchError(
        f"{path}: unknown model file type '{path.suffix}'; foolbench reads .onnx and PyTorch "
        f"({', '.join(TORCH_SUFFIXES)}) files"
    )


def load_models(specs: list[str], **kwargs):
    """One spec gives that model; several give their ensemble (mean of probabilities)."""
    models = [load_model(s, **kwargs) for s in specs]
    if len(models) == 1:
        return models[0]
    from foolbench.models.ensemble import Ensemble

    return Ensemble(models)
