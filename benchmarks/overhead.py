"""How close does an attack come to the bare model's speed?

For each case, one process times, interleaved in short rounds, (a) the bare onnxruntime session on
a ready batch of the attack's size and (b) MAP-Elites generations (vary + render + quantise +
adapter + archive insert) at that batch size. `ratio` = attack evaluations/s over bare images/s
(the median over rounds of the two measured back to back, so that load from other processes hits
both alike); 1.0 means rendering, mutation and archive cost nothing. Target: >= 0.9. `stages_ms`
splits a generation into its stages (medians over generations), to show where the rest goes.

    python benchmarks/overhead.py [--quick]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from common import load_average, rate, write

from foolbench.images import quantise
from foolbench.models import ModelOptions
from foolbench.presets import load_preset
from foolbench.resolve import load_model
from foolbench.search import Search, make_search

CASES = [
    ("lenet-direct", "lenet-mnist", "mnist-direct", None),
    ("lenet-cppn", "lenet-mnist", "mnist-cppn", None),
    ("lite0-cppn", "efficientnet-lite0", "imagenet-cppn", 40),
]


def bare_session(model, batch: int):
    """The raw onnxruntime call on a prepared input: the ceiling for any attack."""
    import torch

    from foolbench.models.preprocess import preprocess

    h, w = model.spec.size
    x = np.random.default_rng(0).random((batch, model.spec.channels, h, w), dtype=np.float32)
    feed = {model.input_name: preprocess(torch.from_numpy(x), model.spec).numpy()}
    return lambda: model.session.run(None, feed)


def engine_for(model, preset_name: str, batch: int | None):
    preset = load_preset(preset_name, "cpu")
    batch = batch or preset.search["batch"]
    classes = (
        np.array(preset.search["classes"]) if isinstance(preset.search["classes"], list) else np.arange(10)
    )
    tables = {**preset.tables, "search": {**preset.search, "batch": batch, "init": batch}}
    search = make_search(model, preset.method, classes, 0, tables)
    for _ in range(30):  # grow the genomes a little, as in a real run
        search.step()
    return search, batch


def interleaved(bare, step, batch: int, rounds: int, seconds: float) -> tuple[float, float, float]:
    """Bare and attack rates, each the best of `rounds`, and the median of the per-round ratios."""
    bare(), step()  # warm up: first calls allocate and pick kernels
    pairs = [(rate(bare, batch, seconds), rate(step, batch, seconds)) for _ in range(rounds)]
    bares, attacks = zip(*pairs, strict=True)
    return max(bares), max(attacks), float(np.median([a / b for b, a in pairs]))


def stages(search: Search, generations: int) -> dict[str, float]:
    """Median milliseconds of each stage of `generations` real generations, run as `step()` runs them."""
    engine, model = search.engine, search.evaluator.model
    times: dict[str, list[float]] = {
        k: [] for k in ("sample", "vary", "render", "quantise", "score", "insert")
    }
    for _ in range(generations):
        t = [time.perf_counter()]
        parents = engine.archive.sample(engine.batch, engine.rng)
        t.append(time.perf_counter())
        pop = engine.encoding.vary(parents, engine.rng, engine.generation + 1, in_place=True)
        t.append(time.perf_counter())
        images = engine.encoding.render(pop)
        t.append(time.perf_counter())
        images = quantise(images, in_place=True)
        t.append(time.perf_counter())
        fitness = model.probs(images)[:, engine.classes]
        t.append(time.perf_counter())
        engine.tell(pop, fitness)
        t.append(time.perf_counter())
        for key, begin, end in zip(times, t, t[1:], strict=False):
            times[key].append(end - begin)
    return {key: round(float(np.median(v)) * 1e3, 2) for key, v in times.items()}


def main(quick: bool) -> None:
    load_before = load_average()  # the VM is shared: say how busy it was
    results = {}
    for case, model_name, preset, batch in CASES:
        model = load_model(model_name, ModelOptions(card={"crop": "center"}))
        engine, batch = engine_for(model, preset, batch)
        heavy = model_name.startswith("efficientnet")
        rounds, seconds = (3, 0.5) if quick else (5, 2.0 if heavy else 1.0)
        bare, attack, ratio = interleaved(bare_session(model, batch), engine.step, batch, rounds, seconds)
        results[case] = {
            "model": model_name,
            "preset": preset,
            "batch": batch,
            "bare_images_per_second": round(bare, 1),
            "attack_evaluations_per_second": round(attack, 1),
            "ratio": round(ratio, 3),
            "stages_ms": stages(engine, 5 if heavy else 40),
        }
        print(case, results[case], flush=True)
    load = {"load_average_1min": [load_before, load_average()]}
    write("overhead", {**load, "cases": results})


if __name__ == "__main__":
    main("--quick" in sys.argv)
