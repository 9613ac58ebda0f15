"""An ensemble: the mean of its members' probabilities, as the paper's ensemble experiment uses."""

from __future__ import annotations

import math

import numpy as np
import torch

from foolbench.errors import FoolbenchError
from foolbench.models.base import Model, check_output


class _MeanModule(torch.nn.Module):
    """The members' mean output; for log-probabilities, the log of their mean probability."""

    def __init__(self, members: list[torch.nn.Module], output: str = "probs"):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.output = output

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outs = torch.stack([m(images) for m in self.members])
        if self.output == "log_probs":
            return torch.logsumexp(outs, 0) - math.log(len(self.members))
        return outs.mean(0)


class Ensemble:
    """Duck-types `Model`: same `probs`, `labels`, `num_classes`, `describe`, `torch_module`."""

    backend = "ensemble"

    def __init__(self, members: list[Model]):
        if len(members) < 2:
            raise FoolbenchError("an ensemble needs at least two models")
        first = members[0]
        for m in members[1:]:
            if m.num_classes != first.num_classes or m.labels != first.labels:
                raise FoolbenchError(
                    f"ensemble members disagree on their classes: {first.name} has {first.num_classes} "
                    f"({first.labels[:2]}...), {m.name} has {m.num_classes} ({m.labels[:2]}...); "
                    "ensemble only models trained on the same label set"
                )
        self.members = members
        self.name = "+".join(m.name for m in members)
        self.labels = first.labels
        self.num_classes = first.num_classes
        self.spec = first.spec
        self.card = first.card
        self.path = None
        self.device = first.device  # members are loaded alike, so they share their device
        self.options = first.options

    def member_probs(self, images: np.ndarray) -> list[np.ndarray]:
        return [m.probs(images) for m in self.members]

    def probs(self, images: np.ndarray) -> np.ndarray:
        return np.mean(self.member_probs(images), axis=0)

    def torch_module(self, output: str = "probs") -> torch.nn.Module:
        """The mean of the members' modules: of their probabilities, or of their logits."""
        check_output(output)
        return _MeanModule([m.torch_module(output) for m in self.members], output).to(self.device)

    def with_options(self, batch_size: int | None = None, **card) -> Ensemble:
        """The ensemble of its members, each `with_options` (see `Model.with_options`)."""
        return Ensemble([m.with_options(batch_size, **card) for m in self.members])

    @property
    def provider(self) -> str:
        return ",".join(sorted({m.provider for m in self.members}))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "backend": self.backend,
            "provider": self.provider,
            "device": self.device.type,
            "classes": self.num_classes,
            "labels": self.labels,
            "members": [m.describe() for m in self.members],
        }
