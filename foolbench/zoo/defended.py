"""The paper's retraining defence (Sec. 3.5), and the zoo's models made by it (MNIST and CIFAR-10).

This module owns the MNIST retraining: a fresh LeNet with an 11th "fooling" class, trained on the
digits plus the fooling images at a constant class share (`train_defended`). Two loops use it:
- `foolbench defend` (`foolbench.experiments.defence`) keeps every run directory and writes the
  defence's table, for any preset and iteration count;
- `foolbench zoo build lenet-mnist-defended` (`build_defended` here) runs the same loop in memory
  with the zoo's fixed recipe (`RECIPES`), so that the defended model is a reference anyone can build
  offline like the others. It gives, weight for weight, the last model of
      foolbench defend --model lenet-mnist --attack mnist-cppn --scale cpu --iterations 2 --runs 5
  (the tests check this at a small budget).

The zoo loop is written once for any data set: `airnet-cifar10-defended` is the same loop with the
CIFAR-10 network, its `cifar-cppn` preset and its training (`_Cifar10`, retrained by the shared
recipe loop of `foolbench.zoo.training`, resumable per epoch), configured in `RECIPES`.

The zoo build keeps each run's champions and each iteration's weights in its work folder, so a
killed build resumes after its last finished run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
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

ATTACK_IMAGES = 1000  # CIFAR-10 test images a defended model's robust accuracy is measured on
RUN_SEED_STRIDE = 1000  # iteration k, run r evolves with seed + 1000 k + r
CLEAN = "held-out MNIST accuracy: top-1 over all classes equals the digit (the fooling class counts as wrong)"
SHARE = (
    "the fooling class gets as many training examples as an average digit class: the distinct fooling "
    "images repeated evenly, or a seeded subsample when there are more"
)


@dataclass(frozen=True)
class Recipe:
    """How a zoo defended model is made; `generations` and `epochs` size it (tests use small ones)."""

    attack: str = "mnist-cppn"  # the evolutionary preset of every run
    scale: str = "cpu"
    iterations: int = 2  # retrain-and-evolve rounds; the model is the last one's
    runs: int = 5  # runs per iteration, each giving one champion per target class
    generations: int | None = None  # per run; None: the preset's budget
    epochs: int | None = None  # the retraining's; None: the base model's recipe's


@dataclass(frozen=True)
class Entry:
    """A defended zoo entry: the model it starts from, its data set and its recipe."""

    base: str
    dataset: str
    recipe: Recipe
    summary: str


RECIPE = Recipe()
SUMMARY = (
    "The zoo's LeNet retrained with an 11th 'fooling' class that holds the CPPN images evolved against it "
    "(the retraining defence of Nguyen, Yosinski & Clune, 2 iterations): the paper's own defence, a reference."
)
RECIPES = {
    "lenet-mnist-defended": Entry("lenet-mnist", "mnist", RECIPE, SUMMARY),
    "airnet-cifar10-defended": Entry(
        "airnet-cifar10",
        "cifar10",
        Recipe(attack="cifar-cppn", iterations=1, runs=5),
        "The zoo's CIFAR-10 AirNet retrained with an 11th 'fooling' class that holds the CPPN images evolved "
        "against it (the retraining defence of Nguyen, Yosinski & Clune, 1 iteration, as the paper's ImageNet "
        "defence): the paper's own defence, a reference.",
    ),
}


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
class _Mnist:
    """What the zoo loop needs of MNIST: the digits, LeNet's retraining, its cards and figures."""

    what = "digits"
    network_name = "LeNet"

    def __init__(self, data=None):
        self.digits = load_mnist(data)
        self.source = self.digits.source

    def retrain(self, images, classes, seed, k, epochs, work, progress):
        return train_defended(self.digits, images, classes, seed, k, epochs)

    def network(self, classes: int) -> torch.nn.Module:
        return LeNet(num_classes=classes)

    def held_out(self, module) -> float:
        return accuracy(module, self.digits.test_x, self.digits.test_y)

    def example(self) -> torch.Tensor:
        return as_images(self.digits.test_x[:CHECK_IMAGES])

    def iteration_card(self, stem, labels, held_out, facts, trained) -> ModelCard:
        return defended_card(stem, labels, held_out, facts, trained)

    def figures(self, module, progress) -> dict:
        return {
            "accuracy": round(self.held_out(module), 4),
            "confident_on_noise": noise_figures(lambda x, probs=module_probs(module): probs(x)[:, :-1]),
        }

    def card(self, labels, accuracy_, summary, extra) -> ModelCard:
        return mnist_card(
            labels=labels, accuracy=accuracy_, notes=f"{summary} Grey pixels in [0, 1].", extra=extra
        )


