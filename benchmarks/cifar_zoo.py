"""The CIFAR-10 references' card figures, checked against the files and set beside published anchors.

    python benchmarks/cifar_zoo.py [--zoo DIR]   -> results/cifar_zoo.json

For each of airnet-cifar10, -at, -oe and -defended that is built in the zoo folder, the figures its
card records at build time (CIFAR-10 test accuracy, median confidence right and wrong, robust
accuracy under torchattacks' PGD-20 at 8/255 on 1,000 test images, the share of uniform noise,
Hein et al.'s smoothed noise and random CPPNs given > 95 % confidence, training seconds, or the
whole build's for the defence, with its iterations' median confidence of fresh runs), and the
test accuracy measured again here from the ONNX file through foolbench's loader, so that a card
cannot claim what its file does not do. Models not built are listed as such. The anchors are the
published figures the issue names; the README sets ours beside them.

A model rebuilt with another recipe (or not built any more) keeps its earlier figures under
`earlier`, so that what a recipe change lost or won stays on record.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from common import RESULTS, load_average, write

from foolbench.data.cifar10 import load_cifar10
from foolbench.fileio import sha256_file
from foolbench.models.load import load_model
from foolbench.zoo.cifar import as_float
from foolbench.zoo.registry import zoo_dir

MODELS = ("airnet-cifar10", "airnet-cifar10-at", "airnet-cifar10-oe", "airnet-cifar10-defended")
ANCHORS = {
    "hein2019": "Hein et al. (CVPR 2019): a plain CIFAR-10 model gives > 95 % confidence to 99.9 % "
    "of scaled uniform noise, ACET to 3.4 %",
    "good2020": "Bitterwolf et al. (GOOD, NeurIPS 2020): adversarial AUC on uniform noise at eps 0.01 "
    "56.4 plain, 75.7 OE, 98.9 ACET, at about 90 % clean accuracy",
    "wong2020": "Wong et al. (ICLR 2020): fast adversarial training (FGSM with a random start) gives "
    "about 45 % PGD accuracy at 8/255 for a PreAct ResNet-18",
}


def figures(path: Path, cifar) -> dict:
    """The card's figures and the accuracy measured here from the file."""
    model, test = load_model(str(path)), as_float(cifar.test_x).numpy()
    card = model.card  # read from the file's ONNX metadata by the loader
    extra = card.extra
    answers = np.concatenate([model.probs(test[i : i + 1000]).argmax(1) for i in range(0, len(test), 1000)])
    measured = float(np.mean(answers == cifar.test_y))
    text = path.with_suffix(".md").read_text() if path.with_suffix(".md").exists() else ""
    seconds = re.search(r"(?:Training|Build) time (\d+) s", text)  # the defence's: evolution and training
    return {
        "sha256": sha256_file(path),
        "card_accuracy": card.accuracy,
        "measured_accuracy": round(measured, 4),
        "median_confidence_right": extra.get("median_confidence_right"),
        "median_confidence_wrong": extra.get("median_confidence_wrong"),
        "robust_accuracy": extra.get("robust_accuracy"),
        "robust_attack": extra.get("robust_attack"),
        "confident_on_noise": extra.get("confident_on_noise"),
        "training_seconds_wall": int(seconds.group(1)) if seconds else None,
        "final_loss": extra.get("final_loss"),
        "recipe": extra.get("recipe"),
        "defence_iterations": extra.get("iterations"),  # the retraining defence's table, where it is one
    }


def kept_earlier(path: Path, models: dict) -> dict:
    """The previous results' `earlier` builds, plus each previous entry that is no longer the built
    file (another recipe, or gone), by model name, oldest first."""
    if not path.exists():
        return {}
    previous = json.loads(path.read_text())
    earlier = previous.get("earlier", {})
    for name, old in previous["models"].items():
        new = models.get(name, {"built": False})
        if old.get("built") is False:
            continue
        other_file = "sha256" in old and new.get("sha256") != old["sha256"]
        if new.get("built") is False or new.get("recipe") != old.get("recipe") or other_file:
            entry = {**old, "date": old.get("date", previous.get("date"))}
            if entry not in earlier.get(name, []):
                earlier.setdefault(name, []).append(entry)
    return earlier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", type=Path, default=None)
    args = parser.parse_args()
    folder = args.zoo or zoo_dir()
    cifar = load_cifar10()
    models = {}
    for name in MODELS:
        path = folder / f"{name}.onnx"
        models[name] = figures(path, cifar) if path.exists() else {"built": False}
    earlier = kept_earlier(RESULTS / "cifar_zoo.json", models)
    path = write(
        "cifar_zoo",
        {
            "data": cifar.test.describe(),
            "load_average": load_average(),
            "models": models,
            "anchors": ANCHORS,
            "earlier": earlier,
        },
    )
    print(path)


if __name__ == "__main__":
    main()
