"""Real colour photos: the baseline a fooling confidence is read against, and the zoo's cat check.

`natural_photos` uses only the photos that scikit-image ships inside its package, so it works
offline. `image_folder` reads the user's own photos (one sub-folder per class) lazily, one file at a
time, so a large folder costs nothing until it is iterated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from foolbench.errors import FoolbenchError


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if name == "stereo_motorcycle" else image

    return load


# Every RGB photograph scikit-image ships offline (the others need its optional downloader).
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "chelsea": _skimage("chelsea"),
    "astronaut": _skimage("astronaut"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "retina": _skimage("retina"),
}


def to_chw_float(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [0, 1], the layout every foolbench image uses."""
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0)


def photo(name: str) -> np.ndarray:
    """One shipped photo as float32 [3, H, W] in [0, 1]; `chelsea` is the cat the zoo checks with."""
    if name not in PHOTOS:
        raise FoolbenchError(f"unknown photo '{name}'; known photos: {', '.join(PHOTOS)}")
    return to_chw_float(PHOTOS[name]())


def natural_photos(names: Sequence[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, float32 [3, H, W] in [0, 1]) for the given shipped photos, all of them by default."""
    return [(name, photo(name)) for name in (names or PHOTOS)]


class FolderImages(Sequence):
    """The images of an ImageFolder, decoded only when indexed (float32 [3, H, W] in [0, 1])."""

    def __init__(self, dataset):
        self._dataset = dataset

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        path, _ = self._dataset.samples[index]
        try:
            return to_chw_float(self._dataset.loader(path))
        except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for broken or truncated files
            raise FoolbenchError(
                f"{path} is not a readable image ({type(e).__name__}); remove or replace it"
            ) from None

    def path(self, index: int) -> str:
        return self._dataset.samples[index][0]


def image_folder(path: str | Path) -> tuple[FolderImages, np.ndarray, list[str]]:
    """(lazy images, int64 labels, class names) from PATH/<class>/<image files>, classes sorted by name."""
    from torchvision.datasets import ImageFolder

    path = Path(path)
    if not path.is_dir():
        raise FoolbenchError(f"{path} is not a folder; pass a folder with one sub-folder of images per class")
    try:
        dataset = ImageFolder(str(path))
    except FileNotFoundError:
        raise FoolbenchError(
            f"{path}: no images found; expected one sub-folder per class holding image files "
            "(e.g. DIR/cat/1.jpg, DIR/dog/2.png)"
        ) from None
    labels = np.asarray(dataset.targets, dtype=np.int64)
    return FolderImages(dataset), labels, list(dataset.classes)


def label_key(text: str) -> str:
    """A class name as folders and labels are compared: case, spaces, underscores and hyphens ignored,
    so a folder `golden_retriever` is the label "golden retriever"."""
    return re.sub(r"[\s_-]+", "", text).casefold()


def match_classes(folders: Sequence[str], labels: Sequence[str], where: str) -> np.ndarray:
    """Each class folder's model class: the label of that exact text, else the label it names up to
    case, spaces and underscores (`label_key`), else the folder name as a class index. A folder
    that names no class is refused, so no image is scored against a made-up truth."""
    by_key: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_key.setdefault(label_key(label), []).append(i)
    out, unmatched = [], []
    for name in folders:
        hits = [i for i, label in enumerate(labels) if label == name] or by_key.get(label_key(name), [])
        if len(hits) > 1:
            raise FoolbenchError(
                f"{where}: folder '{name}' matches {len(hits)} classes of the model ({hits}); "
                "name it by its class index instead"
            )
        if hits:
            out.append(hits[0])
        elif name.isdigit() and int(name) < len(labels):
            out.append(int(name))
        else:
            unmatched.append(name)
    if unmatched:
        example = ", ".join(f"'{label}'" for label in labels[:3])
        which = (
            f"none of its {len(folders)} class folders names a class of the model"
            if len(unmatched) == len(folders)
            else f"{len(unmatched)} of its {len(folders)} class folders name no class of the model"
        )
        raise FoolbenchError(
            f"{where}: {which}: '{unmatched[0]}' is neither a label (case, spaces and underscores "
            f"ignored) nor a class index in 0..{len(labels) - 1}; name class folders by the model's "
            f"labels ({example}, ...) or by index"
        )
    return np.asarray(out, dtype=np.int64)