class _Cifar10:
    """What the zoo loop needs of CIFAR-10: the images, AirNet's retraining (the shared recipe loop,
    plain, resumable per epoch), its cards and figures (those of the other CIFAR-10 references)."""

    what = "test images"
    network_name = "AirNet"

    def __init__(self, data=None):
        from foolbench.data.cifar10 import load_cifar10
        from foolbench.zoo.cifar import Cifar10Task

        self.cifar = load_cifar10(data)
        self.task = Cifar10Task(self.cifar)
        self.source = self.cifar.source

    def retrain(self, images, classes, seed, k, epochs, work, progress):
        from foolbench.zoo.cifar import as_float, build_threads
        from foolbench.zoo.robust import CIFAR_RECIPE
        from foolbench.zoo.training import recipe_facts, train

        c = self.cifar
        per_class = round(len(c.train_y) / (classes - 1))
        pick = balanced_indices(len(images), per_class, seed + k)
        x = torch.cat([as_float(c.train_x), torch.from_numpy(as_uint8(images[pick])).float() / 255.0])
        y = torch.cat([torch.as_tensor(c.train_y), torch.full((len(pick),), classes - 1, dtype=torch.int64)])
        recipe = dataclasses.replace(CIFAR_RECIPE, epochs=epochs or CIFAR_RECIPE.epochs)
        data = f"{c.source} + {len(pick)} fooling images (sha256 {images_sha256(images[pick])[:16]})"
        with build_threads():
            module, facts = train(self.task, x, y, recipe, seed, work, progress, data, classes=classes)
        module = module.to(memory_format=torch.contiguous_format).eval()
        return module, {
            "fooling_training_examples": len(pick),
            "training_data": c.source,
            "recipe": recipe_facts(recipe),
            "final_loss": facts["final_loss"],
        }

    def network(self, classes: int) -> torch.nn.Module:
        from foolbench.zoo.cifar import AirNet

        return AirNet(classes, self.task.widths)

    def held_out(self, module) -> float:
        from foolbench.zoo.cifar import as_float

        probs = module_probs(module)(as_float(self.cifar.test_x).numpy())
        return float(np.mean(probs.argmax(1) == self.cifar.test_y))

    def example(self) -> torch.Tensor:
        from foolbench.zoo.cifar import CHECK_IMAGES as CHECK
        from foolbench.zoo.cifar import as_float

        return as_float(self.cifar.test_x[:CHECK])

    def iteration_card(self, stem, labels, held_out, facts, trained) -> ModelCard:
        from foolbench.zoo.cifar import cifar_card

        card = cifar_card(
            labels,
            round(held_out, 4),
            f"AirNet retrained with an extra '{labels[-1]}' class "
            f"(iteration {facts['iteration']}). RGB pixels in [0, 1].",
            {**facts, **trained},
        )
        card.name = stem
        return card

    def figures(self, module, progress) -> dict:
        from foolbench.zoo.robust import cifar_figures

        with _threads():
            return cifar_figures(module, self.cifar, ATTACK_IMAGES, progress)

    def card(self, labels, accuracy_, summary, extra) -> ModelCard:
        from foolbench.zoo.cifar import cifar_card

        return cifar_card(labels, accuracy_, f"{summary} RGB pixels in [0, 1].", extra)


def _threads():
    from foolbench.zoo.cifar import build_threads

    return build_threads()


KITS = {"mnist": _Mnist, "cifar10": _Cifar10}


@dataclass
class _Build:
    """One zoo build's fixed inputs."""

    base: Path
    seed: int
    recipe: Recipe
    work: Path
    progress: bool
    entry: Entry
    data: object = None

    def __post_init__(self):
        self.preset = load_preset(self.recipe.attack, self.recipe.scale)
        self.base_model = load_model(str(self.base))
        self.labels = [*self.base_model.labels, FOOLING]
        self.classes = parse_classes(self.preset.search.get("classes"), list(self.base_model.labels))
        self.kit = KITS[self.entry.dataset](self.data)
        self.budget = self.preset.budget(generations=self.recipe.generations)

    def say(self, message: str) -> None:
        if self.progress:
            print(f"  {message}", file=sys.stderr, flush=True)


def build_defended(
    base: Path,
    seed: int,
    progress: bool,
    work: Path,
    overrides: dict | None = None,
    name: str = "lenet-mnist-defended",
    data=None,
) -> Built:
    """The defence's last model, retrained from `base` (the zoo's base model of `seed`) in `work`."""
    entry = RECIPES[name]
    recipe = dataclasses.replace(
        RECIPE if name == "lenet-mnist-defended" else entry.recipe, **(overrides or {})
    )
    b = _Build(Path(base), seed, recipe, Path(work), progress, entry, data)
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
    return _built(b, module, trained, rows, b.kit.figures(module, progress))


