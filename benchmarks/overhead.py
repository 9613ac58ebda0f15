"""How close does an attack come to the bare model's speed?

For each case, one process times, side by side and alternating, (a) the bare onnxruntime session
on a ready batch of the attack's size and (b) MAP-Elites generations (vary + render + quantise +
adapter + archive insert) at that batch size. `ratio` = attack evaluations/s over bare images/s;
1.0 means rendering, mutation and archive cost nothing. Target: >= 0.9.

    python benchmarks/overhead.py [--quick]
"""

from __future__ import annotations

import sys

import numpy as np
from common import best_rate, write

from foolbench.encodings import make_encoding
from foolbench.models import load_model
from foolbench.presets import load_preset
from foolbench.search.map_elites import MapElites

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
    options = dict(preset.encoding)
    encoding = make_encoding(options.pop("type"), **options)
    batch = batch or preset.search["batch"]
    classes = (
        np.array(preset.search["classes"]) if isinstance(preset.search["classes"], list) else np.arange(10)
    )
    engine = MapElites(model, encoding, classes, batch, batch, seed=0)
    for _ in range(30):  # grow the genomes a little, as in a real run
        engine.step()
    return engine, batch


def main(quick: bool) -> None:
    results = {}
    for case, model_name, preset, batch in CASES:
        model = load_model(model_name, overrides={"crop": "center"})
        engine, batch = engine_for(model, preset, batch)
        seconds = 0.5 if quick else 2.0
        bare = best_rate(bare_session(model, batch), batch, min_seconds=seconds)
        attack = best_rate(engine.step, batch, min_seconds=seconds)
        results[case] = {
            "model": model_name,
            "preset": preset,
            "batch": batch,
            "bare_images_per_second": round(bare, 1),
            "attack_evaluations_per_second": round(attack, 1),
            "ratio": round(attack / bare, 3),
        }
        print(case, results[case], flush=True)
    write("overhead", {"cases": results})


if __name__ == "__main__":
    main("--quick" in sys.argv)
