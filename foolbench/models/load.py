"""Turn a model file or factory, and what the user said about it (`ModelOptions`), into an adapter.

Accepted: an `.onnx` file, a PyTorch file (TorchScript, or a state dict with `arch`), or
`package.module:factory`. Card precedence: embedded < NAME.toml < the options' card fields.
Zoo names are resolved one layer up (`foolbench.resolve`), so the adapter knows nothing of the zoo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from foolbench.errors import FoolbenchError
from foolbench.models.base import DEFAULT_BATCH, Model
from foolbench.models.card import ModelCard, read_labels_file, sidecar_card

TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".pt2", ".bin")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class ModelOptions:
    """What the user told foolbench about a model beyond its file (`--arch`, `--labels`, `--crop`, ...).

    `card` holds model-card fields (`crop`, `mean`, `input_size`, ...) that override the model's own
    card. A manifest records `to_json()`, and a run is resumed with `from_json` of it.
    """

    arch: str | None = None  # package.module:factory building the architecture of a state-dict file
    labels: str | None = None  # a text file with one label per line
    card: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None  # images per forward pass (default DEFAULT_BATCH)

    def with_card(self, **fields: Any) -> ModelOptions:
        """These options with card fields added (or replaced)."""
        return replace(self, card={**self.card, **fields})

    def portable(self) -> ModelOptions:
        """The options that still fit another model of the same input (a retrained one, with another
        label set and its own file): the card fields and the batch size, not `arch` or `labels`."""
        return ModelOptions(card=dict(self.card), batch_size=self.batch_size)

    def to_json(self) -> dict:
        """The options as a manifest records them: only what was given."""
        out = {"arch": self.arch, "labels": self.labels, "overrides": dict(self.card) or None}
        out["batch_size"] = self.batch_size
        return {key: value for key, value in out.items() if value is not None}

    @classmethod
    def from_json(cls, data: dict | None) -> ModelOptions:
        data = data or {}
        return cls(
            data.get("arch"), data.get("labels"), dict(data.get("overrides") or {}), data.get("batch_size")
        )


def resolve_path(spec: str) -> Path | None:
    """The model file a spec names; None for a factory spec."""
    path = Path(spec)
    if path.exists():
        if not path.is_file():
            raise FoolbenchError(f"{spec} is a folder, not a model file; pass an .onnx or PyTorch file")
        return path
    if _FACTORY.match(spec):
        return None
    raise FoolbenchError(
        f"model '{spec}' not found: pass an existing .onnx/.pt file, a zoo name (see "
        "'foolbench zoo list'), or package.module:factory"
    )


def load_model(spec: str, options: ModelOptions | None = None) -> Model:
    """Load one model file or factory as the options describe it."""
    options = options or ModelOptions()
    path = resolve_path(spec)
    card = ModelCard()
    if path is not None:
        side = sidecar_card(path)
        card = card.merged(side) if side else card
    flags = dict(options.card)
    if options.labels:
        flags["labels"] = read_labels_file(options.labels)
    card = card.merged(flags)
    model = _adapter(spec, path, card, options)
    model.options = options
    return model


def _adapter(spec: str, path: Path | None, card: ModelCard, options: ModelOptions) -> Model:
    batch_size = options.batch_size or DEFAULT_BATCH
    if path is None:
        from foolbench.models.torch_model import TorchModel, build_from_factory

        return TorchModel(build_from_factory(spec), card, name=spec.split(":")[-1], batch_size=batch_size)
    if path.suffix.lower() == ".onnx":
        from foolbench.models.onnx_model import OnnxModel

        return OnnxModel(path, card, batch_size=batch_size)
    if path.suffix.lower() in TORCH_SUFFIXES:
        from foolbench.models.torch_model import TorchModel, load_torch_file

        module = load_torch_file(path, options.arch)
        return TorchModel(module, card, name=path.stem, path=path, batch_size=batch_size)
    raise FoolbenchError(
        f"{path}: unknown model file type '{path.suffix}'; foolbench reads .onnx and PyTorch "
        f"({', '.join(TORCH_SUFFIXES)}) files"
    )


def as_evaluated(model: Model, evaluation: dict, options: ModelOptions | None = None) -> Model:
    """The model as a run scores it: the preset's [evaluation] crop and batch size, where the user's
    options set none. The one place this is decided, so that anything evolving outside a run
    directory (a zoo build) scores exactly as a run does."""
    options = options or ModelOptions()
    crop = None if "crop" in options.card else evaluation.get("crop")
    return model.with_options(options.batch_size or evaluation.get("batch_size", DEFAULT_BATCH), crop=crop)


def ensemble_of(models: list[Model]):
    """One model is itself; several are their ensemble (mean of probabilities)."""
    if len(models) == 1:
        return models[0]
    from foolbench.models.ensemble import Ensemble

    return Ensemble(models)
