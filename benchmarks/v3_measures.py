"""Protocol v3's measure against the alternatives tried, on the same runs of the grey zoo models.

For each model scored under v3 (`foolbench score --model NAME --protocol v3`, runs under
runs/score/NAME-SHA/v3/), this reads the row's curves (v3.json: every run's champions' confidences
and the judge's verdicts at each query count) and the real digits' confidences (real.csv), and
scores each seed in several ways:

  v3            the protocol: share of correctly classified real digits at or below the champion's
                confidence (ties count as fooled), best share so far, strongest attack at each
                count, mean over log-queries
  ties-half     the same with ties counted half (OpenOOD's AUROC convention)
  end           the strongest attack's share at the last query count only (no curve)
  no-judge      v3 without the look-alike judge
  margin        v3 with the champions and real digits re-scored as a logit margin in float64
                (z_target - the largest other z), so no probability can round to 1.0
  worst-area    v2's way of combining: each attack's own area, then the largest
  v2            protocol v2's rules on the same runs (nines of the median over log-evaluations)

Writes benchmarks/results/v3_measures.json: per model and measure, each seed's score, their mean and
range, and, for the reference models, whether the ordering the grey suite is checked against (PGD
below OE and the retraining defence, those below the plain LeNets) holds beyond seed noise.

    nice -n 10 python benchmarks/v3_measures.py [--models lenet-mnist,...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, write  # noqa: E402

GREY = ["lenet-mnist", "lenet-mnist-s1", "lenet-mnist-s2", "mlp-mnist", "lenet-mnist-oe",
        "lenet-mnist-defended", "lenet-mnist-pgd"]  # fmt: skip
PLAIN = ["lenet-mnist", "lenet-mnist-s1", "lenet-mnist-s2"]
DEFENDED = ["lenet-mnist-oe", "lenet-mnist-defended"]
ROBUST = ["lenet-mnist-pgd"]


def work_of(name: str) -> Path:
    from foolbench.experiments.score import work_dir
    from foolbench.fileio import sha256_file
    from foolbench.resolve import resolve_path

    return work_dir(name, sha256_file(resolve_path(name)), "v3")


def ties_half(conf, real) -> np.ndarray:
    real = np.sort(np.asarray(real, dtype=np.float64))
    below = np.searchsorted(real, conf, side="left")
    equal = np.searchsorted(real, conf, side="right") - below
    return (below + 0.5 * equal) / len(real)


def margins(model, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """z_class - max other z, in float64, from the model's raw outputs (log-probabilities where the
    model outputs probabilities)."""
    raw = model._raw(images).astype(np.float64)
    if model.output_kind == "probs":
        raw = np.log(np.maximum(raw, np.finfo(np.float64).tiny))
    own = raw[np.arange(len(classes)), classes]
    other = raw.copy()
    other[np.arange(len(classes)), classes] = -np.inf
    return own - other.max(axis=1)


def seed_scores(name: str) -> dict:
    """Every measure's score per seed for one model, from its v3 work folder."""
    from foolbench import rundir
    from foolbench.data.labelled import labelled
    from foolbench.experiments.score import run_v2
    from foolbench.fileio import read_json
    from foolbench.protocol import curve_area, curve_at, fooled_share, rank_curve
    from foolbench.resolve import load_model

    work = work_of(name)
    record = read_json(work / "v3.json")
    real = pd.read_csv(work / "real.csv")
    right = (real["top1"] == real["label"]).to_numpy()
    yardstick = real["confidence"].to_numpy()[right]
    start, end = record["start"], record["end"]
    model = load_model(name)
    digits = labelled("mnist-heldout")
    real_margin = margins(model, digits.images, digits.labels)[right]

    def shares(kind: str, c: dict, s: int, snap) -> np.ndarray:
        conf = np.asarray(c["confidence"][s])
        if kind == "ties-half":
            v = ties_half(conf, yardstick)
        elif kind == "margin":
            images = snap.images(model.spec.channels)
            v = fooled_share(margins(model, images, snap.results["class"].to_numpy()), real_margin)
        else:
            v = fooled_share(conf, yardstick)
        return v if kind == "no-judge" else np.where(c["recognised"][s], 0.0, v)

    measures = {}
    for kind in ("v3", "ties-half", "end", "no-judge", "margin", "worst-area"):
        per_seed: dict[int, list] = {}
        for runs in record["runs"].values():
            for i, (run_dir, c) in enumerate(runs.items()):
                snaps = rundir.read_snapshots(Path(run_dir))
                rows = [shares(kind, c, s, snap) for s, snap in enumerate(snaps)]
                per_seed.setdefault(i, []).append(rank_curve(c["queries"], rows))
        if kind == "end":
            measures[kind] = [curve_at(curves, end) for curves in per_seed.values()]
        elif kind == "worst-area":
            measures[kind] = [
                max(curve_area([c], start, end) for c in curves) for curves in per_seed.values()
            ]
        else:
            measures[kind] = [curve_area(curves, start, end) for curves in per_seed.values()]
    seeds = len(next(iter(record["runs"].values())))
    measures["v2"] = [
        max(run_v2(Path(list(runs)[i]), True)["score"] for runs in record["runs"].values())
        for i in range(seeds)
    ]
    return {
        k: {"seeds": v, "mean": float(np.mean(v)), "low": float(min(v)), "high": float(max(v))}
        for k, v in measures.items()
    }


def ordering(results: dict) -> dict:
    """Per measure: whether PGD < each defence < each plain LeNet, every step beyond seed noise."""
    steps = [(r, d) for r in ROBUST for d in DEFENDED] + [(d, p) for d in DEFENDED for p in PLAIN]
    steps = [(a, b) for a, b in steps if a in results and b in results]
    out = {}
    for measure in next(iter(results.values()), {}):
        out[measure] = {
            f"{a} < {b}": results[a][measure]["high"] < results[b][measure]["low"] for a, b in steps
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(GREY))
    args = parser.parse_args()
    load0 = load_average()
    results = {}
    for name in args.models.split(","):
        if not (work_of(name) / "v3.json").is_file():
            print(f"{name}: not scored under v3 yet, left out")
            continue
        results[name] = seed_scores(name)
        print(name, {k: round(v["mean"], 3) for k, v in results[name].items()})
    write(
        "v3_measures",
        {
            "command": "nice -n 10 python benchmarks/v3_measures.py",
            "load_average": [load0, load_average()],
            "measures": results,
            "ordering_beyond_seed_noise": ordering(results),
        },
    )
    print(json.dumps(ordering(results), indent=1))


if __name__ == "__main__":
    main()
