"""How many hidden nodes do CPPN champions grow, and does the `max_hidden` cap bind?

The paper's CPPNs have no size limit; foolbench's padded genomes hold at most `max_hidden` hidden
nodes (64 by default) and `add_node` does nothing on a full genome. This runs the CPPN presets
(MAP-Elites, batch as the preset) and records, every 100 generations, the champions' hidden-node
counts and the share of cells whose champion is full: parents are drawn uniformly from the cells,
so that share is the chance that a child's add-node mutation is lost to the cap.

mnist-cppn runs the paper's 1001 generations on lenet-mnist (seeds 0-2); imagenet-cppn its CPU
scale (batches of 40, 10 classes, centre crop) on efficientnet-lite0 (seed 0) for 600 generations,
six times the CPU budget: the paper's 5001 generations of 400 over 1000 classes are out of reach of
two cores, and there, where no class saturates, champions keep being replaced and keep growing.
Results: benchmarks/results/cppn_size.json.

    python benchmarks/cppn_size.py [--quick]
"""

from __future__ import annotations

import sys

import numpy as np
from common import write

from foolbench.encodings import make_encoding
from foolbench.models import load_model
from foolbench.presets import load_preset, parse_classes
from foolbench.search.map_elites import MapElites

CASES = [  # (attack, scale, model, seeds, generations: None for the preset's)
    ("mnist-cppn", "full", "lenet-mnist", (0, 1, 2), None),
    ("imagenet-cppn", "cpu", "efficientnet-lite0", (0,), 600),
]
EVERY = 100


def hidden_counts(engine) -> np.ndarray:
    """Alive hidden nodes of each occupied cell's champion (cells sharing a genome count it each)."""
    alive = engine.archive.champions()["alive"]
    return alive[:, -engine.encoding.options["max_hidden"] :].sum(axis=1)


def snapshot(engine) -> dict:
    counts, cap = hidden_counts(engine), engine.encoding.options["max_hidden"]
    return {
        "generation": engine.generation,
        "median": float(np.median(counts)),
        "mean": round(float(counts.mean()), 2),
        "max": int(counts.max()),
        "share_at_cap": round(float((counts >= cap).mean()), 3),
    }


def grow(attack: str, scale: str, model, seed: int, generations: int | None) -> dict:
    preset = load_preset(attack, scale)
    options = dict(preset.encoding)
    encoding = make_encoding(options.pop("type"), **options)
    classes = np.array(parse_classes(preset.search["classes"], model.labels))
    search = preset.search
    engine = MapElites(model, encoding, classes, search["batch"], search["init"], seed)
    last = generations or search["generations"]
    rows = []
    while engine.generation < last:
        engine.step()
        if engine.generation % EVERY == 0 or engine.generation == last:
            rows.append(snapshot(engine))
            print(attack, seed, rows[-1], flush=True)
    return {"max_hidden": encoding.options["max_hidden"], "generations": last, "by_generation": rows}


def main(quick: bool) -> None:
    results = {}
    for attack, scale, name, seeds, generations in CASES:
        crop = load_preset(attack, scale).evaluation.get("crop")
        model = load_model(name, overrides={"crop": crop} if crop else None)
        for seed in seeds[:1] if quick else seeds:
            results[f"{attack}/{scale}/s{seed}"] = {
                "model": name,
                **grow(attack, scale, model, seed, 100 if quick else generations),
            }
    write("cppn_size", {"every": EVERY, "runs": results})


if __name__ == "__main__":
    main("--quick" in sys.argv)
