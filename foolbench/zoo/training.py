"""The zoo's one resumable training loop: plain, adversarial (PGD or FGSM with a random start) or
outlier exposure, for any data set a `Task` describes.

A recipe says *what* is trained (`Recipe`: method, epochs, batch, radius, outlier weight); a task
says *on what and how* (`Task`: the data, the network, its optimiser and augmentation, the images
that are no class). The MNIST and CIFAR-10 references are configurations of this loop, not copies
of it (`foolbench.zoo.robust.RECIPES`).

- `pgd`: each batch is replaced by its PGD adversarial examples in the L-inf ball of radius `eps`
  before the update (Madry et al. 2018). The radius can ramp up linearly over the first `ramp`
  share of the steps, with the number of steps growing with it; one step with a step size of 1.25
  eps is FGSM with a random start, "fast adversarial training" (Wong et al. 2020).
- `oe`: next to each batch as many images that are no class (`foolbench.zoo.outliers`: uniform
  noise, smoothed noise, random CPPNs) are trained towards the flat softmax (Hendrycks et al. 2019).
  They go through the network in their own pass, whose batch norm leaves the running statistics to
  the real images, or (`joint_outliers`) in the same batch as the real images; `recalibrate`
  recomputes the running statistics with the final weights.
- `plain`: cross-entropy alone.

Training is resumable: after every epoch the model, the optimiser's whole state and the schedule
are checkpointed into the build's work folder, and each epoch's shuffling, augmentation, attack
starts and outliers are drawn from generators seeded by (seed, epoch), so a build killed and resumed
ends with the same weights, to the bit, as one that ran through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from foolbench.fileio import atomic_path
from foolbench.zoo.robustness import cross_entropy_of, pgd

CHECKPOINT = "checkpoint.pt"
METHODS = ("plain", "pgd", "oe")


@dataclass(frozen=True)
class Recipe:
    """How a zoo model is trained; `epochs` and `attack_digits` set its size (and cost)."""

    method: str  # "plain", "pgd" or "oe"
    epochs: int
    batch_size: int = 64
    lr: float = 3e-3  # the task's optimiser's peak learning rate
    max_shift: int = 2  # augmentation: random shifts of up to this many pixels
    eps: float = 0.3  # PGD: the L-inf radius in pixels of [0, 1]
    steps: int = 10  # PGD steps at the full radius
    ramp: float = 0.0  # share of the training steps over which eps grows linearly from 0
    outlier_weight: float = 0.5  # OE: the flat-softmax loss's weight
    attack_digits: int = 1000  # held-out images the card's robust accuracy is measured on
    step_size: float | None = None  # PGD step as a multiple of eps; None: Madry's 2.5 / steps
    flip: bool | None = None  # augmentation: random left-right flips (None: no)
    whitening: float | None = None  # the network's input-whitening eps, where it has one (None: its default)
    joint_outliers: bool | None = None  # OE: real images and outliers in one batch (None: separate passes)
    recalibrate: int | None = None  # batch norm's statistics recomputed over this many batches at the end

    def at(self, step: int, total: int) -> tuple[float, int, float]:
        """(eps, PGD steps, step size) at training step `step` of `total`: by default 2.5 eps / steps
        per step, Madry's rule, so that a walk can cross the ball and back."""
        share = 1.0 if self.ramp <= 0 else min(1.0, (step + 1) / (self.ramp * total))
        eps = self.eps * share
        steps = max(1, math.ceil(self.steps * share))
        return eps, steps, (self.step_size * eps if self.step_size is not None else 2.5 * eps / steps)


def recipe_facts(recipe: Recipe) -> dict:
    """The recipe as a card records it: every field that is set (an unset option is left out, so
    that adding one changes no card made before it)."""
    return {k: v for k, v in dataclasses.asdict(recipe).items() if v is not None}


