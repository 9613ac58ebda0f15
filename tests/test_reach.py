"""What the paper's MNIST figures promise, on the zoo's LeNet, through `foolbench run` as a user runs it.

The paper's Fig. 4: after 200 generations of direct-encoding evolution every digit has an image at
>= 99.99%; the CPPN encoding reaches a median of 99.99% by 200 generations (here much earlier).
One seed each keeps this to a few seconds; benchmarks/reach.py measures seeds 0-4.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.mark.parametrize("attack", ["mnist-direct", "mnist-cppn"])
def test_lenet_is_fooled_at_9999_in_every_class_within_200_generations(lenet, tmp_path, foolbench, attack):
    out = tmp_path / attack
    args = ("--model", lenet, "--attack", attack, "--scale", "cpu", "--seed", "0", "--out", out)
    proc = foolbench("run", *args, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generations"] == 200 and summary["evaluations"] == 200 * 201
    results = pd.read_csv(out / "results.csv")  # confidences of the saved 8-bit PNGs
    assert summary["classes_at_9999"] == 10, results[["label", "confidence"]].to_string()
    assert (results["confidence"] >= 0.9999).all() and summary["median_confidence"] >= 0.9999
