"""What a user types as a model (`--model ...`) made into an adapter: a file, a factory or a zoo name.

Zoo names (`lenet-mnist`, seed twins such as `lenet-mnist-s1`) are resolved here, one layer above
the adapter, so `foolbench.models` knows nothing of the zoo; a zoo model is built on first use.
"""

from __future__ import annotations

import re
from pathlib import Path

from foolbench import zoo
from foolbench.models import Model, ModelOptions, ensemble_of
from foolbench.models import load_model as load_file
from foolbench.models.load import resolve_path as file_path

_SEED_TWIN = re.compile(r"^[a-z]+-mnist-s\d+$")


def is_zoo_name(spec: str) -> bool:
    return spec in zoo.ZOO_NAMES or bool(_SEED_TWIN.match(spec))


def resolve_path(spec: str) -> Path | None:
    """The model file a spec names (building a zoo model on first use); None for a factory spec."""
    if not Path(spec).exists():
        if is_zoo_name(spec):
            return zoo.ensure(spec)
        if _zoo_file(spec):
            return zoo.ensure_file(Path(spec))
    return file_path(spec)


def backend_of(spec: str) -> str:
    """ "onnx" or "pytorch": the backend a spec's model will load with, without loading it (zoo models
    are ONNX files; a factory builds a PyTorch module)."""
    if not Path(spec).exists() and is_zoo_name(spec):
        return "onnx"
    return "onnx" if Path(spec).suffix.lower() == ".onnx" else "pytorch"


def _zoo_file(spec: str) -> bool:
    """Whether a missing path names a zoo model's file (`zoo/alexnet.onnx`) in a folder that exists:
    it is built there, as a zoo name is built into the zoo folder."""
    path = Path(spec)
    return path.suffix == ".onnx" and is_zoo_name(path.stem) and path.parent.is_dir()


def load_model(spec: str, options: ModelOptions | None = None) -> Model:
    """One model, as the options describe it."""
    path = resolve_path(spec)
    return load_file(str(path) if path is not None else spec, options)


def load_models(specs: list[str], options: ModelOptions | None = None):
    """One spec gives that model; several give their ensemble (mean of probabilities)."""
    return ensemble_of([load_model(spec, options) for spec in specs])
