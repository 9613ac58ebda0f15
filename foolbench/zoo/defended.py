"""The paper's retraining defence on MNIST (Sec. 3.5), and the zoo's model made by it.

This module owns the MNIST retraining: a fresh LeNet with an 11th "fooling" class, trained on the
digits plus the fooling images at a constant class share (`train_defended`). Two loops use it:
- `foolbench defend` (`foolbench.experiments.defence`) keeps every run directory and writes the
  defence's table, for any preset and iteration count;
- `foolbench zoo build lenet-mnist-defended` (`build_defended` here) runs the same loop in memory
  with the zoo's fixed recipe (`RECIPE`), so that the defended model is a reference anyone can build
  offline like the others. It gives, weight for weight, the last model of
      foolbench defend --model lenet-mnist --attack mnist-cppn --scale cpu --iterations 2 --runs 5
  (the tests check this at a small budget).

The zoo build keeps each run's champions and each iteration's weights in its work folder, so a
killed build resumes after its last finished run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from foolbench.data.mnist import load_mnist
from foolbench.fileio import atomic_path, sha256_file
from foolbench.images import as_uint8
from foolbench.models.card import FOOLING, ModelCard
from foolbench.models.load import as_evaluated, load_model
from foolbench.presets import load_preset, parse_classes
from foolbench.search import make_search
from foolbench.text import percent
from foolbench.zoo.common import Built
from foolbench.zoo.export import export_onnx
from foolbench.zoo.lenet import LeNet, accuracy, as_images, seeded, train_classifier
from foolbench.zoo.mnist_models import ARCHITECTURES, CHECK_IMAGES, mnist_card
from foolbench.zoo.robustness import CONFIDENT, module_probs, noise_figures

RUN_SEED_STRIDE = 1000  # iteration k, run r evolves with seed + 1000 k + r
CLEAN = "held-out MNIST accuracy: top-1 over all classes equals the digit (the fooling class counts as wrong)"
SHARE = (
    "the fooling class gets as many training examples as an average digit class: the distinct fooling "
    "images repeated evenly, or a seeded subsample when there are more"
)


@dataclass(frozen=True)
class Recipe:
    """How the zoo's defended model is made; `generations` and `epochs` size it (tests use small ones)."""

    attack: str = "mnist-cppn"  # the evolutionary preset of every run
    scale: str = "cpu"
    iterations: int = 2  # retrain-and-evolve rounds; the model is the last one's
    runs: int = 5  # runs per iteration, each giving one champion per target class
    generations: int | None = None  # per run; None: the preset's budget
    epochs: int | None = None  # LeNet's retraining; None: the zoo LeNet's


RECIPE = Recipe()
SUMMARY = (
    "The zoo's LeNet retrained with an 11th 'fooling' class that holds the CPPN images evolved against it "
    "(the retraining defence of Nguyen, Yosinski & Clune, 2 iterations): the paper's own defence, a reference."
)


# -- the retraining both loops share --------------------------------------------------------------------
def balanced_indices(available: int, wanted: int, seed: int) -> np.ndarray:
    """`wanted` indices into `available` items: each repeated evenly, the remainder (or all, when
    there are more than wanted) drawn without replacement from a seeded generator."""
    rng = np.random.default_rng(seed)
    whole, rest = divmod(wanted, available)
    return np.concatenate(
        [np.tile(np.arange(available), whole), np.sort(rng.choice(available, rest, replace=False))]
    )


