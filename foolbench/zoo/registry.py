"""The zoo: the reference models of the paper, each built into an ONNX file with its model card.

This module stays import-light (no torch), so that `foolbench zoo list` is instant; the builders
are imported only when a model is built. Seed twins of the trained MNIST models are named
`lenet-mnist-s1`, `lenet-mnist-s2`, ...: same recipe, different initialisation and data order,
for the paper's transfer experiment. `lenet-mnist` itself is seed 0.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from foolbench.errors import FoolbenchError
from foolbench.fileio import write_text
from foolbench.zoo.common import TORCHVISION_URLS, Built

DEFAULT_MODEL = "lenet-mnist"  # the model of every command that needs one and is given none
ZOO_ENV = "FOOLBENCH_ZOO"


@dataclass(frozen=True)
class Entry:
    name: str
    dataset: str
    description: str
    kind: str  # trained here: "mnist", "robust", "defended"; "efficientnet" (weights in a pip package), "torchvision"

    @property
    def weights_url(self) -> str | None:
        return TORCHVISION_URLS.get(self.name)


ENTRIES = {
    e.name: e
    for e in (
        Entry("lenet-mnist", "mnist", "Caffe's LeNet, the paper's MNIST network, trained here", "mnist"),
        Entry("mlp-mnist", "mnist", "MLP 784-512-512-10, a second MNIST architecture for transfer", "mnist"),
        Entry(
            "efficientnet-lite0", "imagenet", "EfficientNet-Lite0, ImageNet weights from PyPI", "efficientnet"
        ),
        Entry(
            "efficientnet-lite1", "imagenet", "EfficientNet-Lite1, ImageNet weights from PyPI", "efficientnet"
        ),
        Entry(
            "efficientnet-lite2", "imagenet", "EfficientNet-Lite2, ImageNet weights from PyPI", "efficientnet"
        ),
        Entry("alexnet", "imagenet", "torchvision AlexNet, as fooled in the paper", "torchvision"),
        Entry("googlenet", "imagenet", "torchvision GoogLeNet, as fooled in the paper", "torchvision"),
        Entry(
            "lenet-mnist-pgd",
            "mnist",
            "LeNet adversarially trained (PGD, L-inf 0.3): robust reference",
            "robust",
        ),
        Entry(
            "lenet-mnist-oe",
            "mnist",
            "LeNet with outlier exposure (noise, random CPPNs): reference",
            "robust",
        ),
        Entry(
            "lenet-mnist-defended",
            "mnist",
            "LeNet after the paper's retraining defence (11th class 'fooling'): reference",
            "defended",
        ),
        Entry(
            "airnet-cifar10",
            "cifar10",
            "airbench94's network at half width, trained here on CIFAR-10: plain reference",
            "cifar10",
        ),
        Entry(
            "airnet-cifar10-at",
            "cifar10",
            "AirNet adversarially trained (FGSM with random start, L-inf 8/255): robust reference",
            "cifar10",
        ),
        Entry(
            "airnet-cifar10-oe",
            "cifar10",
            "AirNet with outlier exposure (colour noise, random CPPNs): reference",
            "cifar10",
        ),
        Entry(
            "airnet-cifar10-defended",
            "cifar10",
            "AirNet after the paper's retraining defence (11th class 'fooling'): reference",
            "defended",
        ),
    )
}
ZOO_NAMES = tuple(ENTRIES)
TRAINED = ("mnist", "robust", "defended", "cifar10")  # kinds trained here: they take --seed
# The recipe flags each kind takes (`build`'s `recipe`), beyond --seed
RECIPE_FLAGS = {
    "robust": ("epochs", "attack_digits"),
    "cifar10": ("epochs", "attack_digits"),
    "defended": ("epochs", "generations"),
}
DEFENDED_BASE = "lenet-mnist"  # the model the MNIST defended entry starts from (its seed twin for --seed)
_NEEDS = {
    "mnist": "nothing (trains on the CPU: LeNet ~50 s, the MLP ~15 s)",
    "robust": "nothing (trains on the CPU: PGD ~20 min, OE ~3 min)",
    "cifar10": "CIFAR-10 (--data DIR or $FOOLBENCH_DATA/cifar10; trains on the CPU for 1-2 h)",
    "defended": "nothing (lenet-mnist, then evolves and retrains on the CPU: ~5 min)",
    "defended-cifar10": "CIFAR-10, as airnet-cifar10 (which it builds first); evolves and retrains: ~2 h",
    "efficientnet": "nothing (weights in a pip package)",
    "torchvision": "internet or --weights FILE",
}


REPO_ZOO = Path(__file__).resolve().parents[2] / "zoo"


def zoo_dir() -> Path:
    """Where built models live: $FOOLBENCH_ZOO, else the repository's zoo/ (wherever the command runs
    from) when foolbench runs from a checkout, else ./zoo."""
    if os.environ.get(ZOO_ENV):
        return Path(os.environ[ZOO_ENV])
    return REPO_ZOO if REPO_ZOO.is_dir() else Path("zoo")


def list_zoo(out_dir: str | Path | None = None) -> list[dict]:
    """One row per zoo model: what it is, what building it needs, and whether it is built already."""
    folder = Path(out_dir) if out_dir else zoo_dir()
    return [
        {
            "name": e.name,
            "dataset": e.dataset,
            "description": e.description,
            "needs": _NEEDS[
                "defended-cifar10" if e.kind == "defended" and e.dataset == "cifar10" else e.kind
            ],
            "needs_internet_or_weights": e.kind == "torchvision",
            "weights_url": e.weights_url,
            "path": str(folder / f"{e.name}.onnx"),
            "built": (folder / f"{e.name}.onnx").is_file(),
        }
        for e in ENTRIES.values()
    ]


def resolve(name: str, seed: int = 0) -> tuple[Entry, int, str]:
    """(entry, seed, file stem) for a zoo name, seed twins (`lenet-mnist-s3`) included."""
    twin = re.fullmatch(r"(.+)-s(\d+)", name)
    if twin and twin[1] in ENTRIES and ENTRIES[twin[1]].kind in TRAINED:
        name, name_seed = twin[1], int(twin[2])
        if seed not in (0, name_seed):
            raise FoolbenchError(
                f"the name {twin[0]} says seed {name_seed} but --seed is {seed}; give only one"
            )
        seed = name_seed
    if name not in ENTRIES:
        raise FoolbenchError(
            f"unknown zoo model '{name}'; known: {', '.join(ZOO_NAMES)} (and seed twins such as lenet-mnist-s1)"
        )
    entry = ENTRIES[name]
    if seed < 0 or (seed and entry.kind not in TRAINED):
        raise FoolbenchError(f"--seed {seed}: only the models trained here take a seed (a whole number >= 0)")
    return entry, seed, name if seed == 0 else f"{name}-s{seed}"


def build(
    name: str,
    out_dir: str | Path | None = None,
    data: str | Path | None = None,
    seed: int = 0,
    weights: str | Path | None = None,
    progress: bool = True,
    epochs: int | None = None,
    attack_digits: int | None = None,
    generations: int | None = None,
) -> Path:
    """Build zoo model `name` into OUT/STEM.onnx plus the human-readable OUT/STEM.md; returns the .onnx path.

    `epochs`, `attack_digits` and `generations` size a robust or defended model's recipe (training
    epochs; held-out digits a robust accuracy is measured on; generations of each run the defence
    evolves); the defaults are the zoo's. Those builds checkpoint into OUT/.STEM.build/ as they go
    (every epoch, every evolved run), so a killed build resumes there when run again.
    """
    entry, seed, stem = resolve(name, seed)
    given = (("epochs", epochs), ("attack_digits", attack_digits), ("generations", generations))
    recipe = {k: v for k, v in given if v is not None}
    _check_options(entry, data, weights, recipe)
    folder = Path(out_dir) if out_dir else zoo_dir()
    path = folder / f"{stem}.onnx"
    _clear_temporaries(folder, stem)
    _say(progress, f"building {stem} ...")
    start = time.perf_counter()
    work = folder / f".{stem}.build"
    built = _run_builder(entry, seed, data, weights, progress, work, recipe, folder)
    built.card.name = stem
    # a data path would make the same weights another file: CIFAR-10 cards name their data by digest
    built.card.extra["rebuild"] = _rebuild_command(
        stem, None if entry.dataset == "cifar10" else data, weights, recipe
    )
    from foolbench.zoo.export import export_onnx

    export_onnx(built.module, path, built.card, built.example, built.check)
    if work.is_dir():
        from foolbench.zoo.robust import clear_work

        clear_work(work)
    seconds = time.perf_counter() - start
    from foolbench.zoo.cardmd import render_card_md

    write_text(path.with_suffix(".md"), render_card_md(path, built, seconds))
    _say(progress, f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {seconds:.0f} s")
    return path


def ensure(name: str, out_dir: str | Path | None = None, data: str | Path | None = None) -> Path:
    """The built model file, building it first if it is not there yet (models are built on first use);
    `data` is a CIFAR-10 model's training data (the others train on data they bring)."""
    entry, _, stem = resolve(name)
    path = (Path(out_dir) if out_dir else zoo_dir()) / f"{stem}.onnx"
    if path.is_file():
        return path
    return build(name, out_dir=out_dir, data=data if entry.dataset == "cifar10" else None)


