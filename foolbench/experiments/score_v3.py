"""Protocol v3's row: how far fooling images get relative to the model's own confidence on real images.

The model first classifies the labelled real images of its suite (`RealImages`): its accuracy gates
the ranking, and its confidences on the images it gets right are the yardstick. Each run of the
protocol saved its champions at the suite's query counts (`runner.write_snapshot`); at each of them
a champion scores the share of those real confidences at or below its own (`protocol.fooled_share`),
or 0 where the suite's judge recognises its class in it (`judges`). A run's curve over queries is
the mean over classes of the best share reached so far (`protocol.rank_curve`), and a seed's score
is the area under the strongest attack's curve at each query count (`protocol.curve_area`).

Everything a user can get wrong here (no real images, images that name no class of the model, a
model that returns NaN for every image) is found by `real_images` before the first run starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from foolbench import rundir
from foolbench.errors import FoolbenchError
from foolbench.fileio import atomic_path, write_json
from foolbench.judges import Judge, make_judge
from foolbench.protocol import Protocol, Suite, curve_area, curve_at, fooled_share, rank_curve

LOAD_MODEL_HINT = (
    "score the model's PyTorch form instead: foolbench.score(foolbench.load_model(module, ...)) "
    "(README: From Python)"
)


@dataclass
class RealImages:
    """The model on its suite's labelled real images: the yardstick of protocol v3."""

    data: str  # the registry key, or the folder the user gave
    source: str
    labels: np.ndarray  # the model's class of each image
    top1: np.ndarray
    confidence: np.ndarray  # float64, per image (the largest probability of a real class)
    images: object = field(repr=False, default=None)

    @property
    def correct(self) -> np.ndarray:
        return (self.top1 == self.labels) & np.isfinite(self.confidence)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    @property
    def yardstick(self) -> np.ndarray:
        """The confidences a fooling image is ranked among: those of the correctly classified images."""
        return self.confidence[self.correct]


def real_images(model, suite: Suite, data: str | Path | None) -> tuple[RealImages | None, str | None]:
    """The model's top-1 on the suite's real images, or (None, why) where the suite has none for it.

    `data` (the user's `--data DIR`) replaces the suite's default; a folder that cannot be read or
    that names no class of the model is a one-line error, as is a model that returns NaN or infinity
    for every image. A suite without default images, or whose default images do not fit the model
    (another set of classes), gives (None, the reason): the row is then listed, not ranked."""
    from foolbench.data.labelled import labelled
    from foolbench.experiments.baseline import top1

    if data is not None:
        found = given_images(suite, data)
        index = class_index(found, model, str(data))
    elif suite.data is None:
        return None, f"suite {suite.name} has no labelled real images; pass --data DIR (one folder per class)"
    else:
        try:
            found = labelled(suite.data)
            index = class_index(found, model, suite.data)
        except FoolbenchError as e:
            hint = "" if "--data" in str(e) else "; pass --data DIR (labelled images, one folder per class)"
            return None, f"no real images for it ({e}){hint}"
    top, conf = top1(model, found.images)
    conf = np.asarray(conf, dtype=np.float64)
    if not np.isfinite(conf).any():
        raise FoolbenchError(
            f"{model.name} returns NaN or infinity for every one of the {len(conf)} real images "
            f"({found.key}); nothing can be scored on it: check the model's export"
        )
    real = RealImages(
        str(data) if data is not None else found.key, found.source, index[found.labels], top, conf
    )
    real.images = found.images
    return real, None


def class_index(found, model, where: str) -> np.ndarray:
    """Each of the real images' classes as the model's class index: by label, or by index for folders
    named 0..K-1; CIFAR-10 test as the baseline reads it (a 10-class model whose labels name no
    CIFAR-10 class, "0".."9" or none, in CIFAR-10's order)."""
    from foolbench.experiments.baseline import cifar10_classes, match_classes, real_classes
    from foolbench.models.card import real_labels

    if found.key == "cifar10-test" and real_classes(model) == 10:
        return cifar10_classes(model, where)[0]
    return match_classes(found.classes, real_labels(model.labels), where)


def given_images(suite: Suite, data: str | Path):
    """The user's `--data`: where the suite reads CIFAR-10 test and DATA holds a CIFAR-10 copy (any
    layout `data.cifar10` reads, as the other commands' --data takes it), its test split; else a folder
    of labelled images, one sub-folder per class."""
    from foolbench.data.cifar10 import find_cifar10
    from foolbench.data.labelled import image_folder, labelled

    if suite.data == "cifar10-test" and find_cifar10(data) is not None:
        return labelled("cifar10-test", data)
    return image_folder(data)