def train_defended(
    digits, images: np.ndarray, classes: int, seed: int, iteration: int, epochs: int | None
) -> tuple[torch.nn.Module, dict]:
    """A fresh LeNet(`classes`) trained on the digits plus `images` (float [N, 1, 28, 28] in [0, 1]) as
    the last class, which gets as many examples as an average digit class; with the card's facts."""
    per_class = round(len(digits.train_y) / (classes - 1))
    pick = balanced_indices(len(images), per_class, seed + iteration)
    fooling = as_uint8(images[pick, 0])
    x = np.concatenate([digits.train_x, fooling])
    y = np.concatenate([digits.train_y, np.full(len(fooling), classes - 1, dtype=np.int64)])
    _, default_epochs, batch_size, _ = ARCHITECTURES["lenet-mnist"]
    module = seeded(lambda: LeNet(num_classes=classes), seed)
    train = train_classifier(module, x, y, seed=seed, epochs=epochs or default_epochs, batch_size=batch_size)
    train.pop("train_seconds")  # kept out of the card: same seed, same bytes
    module.eval()
    return module, {"fooling_training_examples": len(fooling), "training_data": digits.source, **train}


def defended_card(name: str, labels: list[str], held_out: float, facts: dict, trained: dict) -> ModelCard:
    """The card of a retrained model: its labels (the last is the fooling class) and how it was made."""
    return mnist_card(
        name=name,
        labels=list(labels),
        accuracy=round(held_out, 4),
        notes=f"Caffe's LeNet retrained from scratch with an extra '{labels[-1]}' class (the retraining "
        f"defence of Nguyen, Yosinski & Clune, iteration {facts['iteration']}). Grey pixels in [0, 1].",
        extra={**facts, **trained},
    )


def images_sha256(images: np.ndarray) -> str:
    return hashlib.sha256(as_uint8(images).tobytes()).hexdigest()


def distinct(batches: list[np.ndarray]) -> np.ndarray:
    """The distinct images of `batches` (uint8 [N, C, H, W] each), in order: an image evolved twice
    is one fooling example, not two."""
    seen, kept = set(), []
    for image in (i for batch in batches for i in batch):
        key = hashlib.sha256(image.tobytes()).digest()
        if key not in seen:
            seen.add(key)
            kept.append(image)
    return np.stack(kept)


class MnistDefence:
    """`foolbench defend`'s MNIST task: retrain LeNet from scratch on the digits plus the fooling images."""

    CLEAN = CLEAN
    clean_text = CLEAN  # what defence.json says the clean_accuracy column is
    SHARE = SHARE

    def __init__(self, data, seed: int, epochs: int | None = None):
        self.digits = load_mnist(data)
        self.seed = seed
        self.epochs = epochs  # None: the zoo recipe's

    def facts(self) -> dict:
        """What defence.json says about how this defence measures and trains (nothing to add here)."""
        return {}

    def clean_accuracy(self, model) -> float:
        x = self.digits.test_x[:, None].astype(np.float32) / np.float32(255.0)
        return float(np.mean(model.probs(x).argmax(1) == self.digits.test_y))

    def retrain(self, images: np.ndarray, labels: list[str], stem: str, facts: dict, path: Path) -> None:
        """Train LeNet(len(labels)) on the digits and `images` (the last label's class) into `path`."""
        d = self.digits
        module, trained = train_defended(d, images, len(labels), self.seed, facts["iteration"], self.epochs)
        card = defended_card(stem, labels, accuracy(module, d.test_x, d.test_y), facts, trained)
        export_onnx(module, path, card, as_images(d.test_x[:CHECK_IMAGES]))


# -- the zoo entry ---------------------------------------------------------------------------------------
@dataclass
class _Build:
    """One zoo build's fixed inputs."""

    base: Path
    seed: int
    recipe: Recipe
    work: Path
    progress: bool

    def __post_init__(self):
        self.preset = load_preset(self.recipe.attack, self.recipe.scale)
        self.base_model = load_model(str(self.base))
        self.labels = [*self.base_model.labels, FOOLING]
        self.classes = parse_classes(self.preset.search.get("classes"), list(self.base_model.labels))
        self.digits = load_mnist(None)
        self.budget = self.preset.budget(generations=self.recipe.generations)

    def say(self, message: str) -> None:
        if self.progress:
            print(f"  {message}", file=sys.stderr, flush=True)


