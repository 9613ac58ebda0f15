"""What a robust model's card measures: robust accuracy under PGD, and confidence on images that are no digit.

- `pgd` is projected gradient descent in the L-inf ball (Madry et al. 2018), the inner step of
  adversarial training. It is the same algorithm as torchattacks' `PGD`, and with the same global
  random state it gives the same images (tested), so training and measurement agree on what PGD is.
- `robust_accuracy` measures with torchattacks, a maintained library, not with our own `pgd`:
  a digit counts as robust only if it is still classified right after every random restart.
- `confident_share` is the figure of Hein et al. (CVPR 2019): the share of non-digit images that
  a model labels with more than 95 % confidence (98.7 % of noise images for plain MNIST networks,
  0.0 % after ACET in their paper).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from foolbench.zoo.outliers import KINDS, MNIST_SHAPE, outlier_images

CONFIDENT = 0.95
NOISE_IMAGES = 1000  # per outlier kind
NOISE_SEED = 12345  # not a training seed: the measured images are never trained on
ATTACK = {"eps": 0.3, "alpha": 0.01, "steps": 50, "restarts": 3, "seed": 0}
ATTACK_BATCH = 500


def pgd(
    module: nn.Module,
    images: torch.Tensor,
    objective: Callable[[torch.Tensor], torch.Tensor],
    eps: float,
    alpha: float,
    steps: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Images within `eps` (L-inf) of `images` and inside [0, 1] that ascend `objective(logits)`.

    A uniform random start in the ball, then `steps` steps of `alpha` times the gradient's sign, each
    projected back. `objective` gives one number per image (e.g. the cross-entropy of the true
    label). Without a `generator` the start is drawn as torchattacks draws it (the global RNG).
    """
    if generator is None:
        start = torch.empty_like(images).uniform_(-eps, eps)
    else:
        start = torch.rand(images.shape, generator=generator) * (2 * eps) - eps
    x = (images + start).clamp(0, 1)
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(module(x)).sum(), x)
        x = x.detach() + alpha * grad.sign()
        x = torch.clamp(images + torch.clamp(x - images, -eps, eps), 0, 1)
    return x.detach()


def robust_accuracy(
    module: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: dict | None = None
) -> float:
    """Share of `images` still classified as `labels` under torchattacks' PGD with random restarts.

    Each restart attacks only the digits that survived the earlier ones (a digit fooled once is not
    robust), from a start drawn under `torch.manual_seed(seed + restart)`.
    """
    import torchattacks

    a = {**ATTACK, **(attack or {})}
    module.eval()
    robust = predict(module, images) == labels
    for restart in range(a["restarts"]):
        survivors = robust.nonzero().flatten()
        if len(survivors) == 0:
            break
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(a["seed"] + restart)
            attack_ = torchattacks.PGD(
                module, eps=a["eps"], alpha=a["alpha"], steps=a["steps"], random_start=True
            )
            for chunk in survivors.split(ATTACK_BATCH):
                adversarial = attack_(images[chunk], labels[chunk])
                robust[chunk] = predict(module, adversarial) == labels[chunk]
    return float(robust.float().mean())


def cross_entropy_of(labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The objective of Madry's PGD: per-image cross-entropy of the true labels."""
    return lambda logits: F.cross_entropy(logits, labels, reduction="none")


@torch.no_grad()
def predict(module: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([module(chunk).argmax(1) for chunk in images.split(batch_size)])


def confident_share(probs: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> float:
    """Share of `images` whose largest probability under `probs` exceeds 95 %."""
    return float((probs(images).max(1) > CONFIDENT).mean())


def noise_figures(
    probs: Callable[[np.ndarray], np.ndarray], shape: tuple[int, int, int] = MNIST_SHAPE
) -> dict[str, float]:
    """`confident_share` on 1,000 fresh images of each outlier kind at the model's input `shape`
    (seed NOISE_SEED, never trained on)."""
    rng = np.random.default_rng(NOISE_SEED)
    return {
        kind: round(confident_share(probs, outlier_images(kind, NOISE_IMAGES, rng, shape)), 4)
        for kind in KINDS
    }


def module_probs(module: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """A numpy probs function of a torch classifier, as `noise_figures` takes."""

    @torch.no_grad()
    def probs(images: np.ndarray) -> np.ndarray:
        module.eval()
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        return torch.cat([torch.softmax(module(c), 1) for c in x.split(1000)]).numpy()

    return probs
