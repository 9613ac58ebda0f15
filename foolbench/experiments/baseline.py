"""The real-image baseline a fooling confidence is read against, and whether confidence separates the two.

The paper (Sec. 3.3) puts its fooling confidences next to the model's confidence on real images: on
the ImageNet validation set AlexNet's median top-1 confidence is 60.3% — 86.7% where its label is
right and 33.7% where it is wrong. `baseline` measures the same on real images, and, given runs, asks
whether the model's own max-softmax could tell the fooling images from real ones (the OpenOOD
convention: real images are the positives, scored by max-softmax; AUROC and the share of fooling
images accepted at the threshold that keeps 95% of real images).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from foolbench.data.photos import label_key, match_classes
from foolbench.errors import FoolbenchError
from foolbench.fileio import write_json
from foolbench.models.card import FOOLING, real_labels
from foolbench.models.load import ModelOptions

PAPER = {
    "data": "ImageNet validation set, AlexNet (Caffe reference model)",
    "median_confidence": 0.603,
    "median_confidence_correct": 0.867,
    "median_confidence_wrong": 0.337,
}
TPR = 0.95
PER_IMAGE_LIMIT = 100  # baseline.json lists every image's top-1 when there are at most this many


# -- separability ----------------------------------------------------------------------------------------
def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of `x`, ties sharing their average rank."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties counted half: the Mann-Whitney rank formula."""
    pos = np.asarray(positives, dtype=np.float64).ravel()
    neg = np.asarray(negatives, dtype=np.float64).ravel()
    if not len(pos) or not len(neg):
        raise FoolbenchError("AUROC needs at least one positive and one negative score")
    ranks = average_ranks(np.concatenate([pos, neg]))
    n = len(pos)
    return float((ranks[:n].sum() - n * (n + 1) / 2.0) / (n * len(neg)))


def fpr_at_tpr(
    positives: Sequence[float], negatives: Sequence[float], tpr: float = TPR
) -> tuple[float, float]:
    """(share of negatives accepted, threshold) at the highest threshold accepting >= `tpr` of positives.

    A score >= threshold is accepted as a positive; this is OpenOOD's FPR@95 (`fpr[argmax(tpr >= 0.95)]`).
    """
    pos = np.sort(np.asarray(positives, dtype=np.float64).ravel())[::-1]
    neg = np.asarray(negatives, dtype=np.float64).ravel()
    if not len(pos) or not len(neg):
        raise FoolbenchError("FPR at a TPR needs at least one positive and one negative score")
    k = max(1, int(np.ceil(tpr * len(pos) - 1e-9)))
    threshold = float(pos[k - 1])
    return float(np.mean(neg >= threshold)), threshold


# -- real images -------------------------------------------------------------------------------------------
def default_data(model) -> str:
    """mnist for digit models; cifar10 for CIFAR-10 models (their card says so, or 10 colour classes
    at most 64 px wide) when the user's copy is found; else scikit-image's photos."""
    dataset = (model.card.dataset or "").lower()
    if dataset == "mnist" or (dataset != "imagenet" and model.spec.channels == 1):
        return "mnist"
    if is_cifar10_model(model):
        from foolbench.data.cifar10 import locate_cifar10

        try:
            cifar10_classes(model)  # labels that are CIFAR-10's, or none of its
            locate_cifar10()
            return "cifar10"
        except FoolbenchError:
            pass
    return "skimage"


def is_cifar10_model(model) -> bool:
    """A model for CIFAR-10: its card names the data set, or, with none named, 10 real classes of
    colour images at most 64 px wide (the size the CIFAR presets draw at)."""
    from foolbench.presets import SMALL_COLOUR_SIDE, drawing_side

    dataset = (model.card.dataset or "").lower()
    if dataset in ("cifar10", "cifar-10"):
        return True
    return (
        not dataset
        and model.spec.channels == 3
        and real_classes(model) == 10
        and drawing_side(model) <= SMALL_COLOUR_SIDE
    )