def _open_work(b: _Build) -> None:
    """Keep `work`'s files only if they belong to this very build (base file, recipe, seed, versions).
    The preset counts by its tables (the recipe names it), not by the path of the file it came from,
    so that a build resumes from another checkout."""
    fingerprint = {
        "base_sha256": sha256_file(b.base),
        "recipe": dataclasses.asdict(b.recipe),
        "preset": b.preset.tables,
        "seed": b.seed,
        "data": b.kit.source,
        "torch": torch.__version__,
    }
    marker = b.work / "build.json"
    if marker.is_file() and json.loads(marker.read_text()) != fingerprint:
        b.say(f"not resuming from {b.work} (another recipe, seed or base model); starting over")
        for stale in b.work.iterdir():
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    b.work.mkdir(parents=True, exist_ok=True)
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(fingerprint, sort_keys=True))


def _evolved(b: _Build, model, k: int, r: int) -> np.ndarray:
    """Run r of iteration k: one champion per target class, uint8 [classes, C, H, W], as its PNGs."""
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
        module = b.kit.network(len(b.labels))
        module.load_state_dict(saved["model"])
        return module.eval(), path, saved["trained"]
    b.say(f"iteration {k}: retraining with {len(images)} fooling images")
    module, trained = b.kit.retrain(
        images, len(b.labels), b.seed, k, b.recipe.epochs, b.work / f"training-{k}", b.progress
    )
    held_out = b.kit.held_out(module)
    card = b.kit.iteration_card(f"{b.base_model.name}-defended-{k}", b.labels, held_out, facts, trained)
    export_onnx(module, path, card, b.kit.example())
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
    figures = dict(figures)
    accuracy_ = figures.pop("accuracy")
    extra = {
        **{key: trained[key] for key in ("iteration", "fooling_images", "original", "original_sha256")},
        "seed": b.seed,
        "recipe": dataclasses.asdict(b.recipe),
        "iterations": rows,
        "confident_on_noise": figures.pop("confident_on_noise"),
        "training_data": b.kit.source,
        "test_size": _test_size(b),
        "torch": torch.__version__,
        **figures,
    }
    card = b.kit.card(b.labels, accuracy_, b.entry.summary, extra)
    r, budget, what = b.recipe, b.budget.__dict__, b.kit.what
    how = [
        f"Base: `{b.base_model.name}` (sha256 {trained['original_sha256'][:12]}...), the zoo's {b.kit.network_name}.",
        f"Defence: {r.iterations} iteration(s). Each evolves {r.runs} runs of `{r.attack}` at {r.scale} scale "
        f"({', '.join(f'{k} {v}' for k, v in budget.items() if v is not None)} per run; seeds {b.seed} + "
        f"{RUN_SEED_STRIDE} k + r) against the current model, then a fresh {b.kit.network_name} with the extra "
        f"class '{FOOLING}' is trained on the training set plus every distinct champion so far ({SHARE}).",
        f"Held-out top-1 accuracy: {accuracy_:.2%} on {_test_size(b)} {what} never "
        "trained on (the fooling class counts as wrong).",
        *[
            f"Iteration {row['iteration']}: {row['runs']} fresh runs against "
            f"{'the base model' if not row['iteration'] else 'the model trained on ' + str(row['fooling_images']) + ' fooling images'}"
            f" reach a median {percent(row['median_confidence'])} in their target class; "
            f"{row['fooled_share']:.0%} of the champions are put in the fooling class."
            for row in rows
        ],
        *_figure_lines(extra, what),
    ]
    if "median_confidence_right" in extra:
        from foolbench.zoo.robust import confidence_line

        how.append(confidence_line(extra))
    return Built(module=module, card=card, example=b.kit.example(), summary=b.entry.summary, how=how)


def _test_size(b: _Build) -> int:
    kit = b.kit
    return len(kit.digits.test_y) if isinstance(kit, _Mnist) else len(kit.cifar.test_y)


def _figure_lines(extra: dict, what: str) -> list[str]:
    lines = []
    if "robust_accuracy" in extra:
        a = extra["robust_attack"]
        lines.append(
            f"Robust accuracy {extra['robust_accuracy']:.1%} on {a['digits']} {what} under torchattacks "
            f"{a['library']} PGD (L-inf eps {a['eps']:.4g}, {a['steps']} steps of {a['alpha']:.4g}; a "
            f"'{FOOLING}' answer counts as wrong)."
        )
    lines.append(
        "Images of no class given > "
        f"{CONFIDENT:.0%} confidence in a real class (1,000 fresh images of each kind): "
        + ", ".join(f"{kind} {share:.1%}" for kind, share in extra["confident_on_noise"].items())
        + "."
    )
    return lines