def suite_judge(suite: Suite, real: RealImages | None, model, side: int) -> tuple[Judge | None, str]:
    """The suite's judge built over its real images, and the text a row shows for it ("none" and
    why where there is none)."""
    if suite.judge is None:
        return None, "none"
    if real is None:
        return None, "none (no real images)"
    images = real.images
    shape = tuple(np.shape(images[0]))
    if shape[1:] != (side, side):
        return None, f"none (the {suite.judge} judge needs champions the size of the real images, {shape})"
    if shape[0] != model.spec.channels:  # a folder of PNGs reads as RGB: compare as the model sees them
        import torch

        from foolbench.models.preprocess import match_channels

        images = [
            match_channels(torch.from_numpy(np.asarray(x))[None], model.spec.channels)[0].numpy()
            for x in images
        ]
    try:
        judge = make_judge(suite.judge, images, real.labels, real.data)
    except FoolbenchError as e:
        return None, f"none ({e})"
    return judge, judge.name


def gradient_masked(model, real: RealImages | None) -> str | None:
    """Why the gradient attacks cannot work on the model where its gradient is exactly zero for every
    pixel of its first few correctly classified real images (a rounding of its input does that, and
    leaves 8-bit images as they are), else None. A masked model would face the black-box attacks only
    and look harder to fool than it is; it is listed, not ranked. Checked once, before the runs.
    (Real images, not noise: a model trained to be flat away from its data, as outlier exposure is,
    may have no gradient on noise at all, which is what it was trained for.)"""
    import torch

    if real is None or not real.correct.any():
        return None
    module = model.torch_module("logits").eval()
    device = next((t.device for t in (*module.parameters(), *module.buffers())), torch.device("cpu"))
    for i in np.flatnonzero(real.correct)[:4]:
        image = torch.from_numpy(np.asarray(real.images[i], dtype=np.float32)[None]).to(device)
        image.requires_grad_(True)
        (grad,) = torch.autograd.grad(module(image)[0, real.labels[i]], image)
        if bool((grad != 0).any()):
            return None
    return (
        "its gradient is zero for every pixel of its real images (masked, e.g. by rounding its input), "
        "so the gradient attacks cannot move; score the model without the masking"
    )


# -- one run ----------------------------------------------------------------------------------------
def run_curve(run_dir: Path, real: RealImages, judge: Judge | None, channels: int) -> dict:
    """One run read at its snapshots: the queries, each class's fooled share (0 where recognised), the
    classes recognised and the target confidences at the end."""
    queries, shares, confidences, recognised = [], [], [], []
    for snap in rundir.read_snapshots(run_dir):
        conf = snap.results["confidence"].to_numpy(dtype=np.float64)
        seen = np.zeros(len(conf), dtype=bool)
        if judge is not None:
            seen = judge.recognised(snap.images(channels), snap.results["class"].to_numpy())
        queries.append(snap.queries)
        shares.append([float(x) for x in np.where(seen, 0.0, fooled_share(conf, real.yardstick))])
        confidences.append([float(x) for x in conf])
        recognised.append([bool(x) for x in seen])
    return {
        "queries": queries,
        "shares": shares,  # [snapshot][class]
        "confidence": confidences,  # the champions' target-class confidence, [snapshot][class]
        "recognised": recognised,  # [snapshot][class]: the judge saw the class in the champion
    }