def real_images(data: str, model) -> dict:
    """images (a sequence of float32 [C,H,W] in [0,1]), labels (model class indices or None), source, names."""
    if data == "mnist":
        from foolbench.data.mnist import load_mnist

        if real_classes(model) != 10:
            raise FoolbenchError(
                f"--data mnist needs a 10-class digit model (or one with an extra '{FOOLING}' class); "
                f"{model.name} has {model.num_classes} classes"
            )
        digits = load_mnist()
        x = digits.test_x.astype(np.float32)[:, None] / np.float32(255.0)
        return {"images": x, "labels": digits.test_y.astype(np.int64), "source": digits.source, "names": None}
    if data == "skimage":
        from foolbench.data.photos import natural_photos

        photos = natural_photos()
        return {
            "images": [p for _, p in photos],
            "labels": None,
            "source": "scikit-image's shipped photos (" + ", ".join(n for n, _ in photos) + ")",
            "names": [n for n, _ in photos],
            "note": "these photos carry no ImageNet labels, so only the overall median is reported; "
            "the right/wrong medians and the accuracy are null",
        }
    from foolbench.data.cifar10 import find_cifar10

    if data == "cifar10" or find_cifar10(data) is not None:
        return cifar10_test(model, None if data == "cifar10" else data)
    from foolbench.data.photos import image_folder

    images, folder_labels, classes = image_folder(data)
    if len(images) == 0:
        raise FoolbenchError(f"{data}: no images found in its class folders")
    index = match_classes(classes, model.labels, data)
    return {
        "images": images,
        "labels": index[folder_labels],
        "source": f"{len(images):,} labelled photos in {Path(data).resolve().name}/ ({len(classes):,} class folders)",
        "names": [images.path(i) for i in range(len(images))] if len(images) <= PER_IMAGE_LIMIT else None,
    }


def cifar10_test(model, given: str | None) -> dict:
    """CIFAR-10's 10,000 test images (the user's copy, `given` or found through $FOOLBENCH_DATA), with
    each image's class in the model's label order."""
    from foolbench.data.cifar10 import load_split

    if real_classes(model) != 10:
        raise FoolbenchError(
            f"--data cifar10 needs a 10-class model (or one with an extra '{FOOLING}' class); "
            f"{model.name} has {model.num_classes} classes"
        )
    test = load_split("test", given)
    index, note = cifar10_classes(model, test.source)
    x = test.x.astype(np.float32) / np.float32(255.0)
    real = {"images": x, "labels": index[test.y], "source": test.describe(), "names": None, "name": "cifar10"}
    return real | ({"note": note} if note else {})


def cifar10_classes(model, where: str = "CIFAR-10") -> tuple[np.ndarray, str | None]:
    """Each CIFAR-10 class's index among the model's classes, by label (case, spaces and underscores
    ignored); a model whose labels name no CIFAR-10 class ("0".."9") is read in CIFAR-10's order,
    with a note that says so. Raises if some labels name CIFAR-10 classes and others do not."""
    from foolbench.data.cifar10 import CLASSES

    labels = real_labels(model.labels)
    if {label_key(label) for label in labels}.isdisjoint(label_key(c) for c in CLASSES):
        return np.arange(len(CLASSES)), (
            "the model's labels name no CIFAR-10 class, so its outputs are read in CIFAR-10's order "
            "(airplane, automobile, bird, ...)"
        )
    return match_classes(list(CLASSES), labels, where), None


def real_classes(model) -> int:
    """How many of the model's classes are real ones: all but a retraining defence's last, `fooling`."""
    return len(real_labels(model.labels))


