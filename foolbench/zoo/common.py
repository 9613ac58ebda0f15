"""What the zoo's builders and its registry share: the `Built` result, weight URLs, the offline switch.

It sits below both (it imports no builder and no registry), so `registry` can import the builders
lazily and the builders can import this without an import circle.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # kept out of the import path: foolbench.models imports torch
    import numpy as np
    import torch

    from foolbench.models.card import ModelCard

TORCHVISION_URLS = {
    "alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "googlenet": "https://download.pytorch.org/models/googlenet-1378be20.pth",
}
OFFLINE_ENV = "FOOLBENCH_OFFLINE"


@dataclass
class Built:
    """What a builder hands back: the module to export, its card and what the model card page says."""

    module: torch.nn.Module  # in eval mode
    card: ModelCard
    example: torch.Tensor  # preprocessed input the ONNX file is checked on
    summary: str
    how: list[str] = field(default_factory=list)
    check: Callable[[np.ndarray], None] | None = (
        None  # gets the ONNX probabilities on `example`; raises to fail
    )


def downloads_allowed() -> bool:
    """False when $FOOLBENCH_OFFLINE is set (to anything but 0): nothing is fetched, errors come at once."""
    return os.environ.get(OFFLINE_ENV, "0") in ("", "0")