def ensure_file(path: Path) -> Path:
    """A missing zoo model file someone named (`zoo/efficientnet-lite1.onnx`), built into its folder.

    Models that need nothing are built; alexnet and googlenet need ImageNet weights that foolbench
    does not ship, so unless torch's hub cache holds them the answer is one line saying how to give
    them, rather than a download started by a command that was asked to run a model."""
    entry, _, stem = resolve(path.stem)
    if entry.kind == "torchvision":
        from foolbench.zoo.imagenet import cached_weights

        if cached_weights(entry.name) is None:
            url = TORCHVISION_URLS[entry.name]
            out = "" if path.parent.resolve() == zoo_dir().resolve() else f" --out {path.parent}"
            raise FoolbenchError(
                f"{path} does not exist, and {entry.name} needs ImageNet weights foolbench does not ship: "
                f"build it with `foolbench zoo build {entry.name} --weights FILE{out}`, FILE being "
                f"torchvision's {url.rsplit('/', 1)[1]} ({url})"
            )
    return ensure(stem, out_dir=path.parent)


def _check_options(entry: Entry, data, weights, recipe: dict) -> None:
    if data is not None and entry.kind not in ("mnist", "robust", "cifar10") and entry.dataset != "cifar10":
        raise FoolbenchError(
            f"--data is for the MNIST models trained from the digits alone; {entry.name} "
            + (
                "does not train"
                if entry.kind not in TRAINED
                else f"retrains {DEFENDED_BASE} as built in the zoo"
            )
        )
    if weights is not None and entry.kind != "torchvision":
        raise FoolbenchError(f"--weights is for alexnet and googlenet; {entry.name} brings its own")
    for key, value in recipe.items():
        flag = f"--{key.replace('_', '-')}"
        if key not in RECIPE_FLAGS.get(entry.kind, ()):
            takers = [e.name for e in ENTRIES.values() if key in RECIPE_FLAGS.get(e.kind, ())]
            raise FoolbenchError(f"{flag}: only {', '.join(takers)} take it, not {entry.name}")
        if value < 1:
            raise FoolbenchError(f"{flag} {value}: give a whole number >= 1")