def top1(model, images: Iterable[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 class, confidence) per image; images of one shape go to the model in batches.

    The confidence is the largest probability of a real class: the max-softmax, except on a model
    with a `fooling` class, whose probability is the model rejecting the image, not believing it."""
    real = real_classes(model)

    def scored(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = model.probs(batch)
        return p.argmax(1), p[:, :real].max(1)

    if isinstance(images, np.ndarray):
        return scored(images)
    tops, confs, batch = [], [], []

    def flush():
        if batch:
            top, conf = scored(np.stack(batch))
            tops.append(top)
            confs.append(conf)
            batch.clear()

    for image in images:
        limit = max(1, min(256, (1 << 24) // max(1, image.size)))
        if batch and (image.shape != batch[0].shape or len(batch) >= limit):
            flush()
        batch.append(np.asarray(image, dtype=np.float32))
    flush()
    if not tops:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(tops), np.concatenate(confs)


def _median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if len(x) else None


# -- the command -------------------------------------------------------------------------------------------
def baseline(
    model_spec: str,
    data: str | None = None,
    runs: Sequence[str | Path] = (),
    out: str | Path = "baseline",
    model_options: ModelOptions | None = None,
) -> dict:
    """Write OUT/baseline.json; everything is computed before anything is written."""
    from foolbench.resolve import load_model

    model = load_model(model_spec, model_options)
    data = data or default_data(model)
    real = real_images(data, model)
    top, conf = top1(model, real["images"])
    if not len(conf):
        raise FoolbenchError(f"{data}: no images found")
    result = {
        "model": model.name,
        "model_path": str(model.path) if model.path else None,
        "data": str(data),
        "data_name": real.get("name")
        or (data if data in ("mnist", "skimage") else Path(data).resolve().name),
        "data_source": real["source"],
        "images": len(conf),
        "labels_known": real["labels"] is not None,
        "confidence": "the model's top-1 softmax probability (max-softmax)"
        if real_classes(model) == model.num_classes
        else f"the largest probability of a real class (max-softmax without the '{FOOLING}' class; an "
        "image the model puts there is wrong, and a fooling image put there is caught)",
        "median_confidence": _median(conf),
        "mean_confidence": float(np.mean(conf)),
        "median_confidence_correct": None,
        "median_confidence_wrong": None,
        "correct": None,
        "wrong": None,
        "accuracy": None,
    }
    if real["labels"] is not None:
        right = top == real["labels"]
        result |= {
            "median_confidence_correct": _median(conf[right]),
            "median_confidence_wrong": _median(conf[~right]),
            "correct": int(right.sum()),
            "wrong": int((~right).sum()),
            "accuracy": float(right.mean()),
        }
    if real.get("note"):
        result["note"] = real["note"]
    result["paper"] = PAPER
    if real["names"] is not None and len(real["names"]) <= PER_IMAGE_LIMIT:
        result["per_image"] = [
            {"image": n, "top1": int(t), "top1_label": model.labels[t], "confidence": float(c)}
            for n, t, c in zip(real["names"], top, conf, strict=True)
        ]
    result["fooling_vs_real"] = fooling_vs_real(model, conf, runs) if runs else None
    write_json(Path(out) / "baseline.json", result)
    return result


def fooling_vs_real(model, real_conf: np.ndarray, run_dirs: Sequence[str | Path]) -> dict:
    """Could the model's own max-softmax tell its real images from the runs' fooling images?"""
    from foolbench import rundir
    from foolbench.experiments.transfer import CHUNK, check_target, class_space

    runs = [rundir.read_champions(d) for d in dict.fromkeys(Path(d).resolve() for d in run_dirs)]
    check_target(model, class_space(runs))
    fooling, seen = [], set()
    for run in runs:
        for start in range(0, len(run.files), CHUNK):
            images = run.images(start, start + CHUNK)
            fooling.append(top1(model, images)[1])
            seen.update(hashlib.sha1(x.tobytes()).hexdigest() for x in images)
    fooling = np.concatenate(fooling)
    distinct = len(seen)
    fpr, threshold = fpr_at_tpr(real_conf, fooling, TPR)
    return {
        "convention": "OpenOOD: real images are the positives, scored by the model's max-softmax; "
        "a fooling image is accepted as real when its max-softmax >= the threshold",
        "runs": [
            {"path": str(r.path), "source": r.source, "attack": r.attack, "images": len(r.files)}
            for r in runs
        ],
        "fooling_images": len(fooling),
        "distinct_fooling_images": distinct,  # one image may hold several classes' cells
        "real_images": len(real_conf),
        "auroc": auroc(real_conf, fooling),
        "fpr_at_95_tpr": fpr,
        "threshold_at_95_tpr": threshold,
        "median_fooling_confidence": float(np.median(fooling)),
        "reading": "AUROC near 1: a confidence threshold would catch the fooling images; near or below 0.5: "
        "the fooling images look at least as confident as real ones and a threshold cannot catch them",
    }