def build_defended(base: Path, seed: int, progress: bool, work: Path, overrides: dict | None = None) -> Built:
    """The defence's last model, retrained from `base` (the zoo's LeNet of `seed`) in `work`."""
    b = _Build(Path(base), seed, dataclasses.replace(RECIPE, **(overrides or {})), Path(work), progress)
    _open_work(b)
    champions: list[np.ndarray] = []  # every run's, iterations 0..k-1
    rows, module, path, trained = [], None, b.base, {}
    for k in range(b.recipe.iterations + 1):
        if k > 0:
            module, path, trained = _retrained(b, k, distinct(champions), path)
        model = as_evaluated(load_model(str(path)), b.preset.evaluation)
        new = [_evolved(b, model, k, r) for r in range(b.recipe.runs)]
        rows.append(_row(b, model, k, new, trained))
        champions += new
    figures = {
        "accuracy": round(accuracy(module, b.digits.test_x, b.digits.test_y), 4),
        "confident_on_noise": noise_figures(lambda x, probs=module_probs(module): probs(x)[:, :-1]),
    }
    return _built(b, module, trained, rows, figures)


def _open_work(b: _Build) -> None:
    """Keep `work`'s files only if they belong to this very build (base file, recipe, seed, versions)."""
    fingerprint = {
        "base_sha256": sha256_file(b.base),
        "recipe": dataclasses.asdict(b.recipe),
        "preset": b.preset.as_dict(),
        "seed": b.seed,
        "data": b.digits.source,
        "torch": torch.__version__,
    }
    marker = b.work / "build.json"
    if marker.is_file() and json.loads(marker.read_text()) != fingerprint:
        b.say(f"not resuming from {b.work} (another recipe, seed or base model); starting over")
        for stale in b.work.iterdir():
            stale.unlink()
    b.work.mkdir(parents=True, exist_ok=True)
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(fingerprint, sort_keys=True))


def _evolved(b: _Build, model, k: int, r: int) -> np.ndarray:
    """Run r of iteration k: one champion per target class, uint8 [classes, 1, 28, 28], as its PNGs."""
    saved = b.work / f"champions-{k}-{r}.npy"
    if saved.is_file():
        return np.load(saved)
    seed = b.seed + RUN_SEED_STRIDE * k + r
    b.say(f"iteration {k}, run {r + 1}/{b.recipe.runs}: {b.preset.name} seed {seed} on {model.name}")
    search = make_search(model, b.preset.method, b.classes, seed, b.preset.tables)
    t0 = time.perf_counter()
    while not b.budget.reached(search, time.perf_counter() - t0):
        search.step()
    genomes, _ = search.engine.champions()
    images = as_uint8(search.evaluator.images(genomes))
    with atomic_path(saved) as tmp, open(tmp, "wb") as f:
        np.save(f, images)
    return images


def _retrained(b: _Build, k: int, fooling: np.ndarray, parent: Path) -> tuple[torch.nn.Module, Path, dict]:
    """Iteration k's model, trained on the fooling images of iterations 0..k-1 (reused from `work`)."""
    images = fooling.astype(np.float32) / np.float32(255.0)
    facts = {
        "iteration": k,
        "fooling_images": len(images),
        "fooling_images_sha256": images_sha256(images),
        "defence_seed": b.seed,
        "parent": b.base_model.name if k == 1 else f"{b.base_model.name}-defended-{k - 1}",
        "parent_sha256": sha256_file(parent),
        "original": b.base_model.name,
        "original_sha256": sha256_file(b.base),
    }
    weights, path = b.work / f"model-{k}.pt", b.work / f"model-{k}.onnx"
    if weights.is_file() and path.is_file():
        saved = torch.load(weights, map_location="cpu", weights_only=True)
        module = LeNet(num_classes=len(b.labels))
        module.load_state_dict(saved["model"])
        return module.eval(), path, saved["trained"]
    b.say(f"iteration {k}: retraining with {len(images)} fooling images")
    module, trained = train_defended(b.digits, images, len(b.labels), b.seed, k, b.recipe.epochs)
    held_out = accuracy(module, b.digits.test_x, b.digits.test_y)
    card = defended_card(f"{b.base_model.name}-defended-{k}", b.labels, held_out, facts, trained)
    export_onnx(module, path, card, as_images(b.digits.test_x[:CHECK_IMAGES]))
    record = {**facts, **trained}
    with atomic_path(weights) as tmp:
        torch.save({"model": module.state_dict(), "trained": record}, tmp)
    return module, path, record


