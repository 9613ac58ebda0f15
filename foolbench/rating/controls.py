"""Real images of the rated classes: the controls shown among the champions.

A control is a real image of a class a run targets, shown the same way and with the same kind of
options as a champion. A person who picks its class is paying attention; the share of controls a
rater gets right decides whether their answers count (`summary`).

The images come from `data.labelled`, the one registry of labelled real images: a run's dataset
(its model card's, else its preset's) names the entry (`KEYS`; a suite added there and here is one
more line), and `--data DIR` (one sub-folder per class, named by label or class index, as
`foolbench baseline --data` reads it) overrides it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from foolbench.errors import FoolbenchError
from foolbench.images import to_uint8

# A run's dataset -> its labelled real images in `data.labelled`.
KEYS = {
    "mnist": "mnist-heldout",
    "cifar10": "cifar10-test",  # a CIFAR-10 zoo card's dataset
    "cifar": "cifar10-test",  # the cifar-* presets' dataset
    "imagenet": "imagenet-sample",
}


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
    from foolbench.data.labelled import image_folder, labelled

    if data is not None:
        found, where = image_folder(data, "data"), f"--data {data}"
    elif dataset in KEYS:
        found, where = labelled(KEYS[dataset]), KEYS[dataset]
    else:
        raise FoolbenchError(
            f"no real images known for dataset '{dataset or 'unknown'}' (known: {', '.join(KEYS)}); pass "
            "--data DIR with one sub-folder of images per class, named by label or class index"
        )
    return _as_controls(found, labels, where, Path(data) if data is not None else None)


def _as_controls(found, labels: Sequence[str], where: str, root: Path | None) -> RealImages:
    from foolbench.data.photos import match_classes

    classes = match_classes(found.classes, list(labels), where)[np.asarray(found.labels)]
    images = found.images
    if hasattr(images, "path"):  # an image folder: each image named by its path inside it
        base = root or Path(images.path(0)).parents[1]
        names = [
            f"{found.key}/{Path(images.path(i)).relative_to(base).as_posix()}" for i in range(len(images))
        ]
    else:
        names = [f"{found.key}/{i:04d}" for i in range(len(images))]
    return RealImages(
        found.source, classes, names, lambda i: Image.fromarray(to_uint8(np.asarray(images[i])))
    )


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
