"""Model adapters: one interface (`probs(images) -> [B, K]`) over ONNX, PyTorch and ensembles."""

from foolbench.models.base import Model
from foolbench.models.card import ModelCard
from foolbench.models.load import load_model, load_models

__all__ = ["Model", "ModelCard", "load_model", "load_models"]