class Optimiser(Protocol):
    """A task's optimiser with its schedule (and any averaging), stepped once per batch."""

    def zero_grad(self) -> None: ...
    def step(self) -> None: ...
    def start_epoch(self, epoch: int) -> None: ...
    def finish(self) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class Task(Protocol):
    """What a data set brings to a recipe: its network, optimiser, augmentation and outliers."""

    shape: tuple[int, int, int]  # channels, height, width of the network's input
    sum_loss: bool  # the optimiser expects the batch's summed loss (else its mean)

    def network(self, seed: int, classes: int) -> torch.nn.Module: ...
    def optimiser(self, module: torch.nn.Module, recipe: Recipe, total: int) -> Optimiser: ...
    def augment(self, images: torch.Tensor, generator: torch.Generator, recipe: Recipe) -> torch.Tensor: ...
    def outliers(self, n: int, rng: np.random.Generator) -> np.ndarray: ...


def train(
    task: Task,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: Recipe,
    seed: int,
    work: Path,
    progress: bool,
    data: str,
    classes: int = 10,
    monitor=None,
) -> tuple[torch.nn.Module, dict]:
    """A network of the task trained for the recipe's epochs on `images` (float [N, C, H, W] in
    [0, 1]) and `labels`, continuing from `work`'s checkpoint when it holds the same recipe, seed and
    `data` (a description of the images, e.g. with their digest); with it the final loss, training
    seconds and how often it resumed. `monitor(module)`, if given, returns a line printed after each
    epoch (it must not draw from any random generator the training uses)."""
    total = recipe.epochs * math.ceil(len(images) / recipe.batch_size)
    fingerprint = json.dumps(
        {"recipe": recipe_facts(recipe), "seed": seed, "data": data, "torch": torch.__version__}
        | ({"classes": classes} if classes != 10 else {}),
        sort_keys=True,
    )
    module, optimiser, state = _resume(
        task, work / CHECKPOINT, fingerprint, seed, classes, recipe, total, progress
    )
    epoch, seconds, loss = state["epoch"], state["seconds"], state["loss"]
    resumed = state["resumed"] + (epoch > 0)
    while epoch < recipe.epochs:
        start = time.perf_counter()
        module.train()
        optimiser.start_epoch(epoch)
        loss = _epoch(task, module, optimiser, images, labels, recipe, seed, epoch, total)
        epoch += 1
        if epoch == recipe.epochs:
            optimiser.finish()
        seconds += time.perf_counter() - start
        _save(work / CHECKPOINT, fingerprint, module, optimiser, epoch, seconds, loss, resumed)
        if progress:
            extra = f"; {monitor(module)} ({seconds:.0f} s)" if monitor is not None else ""
            print(f"  epoch {epoch}/{recipe.epochs}: loss {loss:.4f}{extra}", file=sys.stderr, flush=True)
    if recipe.recalibrate:
        _recalibrate(task, module, images, recipe, seed)
    module.eval()
    return module, {"final_loss": round(loss, 6), "seconds": seconds, "resumed": resumed}


def _recalibrate(task: Task, module, images, recipe: Recipe, seed: int) -> None:
    """Batch norm's running statistics recomputed with the final weights over `recipe.recalibrate`
    batches of training images (augmented, with the outliers where they trained in the same batch),
    drawn from generators seeded by (seed, epochs) (torch's `update_bn`, as for averaged weights).

    The running statistics kept during training can lag the weights (which the task's optimiser may
    average). Measured on airnet-cifar10-oe (joint outliers) after 3 of 12 epochs: clean test accuracy
    14.6 % with the kept statistics, 54.9 % with the batch's own, 54.1 % with statistics recomputed
    like this (and 0 % of 500 uniform, smoothed or CPPN images each given > 95 % confidence)."""
    generator, rng = _draws(seed, recipe.epochs)  # as an epoch after the last would draw them
    n = min(len(images), recipe.recalibrate * recipe.batch_size)
    order = torch.randperm(len(images), generator=generator)[:n]
    outliers = None
    if recipe.method == "oe" and recipe.joint_outliers:
        outliers = torch.from_numpy(task.outliers(n, rng))

    def batches():
        for first in range(0, n, recipe.batch_size):
            inputs = task.augment(images[order[first : first + recipe.batch_size]], generator, recipe)
            yield (
                inputs
                if outliers is None
                else torch.cat((inputs, outliers[first : first + recipe.batch_size]))
            )

    torch.optim.swa_utils.update_bn(batches(), module)


