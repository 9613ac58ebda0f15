"""The retraining defence on MNIST: a fresh LeNet trained on the digits plus the fooling images,
which form an 11th class holding as many examples as an average digit class (the paper's constant
class share). Used by `foolbench.experiments.defence`, which runs the loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from foolbench.images import as_uint8


def balanced_indices(available: int, wanted: int, seed: int) -> np.ndarray:
    """`wanted` indices into `available` items: each repeated evenly, the remainder (or all, when
    there are more than wanted) drawn without replacement from a seeded generator."""
    rng = np.random.default_rng(seed)
    whole, rest = divmod(wanted, available)
    return np.concatenate(
        [np.tile(np.arange(available), whole), np.sort(rng.choice(available, rest, replace=False))]
    )


class MnistDefence:
    """Retrain the paper's LeNet from scratch on the digits plus the fooling images (class 10)."""

    CLEAN = (
        "held-out MNIST accuracy: top-1 over all classes equals the digit (the fooling class counts as wrong)"
    )
    SHARE = (
        "the fooling class gets as many training examples as an average digit class: the distinct fooling "
        "images repeated evenly, or a seeded subsample when there are more"
    )

    def __init__(self, data, seed: int, epochs: int | None = None):
        from foolbench.data.mnist import load_mnist

        self.digits = load_mnist(data)
        self.seed = seed
        self.epochs = epochs  # None: the zoo recipe's

    def facts(self) -> dict:
        """What defence.json says about how this defence measures and trains (nothing to add here)."""
        return {}

    def clean_accuracy(self, model) -> float:
        x = self.digits.test_x[:, None].astype(np.float32) / np.float32(255.0)
        return float(np.mean(model.probs(x).argmax(1) == self.digits.test_y))

    def retrain(self, images: np.ndarray, labels: list[str], stem: str, facts: dict, path: Path) -> None:
        """Train LeNet(len(labels)) on the digits and `images` (the last label's class) into `path`."""
        from foolbench.zoo.export import export_onnx
        from foolbench.zoo.lenet import LeNet, accuracy, as_images, seeded, train_classifier
        from foolbench.zoo.mnist_models import ARCHITECTURES, CHECK_IMAGES, mnist_card

        d = self.digits
        digits, fooling_label = labels[:-1], labels[-1]
        per_class = round(len(d.train_y) / len(digits))
        pick = balanced_indices(len(images), per_class, self.seed + facts["iteration"])
        fooling = as_uint8(images[pick, 0])
        x = np.concatenate([d.train_x, fooling])
        y = np.concatenate([d.train_y, np.full(len(fooling), len(digits), dtype=np.int64)])
        _, epochs, batch_size, _ = ARCHITECTURES["lenet-mnist"]
        epochs = self.epochs or epochs
        module = seeded(lambda: LeNet(num_classes=len(labels)), self.seed)
        train = train_classifier(module, x, y, seed=self.seed, epochs=epochs, batch_size=batch_size)
        train.pop("train_seconds")  # kept out of the card: same seed, same bytes
        held_out = accuracy(module, d.test_x, d.test_y)
        card = mnist_card(
            name=stem,
            labels=list(labels),
            accuracy=round(held_out, 4),
            notes=f"Caffe's LeNet retrained from scratch with an extra '{fooling_label}' class (the retraining "
            f"defence of Nguyen, Yosinski & Clune, iteration {facts['iteration']}). Grey pixels in [0, 1].",
            extra={**facts, "fooling_training_examples": len(fooling), "training_data": d.source, **train},
        )
        export_onnx(module, path, card, as_images(d.test_x[:CHECK_IMAGES]))