def _row(b: _Build, model, k: int, runs: list[np.ndarray], trained: dict) -> dict:
    """What iteration k measured: its model's confidence in its fresh champions, and how many it
    put in the fooling class (as a row of `foolbench defend`'s table)."""
    images = np.concatenate(runs).astype(np.float32) / np.float32(255.0)
    targets = np.tile(b.classes, len(runs))
    probs = model.probs(images)
    top = probs.argmax(1)
    return {
        "iteration": k,
        "fooling_images": trained.get("fooling_images", 0),
        "runs": len(runs),
        "median_confidence": round(float(np.median(probs[np.arange(len(top)), targets])), 6),
        "fooled_share": round(float(np.mean(top == len(model.labels) - 1)) if k else 0.0, 4),
    }


def _built(b: _Build, module, trained: dict, rows: list[dict], figures: dict) -> Built:
    """The model with its card: the recipe, every iteration's figures, held-out accuracy, noise."""
    extra = {
        **{key: trained[key] for key in ("iteration", "fooling_images", "original", "original_sha256")},
        "seed": b.seed,
        "recipe": dataclasses.asdict(b.recipe),
        "iterations": rows,
        "confident_on_noise": figures["confident_on_noise"],
        "training_data": b.digits.source,
        "test_size": len(b.digits.test_y),
        "torch": torch.__version__,
    }
    card = mnist_card(
        labels=b.labels, accuracy=figures["accuracy"], notes=f"{SUMMARY} Grey pixels in [0, 1].", extra=extra
    )
    r, budget = b.recipe, b.budget.__dict__
    how = [
        f"Base: `{b.base_model.name}` (sha256 {trained['original_sha256'][:12]}...), the zoo's LeNet.",
        f"Defence: {r.iterations} iterations. Each evolves {r.runs} runs of `{r.attack}` at {r.scale} scale "
        f"({', '.join(f'{k} {v}' for k, v in budget.items() if v is not None)} per run; seeds {b.seed} + "
        f"{RUN_SEED_STRIDE} k + r) against the current model, then a fresh LeNet with the extra class "
        f"'{FOOLING}' is trained on the digits plus every distinct champion so far ({SHARE}).",
        f"Held-out top-1 accuracy: {figures['accuracy']:.2%} on {len(b.digits.test_y)} digits never "
        "trained on (the fooling class counts as wrong).",
        *[
            f"Iteration {row['iteration']}: {row['runs']} fresh runs against "
            f"{'the base model' if not row['iteration'] else 'the model trained on ' + str(row['fooling_images']) + ' fooling images'}"
            f" reach a median {percent(row['median_confidence'])} in their target digit; "
            f"{row['fooled_share']:.0%} of the champions are put in the fooling class."
            for row in rows
        ],
        "Non-digit images given > "
        f"{CONFIDENT:.0%} confidence in a digit class (1,000 fresh images of each kind): "
        + ", ".join(f"{kind} {share:.1%}" for kind, share in figures["confident_on_noise"].items())
        + ".",
    ]
    example = as_images(b.digits.test_x[:CHECK_IMAGES])
    return Built(module=module, card=card, example=example, summary=SUMMARY, how=how)
