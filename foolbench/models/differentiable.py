"""The adapter as a differentiable function, for gradient ascent: canonical images in, probabilities
or logits out, through the very preprocessing `Model.probs` uses (`Model.torch_module`)."""

from __future__ import annotations

import math

import torch

from foolbench.models.preprocess import InputSpec, preprocess


class ProbabilityModule(torch.nn.Module):
    """Canonical images [B,C,H,W] in [0,1] -> probabilities or logits [B,K], differentiable end to end.

    With several views per image (ten-crop), probabilities are averaged as `Model.probs` does, and
    logits are averaged too. "log_probs" is the log of those probabilities, from a log-softmax, so it
    stays finite where a probability underflows float32 (1e-43 is a denormal; 1e-46 is 0).
    """

    def __init__(self, net: torch.nn.Module, spec: InputSpec, output_kind: str, output: str = "probs"):
        super().__init__()
        self.net, self.spec, self.output_kind, self.output = net, spec, output_kind, output

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.net(preprocess(images, self.spec))
        if self.output == "logits" and self.output_kind == "logits":
            return self._views_mean(out, images)
        if self.output == "log_probs" and self.output_kind == "logits":
            return self._log_views_mean(out.log_softmax(dim=1), images)
        p = out.softmax(dim=1) if self.output_kind == "logits" else out
        p = self._views_mean(p, images)
        return p if self.output == "probs" else torch.log(p.clamp_min(1e-30))

    def _log_views_mean(self, log_p: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """log of the views' mean probability, from their log-probabilities (a log-sum-exp: no
        probability is ever formed, so none underflows)."""
        views = self.spec.views
        if views == 1:
            return log_p
        return torch.logsumexp(log_p.reshape(images.shape[0], views, -1), dim=1) - math.log(views)

    def _views_mean(self, x: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if self.spec.views > 1:
            x = x.reshape(images.shape[0], self.spec.views, -1).mean(1)
        return x
