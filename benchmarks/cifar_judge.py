"""Does the proposed CIFAR-10 look-alike judge hold up? Measured before any run relies on it.

    python benchmarks/cifar_judge.py [--features zoo/airnet-cifar10-at.onnx] [RUN_DIR ...]
        -> results/cifar_judge-<features>.json (and results/cifar_judge_pairs/<features>/<run>.png)

The judge (`foolbench.lookalike` with `embed=onnx_features(model)`): CIFAR-10's 10,000 test images as
the reference, compared in the feature space of a robust model (the input of its last linear layer);
a champion is a look-alike of its class when its nearest test image of the class is within the
class's 99th percentile of leave-one-out nearest-neighbour distances, and its nearest test image of
any class is of its class. For it to hold up, it has to accept most real images of a class (1,000
training images, never in the reference), few real images asked about another class, and few images
that are no class at all (uniform noise, smoothed noise, random CPPNs, each asked about a random
class); given run directories it also writes each run's champions above their nearest real image,
so that a reader can judge the judge. Needs CIFAR-10 (`$FOOLBENCH_DATA/cifar10`) and the features
model built (`foolbench zoo build airnet-cifar10-at`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import RESULTS, load_average, write

from foolbench.data.cifar10 import load_cifar10
from foolbench.lookalike import compare, onnx_features, reference
from foolbench.report.gallery import gallery
from foolbench.rundir import read_champions
from foolbench.zoo.outliers import KINDS, outlier_images
from foolbench.zoo.registry import zoo_dir

HELD_OUT = 1000
NOISE = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--features", type=Path, default=None)
    args = parser.parse_args()
    features = args.features or zoo_dir() / "airnet-cifar10-at.onnx"
    cifar = load_cifar10()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    ref = reference(cifar.test_x / np.float32(255), cifar.test_y, embed=onnx_features(features))
    seconds = time.perf_counter() - t0
    pick = np.sort(rng.permutation(len(cifar.train_y))[:HELD_OUT])
    real, truth = cifar.train_x[pick] / np.float32(255), cifar.train_y[pick]
    other = (truth + rng.integers(1, 10, len(truth))) % 10
    result = {
        "features": features.name,
        "reference": cifar.test.describe(),
        "reference_seconds": round(seconds, 1),
        "typical": ref.typical,
        "threshold": ref.threshold,
        "held_out_own_class": compare(real, truth, ref).share,
        "held_out_other_class": compare(real, other, ref).share,
        "no_class": {
            kind: compare(
                outlier_images(kind, NOISE, rng, (3, 32, 32)), rng.integers(0, 10, NOISE), ref
            ).share
            for kind in KINDS
        },
        "runs": [],
        "load_average": load_average(),
    }
    for run_dir in args.runs:
        champions = read_champions(run_dir)
        images = champions.images()
        found = compare(images, champions.classes, ref)
        pairs = RESULTS / "cifar_judge_pairs" / features.stem / f"{run_dir.name}.png"
        pairs.parent.mkdir(parents=True, exist_ok=True)
        captions = [
            f"{c}\n{'alike' if v else 'not alike'}"
            for c, v in zip(champions.classes, found.table["lookalike"], strict=True)
        ]
        gallery([*images, *found.nearest], captions + [f"d {d:.2f}" for d in found.table["distance"]], pairs)
        result["runs"].append(
            {"run": "/".join(run_dir.parts[-3:]), "lookalike_share": found.share, "records": found.records()}
        )
    write(f"cifar_judge-{features.stem}", result)


if __name__ == "__main__":
    main()
