"""What the MNIST presets reach on lenet-mnist, seeds 0-4: the issue's and the paper's targets.

For mnist-direct and mnist-cppn (paper settings, batch 200) it records, per seed, the archive at
generation 200 (median, classes at >= 99% and >= 99.99%, the weakest class) and the first
generation at which the median, and then every class, reached 99.99% (searching up to 400).
Results: benchmarks/results/reach.json (or reach-NAME.json with `--name`). `--model` takes any
model spec, e.g. a LeNet trained with another recipe, to compare how fast each is fooled.

    python benchmarks/reach.py [--model lenet-mnist] [--name NAME]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import write

from foolbench.presets import load_preset
from foolbench.resolve import load_model
from foolbench.search import make_search

SEEDS = range(5)
LIMIT = 400


def reach(model, attack: str, seed: int) -> dict:
    preset = load_preset(attack, "cpu")
    engine = make_search(model, preset.method, np.arange(10), seed, preset.tables)
    first, at200 = {}, {}
    while engine.generation < LIMIT:
        engine.step()
        f = engine.engine.fitness
        if engine.generation == 200:
            at200 = {
                "median": float(np.median(f)),
                "classes_at_9999": int((f >= 0.9999).sum()),
                "classes_at_99": int((f >= 0.99).sum()),
                "weakest": float(f.min()),
                "classes_below_9999": [int(c) for c in np.flatnonzero(f < 0.9999)],
            }
        if "median_9999" not in first and np.median(f) >= 0.9999:
            first["median_9999"] = engine.generation
        if "all_9999" not in first and (f >= 0.9999).all():
            first["all_9999"] = engine.generation
        if engine.generation >= 200 and "all_9999" in first:
            break
    return {"at_generation_200": at200, "first_generation": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet-mnist", help="model spec (zoo name or file)")
    parser.add_argument("--name", default=None, help="results/reach-NAME.json instead of reach.json")
    args = parser.parse_args()
    model = load_model(args.model)
    results = {}
    for attack in ("mnist-direct", "mnist-cppn"):
        for seed in SEEDS:
            results[f"{attack}/s{seed}"] = reach(model, attack, seed)
            print(attack, seed, results[f"{attack}/s{seed}"], flush=True)
    payload = {"model": args.model, "accuracy": model.card.accuracy, "batch": 200, "search_limit": LIMIT}
    write(f"reach-{args.name}" if args.name else "reach", {**payload, "runs": results})


if __name__ == "__main__":
    main()
