"""Model adapters: one interface (`probs(images) -> [B, K]`) over ONNX, PyTorch and ensembles.

The adapter is sealed: preprocessing, logits vs probabilities and views live inside it; gradients
come through `torch_module(output=...)`, other preprocessing through `with_options(...)`.
"""

from foolbench.models.base import Model
from foolbench.models.card import ModelCard
from foolbench.models.load import ModelOptions, ensemble_of, load_model

__all__ = ["Model", "ModelCard", "ModelOptions", "ensemble_of", "load_model"]