def _draws(seed: int, epoch: int) -> tuple[torch.Generator, np.random.Generator]:
    """The generators of epoch `epoch` (torch's for shuffling, augmentation and attack starts, numpy's
    for outliers): a resumed build draws what an uninterrupted one drew."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch), np.random.default_rng([seed, epoch])


def _epoch(task: Task, module, optimiser, images, labels, recipe: Recipe, seed: int, epoch: int, total: int):
    """One pass over the images; every random draw comes from generators seeded by (seed, epoch)."""
    generator, rng = _draws(seed, epoch)
    outliers = torch.from_numpy(task.outliers(len(images), rng)) if recipe.method == "oe" else None
    order = torch.randperm(len(images), generator=generator)
    step0 = epoch * math.ceil(len(images) / recipe.batch_size)
    summed = 0.0
    for i, first in enumerate(range(0, len(images), recipe.batch_size)):
        batch = order[first : first + recipe.batch_size]
        inputs = task.augment(images[batch], generator, recipe)
        if recipe.method == "pgd":
            loss = _pgd_loss(module, inputs, labels[batch], recipe, step0 + i, total, generator)
        elif recipe.method == "oe":
            loss = _oe_loss(module, inputs, labels[batch], outliers[batch], recipe)
        else:
            loss = F.cross_entropy(module(inputs), labels[batch])
        if task.sum_loss:
            loss = loss * len(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        summed += loss.item() * (1 if task.sum_loss else len(batch))
    return summed / len(images)


def _pgd_loss(module, inputs, labels, recipe: Recipe, step: int, total: int, generator) -> torch.Tensor:
    """Cross-entropy on the batch's adversarial examples alone, as Madry et al. and Wong et al. train.

    With batch norm its running statistics are those of the perturbed images. On airnet-cifar10-at
    with airbench's whitening the full build's clean accuracy was 9 % at epoch 3 of 12 (the peak learning rate; 43 % with the
    clean batch's own statistics) and a 2-epoch pilot on 10,000 random training images ended at 29 %
    (plain: 43 %). The finished build failed: FGSM overfit catastrophically (last-epoch loss 0.35),
    clean accuracy 38.5 %, PGD-20 robust accuracy 0 %. Passing the attacked images through the
    test-time network instead (running statistics of clean images) did not train: 12 % after one
    epoch. With the whitening capped (`Recipe.whitening`, the recipe now) this loss trained as it
    should: 46 % at epoch 3, 71.5 % clean and 38.8 % under PGD-20 at the end."""
    eps, steps, alpha = recipe.at(step, total)
    adversarial = pgd(module, inputs, cross_entropy_of(labels), eps, alpha, steps, generator)
    return F.cross_entropy(module(adversarial), labels)


def _oe_loss(module, inputs, labels, outliers, recipe: Recipe) -> torch.Tensor:
    """Cross-entropy on the batch plus the outliers' cross-entropy to the flat softmax.

    With `joint_outliers`, real images and outliers go through the network as one batch (Hendrycks et
    al.'s way): batch norm normalises both with the statistics of the mix, in training and, through
    its running statistics, at test time, so noise meets at test time the normalisation it trained
    with. That needs a network whose input does not blow noise up (AirNet's whitening capped, see
    `foolbench.zoo.cifar.AirNet.init_whitening`): with airbench's whitening the mix's statistics were
    the noise's and clean accuracy fell to 10 % (below). A 2-epoch pilot on 10,000 random training
    images with the whitening capped: 29 % clean, > 95 % confident on none of 500 uniform, smoothed
    and CPPN images each. The full build's running statistics lagged its weights (15 % after epoch 3),
    so this recipe recomputes them at the end (`recalibrate`, see `_recalibrate`).

    Otherwise the outliers go through the network in their own pass. With batch norm that pass leaves
    the running statistics alone, so that they stay the real images' (used at test time). Measured on
    airnet-cifar10-oe (whole build, clean test accuracy after epoch 1; plain: 58 %): with the outlier
    pass updating them, 14 %; real images and outliers in one batch (Hendrycks et al.'s way), 10 %, as
    uniform noise swamps the statistics; outliers through the test-time network, 15 %; this way
    34 % (and 65 % after epoch 3, plain 61 %). A 2-epoch pilot on 10,000 random training images:
    this way 45 % (plain 43 %), > 95 % confident on 0.7 % of uniform noise. The finished build:
    87.4 % (plain 87.5 %), but > 95 % confident on 5.1 % of uniform noise and 3.8 % of CPPNs (plain
    0.8 % and 1.6 %): at test time noise meets statistics it never trained with."""
    if recipe.joint_outliers:
        logits = module(torch.cat((inputs, outliers)))
        known, unknown = logits[: len(inputs)], logits[len(inputs) :]
    else:
        with _running_statistics_kept(module):
            unknown = module(outliers)
        known = module(inputs)
    flat = -torch.log_softmax(unknown, 1).mean(1).mean()  # cross-entropy to the flat softmax
    return F.cross_entropy(known, labels) + recipe.outlier_weight * flat


@contextlib.contextmanager
def _running_statistics_kept(module):
    """Batch norm normalises with each batch's statistics as in training but leaves its running
    statistics alone (momentum 0)."""
    norms = [layer for layer in module.modules() if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum


def _resume(
    task: Task,
    path: Path,
    fingerprint: str,
    seed: int,
    classes: int,
    recipe: Recipe,
    total: int,
    progress: bool,
):
    """The network and optimiser loaded from `path` if it belongs to the same build, else fresh ones."""
    fresh = {"epoch": 0, "seconds": 0.0, "loss": float("nan"), "resumed": 0}

    def new():
        module = task.network(seed, classes)
        return module, task.optimiser(module, recipe, total)

    if not path.is_file():
        return (*new(), fresh)
    module, optimiser = new()
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["fingerprint"] != fingerprint:
            raise ValueError("it is of another recipe, seed or data")
        module.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
    except Exception as e:  # unreadable or foreign: the build starts over rather than fail
        if progress:
            print(f"  not resuming from {path} ({e}); starting over", file=sys.stderr, flush=True)
        return (*new(), fresh)
    if progress:
        print(f"  resuming after epoch {saved['epoch']}", file=sys.stderr, flush=True)
    return module, optimiser, {k: saved[k] for k in fresh}


def _save(path: Path, fingerprint: str, module, optimiser, epoch, seconds, loss, resumed) -> None:
    state = {
        "fingerprint": fingerprint,
        "model": module.state_dict(),
        "optimiser": optimiser.state_dict(),
        "epoch": epoch,
        "seconds": seconds,
        "loss": loss,
        "resumed": resumed,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


# -- the MNIST LeNet's optimiser -------------------------------------------------------------------------
class AdamOneCycle:
    """Adam with a one-cycle learning rate peaking at the recipe's `lr` (the zoo LeNet's)."""

    def __init__(self, module: torch.nn.Module, recipe: Recipe, total: int):
        self.optimizer = torch.optim.Adam(module.parameters(), lr=recipe.lr)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, recipe.lr, total_steps=total)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def step(self) -> None:
        self.optimizer.step()
        self.schedule.step()

    def start_epoch(self, epoch: int) -> None:
        pass

    def finish(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