# -- the row ----------------------------------------------------------------------------------------
def v3_cells(
    proto: Protocol,
    suite: Suite,
    runs: dict[str, list[Path]],
    real: RealImages | None,
    why_not_real: str | None,
    judge: Judge | None,
    judge_text: str,
    skipped: dict[str, str],
    channels: int,
    out: Path | None = None,
    masked: str | None = None,
) -> dict:
    """The row's v3 cells from the runs' snapshots (written to OUT/v3.json with every curve)."""
    from foolbench.experiments.baseline import auroc, fpr_at_tpr

    start, end = suite.queries[0], suite.queries[-1]
    missing = [a.name for a in suite.attacks if a.name not in runs]
    cells: dict = {
        "fooling_score": None,
        "fooling_score_low": None,
        "fooling_score_high": None,
        "attacks_scored": "all" if not missing else "without " + ", ".join(missing),
        "ranked": "false",
        "not_ranked_why": None,
        "accuracy": real.accuracy if real is not None else None,
        "real_images": len(real.labels) if real is not None else None,
        "real_median": float(np.median(real.yardstick)) if real is not None and real.correct.any() else None,
        "real_data": real.data if real is not None else None,
        "judge": judge_text,
        "fooled_at_end": None,
        "fpr_at_95_tpr": None,
    }
    reasons = []
    if real is None:
        reasons.append(why_not_real)
    elif not real.correct.any():
        reasons.append(f"it classifies none of the {len(real.labels)} real images ({real.data}) correctly")
    elif real.accuracy < suite.min_accuracy:
        reasons.append(
            f"accuracy {real.accuracy:.1%} on the real images ({real.data}) is below suite {suite.name}'s "
            f"floor of {suite.min_accuracy:.0%}: it is not a working classifier of the task"
        )
    if missing:
        why = "; ".join(dict.fromkeys(skipped.get(a, "did not run") for a in missing))
        reasons.append(f"{', '.join(missing)} could not run ({why}); {LOAD_MODEL_HINT}")
    if masked:
        reasons.append(masked)

    record: dict = {"start": start, "end": end, "runs": {}}
    for attack in suite.attacks:  # every attack's cells, None (shown "–") where not measured
        summaries = [rundir.read_summary(d) for d in runs.get(attack.name, [])]
        cells |= dict.fromkeys((f"{attack.name}_{k}" for k in ("score", "end", "recognised")), None)
        cells[f"{attack.name}_median"] = _mean([s["median_confidence"] for s in summaries])
    if real is not None and real.correct.any():
        per_seed: dict[int, list] = {}
        all_final, ends, fprs = [], {}, {}
        for attack in suite.attacks:
            dirs = runs.get(attack.name, [])
            curves = [run_curve(d, real, judge, channels) for d in dirs]
            record["runs"][attack.name] = {str(d): c for d, c in zip(dirs, curves, strict=True)}
            areas, at_end, fpr = [], [], []
            for i, c in enumerate(curves):
                curve = rank_curve(c["queries"], c["shares"])
                per_seed.setdefault(i, []).append(curve)
                areas.append(curve_area([curve], start, end))
                at_end.append(curve_at([curve], end))
                final = np.where(c["recognised"][-1], -np.inf, c["confidence"][-1])
                fpr.append(fpr_at_tpr(real.yardstick, final)[0])
                all_final.extend(final[np.isfinite(final)])
            ends[attack.name], fprs[attack.name] = at_end, fpr
            cells |= {
                f"{attack.name}_score": _mean(areas),
                f"{attack.name}_end": _mean(at_end),
                f"{attack.name}_recognised": _mean([sum(c["recognised"][-1]) for c in curves])
                if judge is not None and curves
                else None,
            }
        seeds = [curve_area(curves, start, end) for curves in per_seed.values()]
        if seeds:
            cells |= {
                "fooling_score": float(np.mean(seeds)),
                "fooling_score_low": float(np.min(seeds)),
                "fooling_score_high": float(np.max(seeds)),
                "fooled_at_end": float(np.mean([curve_at(c, end) for c in per_seed.values()])),
                "fpr_at_95_tpr": float(np.mean(np.max([fprs[a] for a in fprs if fprs[a]], axis=0))),
            }
        if all_final:
            cells["fooling_auroc"] = auroc(real.yardstick, all_final)
    cells["baseline_median"] = (
        float(np.median(real.confidence[np.isfinite(real.confidence)])) if real else None
    )
    cells.setdefault("fooling_auroc", None)
    if cells["fooling_score"] is None and not reasons:
        reasons.append("no run was scored")
    cells["not_ranked_why"] = "; ".join(reasons) or None
    cells["ranked"] = "false" if reasons else "true"
    if out is not None:
        write_json(out / "v3.json", record | {"row": {k: v for k, v in cells.items()}})
        if real is not None:
            write_real(out / "real.csv", real)
    return cells


def write_real(path: Path, real: RealImages) -> None:
    """Each real image's class, the model's top-1 and confidence: the yardstick, re-readable."""
    table = pd.DataFrame({"label": real.labels, "top1": real.top1, "confidence": real.confidence})
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else None
