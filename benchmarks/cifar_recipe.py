"""What one epoch of the CIFAR-10 zoo recipes costs on this CPU: the measurement that chose AirNet's width.

    python benchmarks/cifar_recipe.py            -> results/cifar_recipe.json

For AirNet (airbench94's network) at full width (64/256/256) and at half and quarter width, and for
each recipe of the zoo at the chosen width (plain, FGSM from a random start, outlier exposure with
its outlier images drawn), the CPU seconds of training steps of 1,024 images on one thread, as the
zoo builds run, and from them the CPU seconds of one epoch of 50,000 images. CPU seconds, not wall
seconds: the machine is shared, and on an idle core one is the other. Random images stand in for
CIFAR-10 (a step costs the same on any pixels).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch
from common import load_average, write

from foolbench.zoo.cifar import WIDTHS, Cifar10Task
from foolbench.zoo.robust import RECIPES
from foolbench.zoo.training import _epoch

TRAIN = 50_000
STEPS = 2  # measured steps, after one unmeasured


class _Data:
    """Stands in for CIFAR-10: 1,024 random images (whitening needs some)."""

    def __init__(self, n: int):
        rng = np.random.default_rng(0)
        self.train_x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        self.train_y = rng.integers(0, 10, n)


def cpu_seconds_per_step(name: str, widths) -> float:
    """CPU seconds of one training step of the recipe `name` on 1,024 images (one thread)."""
    recipe = dataclasses.replace(RECIPES[name].recipe, epochs=1)
    data = _Data(recipe.batch_size * (STEPS + 1))
    task = Cifar10Task(data, widths)
    module = task.network(0)
    images = torch.from_numpy(data.train_x).float() / 255
    labels = torch.from_numpy(data.train_y)
    optimiser = task.optimiser(module, recipe, STEPS + 1)
    module.train()
    first = recipe.batch_size
    _epoch(task, module, optimiser, images[:first], labels[:first], recipe, 0, 0, STEPS + 1)
    start = time.process_time()
    _epoch(task, module, optimiser, images[first:], labels[first:], recipe, 0, 1, STEPS + 1)
    return (time.process_time() - start) / STEPS


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    cases = [("airnet-cifar10", w) for w in ((64, 256, 256), WIDTHS, (16, 64, 64))]
    cases += [(name, WIDTHS) for name in ("airnet-cifar10-at", "airnet-cifar10-oe")]
    for name, widths in cases:
        step = cpu_seconds_per_step(name, widths)
        steps = math.ceil(TRAIN / RECIPES[name].recipe.batch_size)
        row = {
            "recipe": name,
            "method": RECIPES[name].recipe.method,
            "widths": list(widths),
            "cpu_seconds_per_step_of_1024": round(step, 2),
            "cpu_seconds_per_epoch": round(step * steps),
            "cpu_minutes_per_build": round(step * steps * RECIPES[name].recipe.epochs / 60, 1),
            "load_average": load_average(),
        }
        print(row, flush=True)
        rows.append(row)
    write("cifar_recipe", {"threads": 1, "rows": rows})


if __name__ == "__main__":
    main()