def _clear_temporaries(folder: Path, stem: str) -> None:
    """Delete what a killed build of `stem` left half-written (atomic writes' hidden temporaries)."""
    for pattern in (f".{stem}.onnx.*.tmp", f".{stem}.md.*.tmp", f".{stem}.build/.*.tmp"):
        for stale in folder.glob(pattern):
            stale.unlink(missing_ok=True)


def _run_builder(
    entry: Entry, seed: int, data, weights, progress: bool, work: Path, recipe: dict, folder: Path
) -> Built:
    if entry.kind == "mnist":
        from foolbench.zoo.mnist_models import build_mnist

        return build_mnist(entry.name, seed, data, progress)
    if entry.kind in ("robust", "cifar10"):
        from foolbench.zoo.robust import build_robust

        return build_robust(entry.name, seed, data, progress, work, recipe)
    if entry.kind == "defended":
        from foolbench.zoo.defended import RECIPES as DEFENCES
        from foolbench.zoo.defended import build_defended

        defence = DEFENCES[entry.name]
        base = ensure(resolve(defence.base, seed)[2], out_dir=folder, data=data)
        return build_defended(base, seed, progress, work, recipe, entry.name, data)
    from foolbench.zoo import imagenet

    if entry.kind == "efficientnet":
        return imagenet.build_efficientnet(entry.name, progress)
    return imagenet.build_torchvision(entry.name, weights, progress)


def _rebuild_command(stem: str, data, weights, recipe: dict) -> str:
    """The command that rebuilds the same model; where it is written (--out) is not part of the model."""
    parts = ["foolbench", "zoo", "build", stem]
    flags = {
        "--data": data,
        "--weights": weights,
        **{f"--{k.replace('_', '-')}": v for k, v in recipe.items()},
    }
    for flag, value in flags.items():
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)
