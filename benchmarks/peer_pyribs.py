"""foolbench vs pyribs on the same task: fool the same LeNet with the same evaluation budget.

pyribs is set up as in its tutorial `tutorials/fooling_mnist.ipynb`: a GridArchive with one cell
per digit, one GaussianEmitter (sigma 0.5, starting from grey, batch 30); objective = probability
of the predicted digit, measure = the predicted digit. foolbench runs its `mnist-direct` preset
(the paper's direct encoding: uniform init, polynomial mutation, multi-cell MAP-Elites, batch 200).
Both score through the same onnxruntime adapter, each image quantised to 8 bits, so the only
difference is the search. Columns: classes at >= 99.99%, sum of the ten best confidences, wall
seconds. Results: benchmarks/results/peer_pyribs.json.

    pip install ribs; python benchmarks/peer_pyribs.py [--quick]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from common import write

from foolbench.encodings import make_encoding
from foolbench.images import quantise
from foolbench.resolve import load_model
from foolbench.search import Evaluator, Search
from foolbench.search.map_elites import MapElites

BUDGET = 40_200  # the paper's 200 generations of 200, plus the initial 200


def run_foolbench(model, budget: int, seed: int) -> tuple[np.ndarray, float]:
    encoding = make_encoding("direct", resolution=28, channels=1)
    engine = MapElites(encoding, np.arange(10), 200, 200, seed)
    search = Search(engine, Evaluator(model, encoding, engine.classes))
    t0 = time.perf_counter()
    while search.evaluations < budget:
        search.step()
    return engine.fitness, time.perf_counter() - t0


def run_pyribs(model, budget: int, seed: int) -> tuple[np.ndarray, float]:
    from ribs.archives import GridArchive
    from ribs.emitters import GaussianEmitter
    from ribs.schedulers import Scheduler

    archive = GridArchive(solution_dim=784, dims=[10], ranges=[(0, 10)], seed=seed)
    emitter = GaussianEmitter(
        archive, sigma=0.5, x0=np.full(784, 0.5), bounds=[(0, 1)] * 784, batch_size=30, seed=seed
    )
    scheduler = Scheduler(archive, [emitter])
    best = np.zeros(10)
    evaluations, t0 = 0, time.perf_counter()
    while evaluations < budget:
        solutions = scheduler.ask()
        probs = model.probs(quantise(solutions.reshape(-1, 1, 28, 28).astype(np.float32)))
        predicted = probs.argmax(1)
        objective = probs[np.arange(len(probs)), predicted]
        scheduler.tell(objective, predicted[:, None] + 0.5)
        np.maximum.at(best, predicted, objective)
        evaluations += len(solutions)
    return best, time.perf_counter() - t0


def columns(best: np.ndarray, seconds: float) -> dict:
    return {
        "classes_at_9999": int((best >= 0.9999).sum()),
        "classes_at_99": int((best >= 0.99).sum()),
        "sum_best_confidence": round(float(best.sum()), 4),
        "median_best_confidence": round(float(np.median(best)), 6),
        "wall_seconds": round(seconds, 2),
    }


def main(quick: bool) -> None:
    model = load_model("lenet-mnist")
    budget = 8_000 if quick else BUDGET
    seeds = [0] if quick else [0, 1, 2]
    rows = []
    for seed in seeds:
        ours = columns(*run_foolbench(model, budget, seed))
        theirs = columns(*run_pyribs(model, budget, seed))
        rows.append({"seed": seed, "foolbench": ours, "pyribs": theirs})
        print(rows[-1], flush=True)
    write("peer_pyribs", {"model": "lenet-mnist", "evaluations": budget, "runs": rows})


if __name__ == "__main__":
    main("--quick" in sys.argv)
