"""The robust references against the plain LeNet: their card figures, and how the paper's attacks treat them.

    python benchmarks/robust_zoo.py cards [--zoo DIR]       -> results/robust_zoo.json
    python benchmarks/robust_zoo.py runs RUN_DIR ... [--pairs DIR]   -> results/robust_runs.json

`cards` measures, for lenet-mnist and the references lenet-mnist-pgd, lenet-mnist-oe and
lenet-mnist-defended (`--only NAME` measures one and keeps the others' rows), what the robust cards
record: held-out accuracy (and the median top-1 confidence on those digits, what a
fooling confidence is read against), robust accuracy under torchattacks' PGD (L-inf 0.3, 50 steps, 3
restarts, 1,000 held-out digits), the share of non-digit images given > 95 % confidence, and how
many hidden units uniform noise activates. On the defended model, whose 11th class is "fooling",
confidence is the largest digit probability and a digit it puts in "fooling" counts as wrong.
`runs` reads finished run directories (`foolbench run ...`) and gives per run the median best
confidence, the classes at >= 99.99 % and the look-alike share of the champions
(`foolbench.lookalike`, MNIST's training digits as the reference), with the time that takes;
`--pairs DIR` also writes each run's champions above their nearest real digits as a PNG.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import torch
import torch.nn.functional as F
from common import RESULTS, write
from onnx import numpy_helper

from foolbench.data.mnist import load_mnist
from foolbench.fileio import read_json
from foolbench.images import load_png
from foolbench.lookalike import compare, mnist_reference
from foolbench.zoo.lenet import LeNet, accuracy, as_images
from foolbench.zoo.registry import zoo_dir
from foolbench.zoo.robustness import ATTACK, module_probs, noise_figures, robust_accuracy

MODELS = ("lenet-mnist", "lenet-mnist-pgd", "lenet-mnist-oe", "lenet-mnist-defended")


def lenet_from_onnx(path: Path) -> LeNet:
    """The zoo's LeNet-architecture files as torch modules (their weights are the ONNX initialisers)."""
    weights = {i.name: torch.tensor(numpy_helper.to_array(i)) for i in onnx.load(str(path)).graph.initializer}
    module = LeNet(num_classes=len(weights["fc2.bias"])).eval()
    module.load_state_dict({k: v for k, v in weights.items() if "." in k})
    return module


def digit_probs(module: LeNet):
    """The digits' probabilities (a defended model's 11th, "fooling", column left out)."""
    probs = module_probs(module)
    return lambda x: probs(x)[:, :10]


def cards(folder: Path, only: str | None = None) -> None:
    digits = load_mnist()
    images, labels = as_images(digits.test_x), torch.as_tensor(digits.test_y)
    saved = RESULTS / "robust_zoo.json"
    rows = json.loads(saved.read_text())["models"] if only and saved.is_file() else {}
    for name in [only] if only else MODELS:
        module = lenet_from_onnx(folder / f"{name}.onnx")
        probs = digit_probs(module)
        start = time.perf_counter()
        rows[name] = {
            "accuracy": round(accuracy(module, digits.test_x, digits.test_y), 4),
            "median_top1_confidence_on_digits": round(float(np.median(probs(images.numpy()).max(1))), 4),
            "robust_accuracy": round(robust_accuracy(module, images, labels), 4),
            "confident_on_noise": noise_figures(probs),
            "active_hidden_units_on_uniform_noise": active_units(module),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(name, rows[name], flush=True)
    write(
        "robust_zoo", {"attack": {**ATTACK, "library": "torchattacks", "digits": len(labels)}, "models": rows}
    )


@torch.no_grad()
def active_units(module: LeNet) -> float:
    """Mean number of LeNet's 500 hidden ReLU units active on 1,000 uniform-noise images: 0 means the
    output is the last layer's bias for every such image, and the input gradient is exactly 0."""
    noise = torch.from_numpy(np.random.default_rng(0).random((1000, 1, 28, 28), dtype=np.float32))
    features = F.max_pool2d(module.conv2(F.max_pool2d(module.conv1(noise), 2)), 2).flatten(1)
    return round(float((module.fc1(features) > 0).sum(1).float().mean()), 2)


def champions(run_dir: Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    results = pd.read_csv(run_dir / "results.csv")
    files = {int(p.name.split("_", 1)[0]): p for p in (run_dir / "champions").glob("*.png")}
    images = np.stack([load_png(files[c], 1) for c in results["class"]])
    return images, results["class"].to_numpy(), results


def runs(run_dirs: list[Path], pairs: Path | None) -> None:
    start = time.perf_counter()
    ref = mnist_reference()
    reference_seconds = time.perf_counter() - start
    rows, compare_seconds = [], []
    for run_dir in run_dirs:
        summary = read_json(run_dir / "summary.json")
        images, classes, results = champions(run_dir)
        start = time.perf_counter()
        found = compare(images, classes, ref)
        compare_seconds.append(time.perf_counter() - start)
        rows.append(
            {
                "run": run_dir.name,
                "model": summary["model"],
                "attack": summary["attack"],
                "seed": summary["seed"],
                "median_confidence": summary["median_confidence"],
                "classes_at_9999": summary["classes_at_9999"],
                "lookalike_share": found.share,
                "lookalike_classes": [int(c) for c in found.table["class"][found.table["lookalike"]]],
                "fooled_9999_not_lookalike": int(
                    (
                        (results["confidence"].to_numpy() >= 0.9999) & ~found.table["lookalike"].to_numpy()
                    ).sum()
                ),
                "distance_median": float(found.table["distance"].median()),
            }
        )
        print(rows[-1], flush=True)
        if pairs is not None:
            save_pairs(
                images,
                found.nearest,
                found.table["lookalike"].to_numpy(),
                pairs / f"{summary['model']}-{run_dir.name}.png",
            )
    timing = {
        "reference_seconds": round(reference_seconds, 3),
        "compare_seconds_max": round(max(compare_seconds), 4),
    }
    write("robust_runs", {"timing": timing, "runs": rows})


def save_pairs(images: np.ndarray, nearest: np.ndarray, lookalike: np.ndarray, path: Path) -> None:
    """Champions on the top row, their nearest real digits below, a white bar under each look-alike."""
    from PIL import Image

    top = np.concatenate(list(images[:, 0]), axis=1)
    bottom = np.concatenate(list(nearest[:, 0]), axis=1)
    bar = np.repeat(np.repeat(lookalike.astype(np.float32), 28)[None], 3, axis=0)
    grid = np.concatenate([top, bottom, bar])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid * 255).round().astype(np.uint8)).resize(
        (grid.shape[1] * 4, grid.shape[0] * 4)
    ).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cards")
    c.add_argument("--zoo", type=Path, default=None, help="zoo folder (default: zoo_dir())")
    c.add_argument("--only", choices=MODELS, help="measure this model only, keeping the others' saved rows")
    r = sub.add_parser("runs")
    r.add_argument("run_dirs", nargs="+", type=Path)
    r.add_argument("--pairs", type=Path, default=None, help="folder for champion / nearest-digit PNGs")
    args = parser.parse_args()
    if args.command == "cards":
        cards(args.zoo or zoo_dir(), args.only)
    else:
        runs(args.run_dirs, args.pairs)


if __name__ == "__main__":
    main()
