"""How fast each black-box search fools ImageNet and MNIST models: the patch search against the paper's
MAP-Elites, as the median of the targets' best confidence against evaluations.

ImageNet: efficientnet-lite0, the cpu scale's 10 classes (imagenet-cppn's), 40,000 evaluations,
one centre crop. Per search and seed: the targets' median at 4k/10k/20k/40k evaluations, the
evaluations until it reaches 50/90/99 %, the final (re-scored) confidences, wall seconds. MNIST:
lenet-mnist, all 10 digits: the evaluations until every digit reaches 99.99 %.

Every number comes from a real run directory (`foolbench run` through `ensure_run`; its
metrics.csv is the curve), so a killed benchmark resumes its runs where they stopped. Results:
benchmarks/results/imagenet_reach.json (entries not re-run are kept), imagenet_reach.png (the
curves) and imagenet_reach-SEARCH-gallery.png (the images of each search's first seed).

    nice -n 10 python benchmarks/imagenet_reach.py [--searches patch map-elites] [--seeds 0 1 2] \\
        [--datasets imagenet mnist] [--runs DIR] [--plot-only | --collect-only]
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from common import RESULTS, load_average, write

from foolbench.runner import RunRequest, ensure_run

NAME = "imagenet_reach"
# search -> (ImageNet preset, MNIST preset): the patch search and the paper's MAP-Elites (CPPN).
SEARCHES = {"patch": ("imagenet-patch", "mnist-patch"), "map-elites": ("imagenet-cppn", "mnist-cppn")}
IMAGENET = {"model": "efficientnet-lite0", "evaluations": 40_000}
MNIST = {"model": "lenet-mnist", "evaluations": {"patch": 4_000, "map-elites": 40_000}}
MARKS = (4_000, 10_000, 20_000, 40_000)
THRESHOLDS = (0.5, 0.9, 0.99)


def run(model: str, attack: str, seed: int, evaluations: int, runs: Path) -> Path:
    out = runs / f"{model}-{attack}-s{seed}"
    req = RunRequest(
        [model], attack, scale="cpu", evaluations=evaluations, seed=seed, out=out, progress=False
    )
    return ensure_run(req)[0]


def curve(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv")[
        ["evaluations", "median_confidence", "classes_at_9999", "seconds"]
    ]


def imagenet_entry(run_dir: Path) -> dict:
    """The targets' median at the marks, evaluations to the thresholds, final confidences, seconds."""
    m = curve(run_dir)
    done = (run_dir / "summary.json").exists()
    results = pd.read_csv(run_dir / "results.csv") if done else None

    def at(n):
        rows = m[m["evaluations"] <= n]
        return (
            None if rows.empty or m["evaluations"].iloc[-1] < n else float(rows["median_confidence"].iloc[-1])
        )

    def first(threshold):
        hit = m[m["median_confidence"] >= threshold]
        return None if hit.empty else int(hit["evaluations"].iloc[0])

    if results is None:  # stopped before its budget: the curve up to its last checkpoint
        return {
            "finished": False,
            "evaluations": int(m["evaluations"].iloc[-1]),
            "median_at": {str(n): at(n) for n in MARKS},
            "evaluations_to": {f"{t:g}": first(t) for t in THRESHOLDS},
            "last_median": float(m["median_confidence"].iloc[-1]),
            "wall_seconds": float(m["seconds"].iloc[-1]),
            "run": str(run_dir),
        }
    conf = results["confidence"].to_numpy()
    return {
        "finished": True,
        "evaluations": int(m["evaluations"].iloc[-1]),
        "median_at": {str(n): at(n) for n in MARKS},
        "evaluations_to": {f"{t:g}": first(t) for t in THRESHOLDS},
        "final_median_rescored": float(np.median(conf)),
        "classes_at_90": int((conf >= 0.9).sum()),
        "classes_at_99": int((conf >= 0.99).sum()),
        "confidences": {str(c): round(float(p), 6) for c, p in zip(results["class"], conf, strict=True)},
        "wall_seconds": float(m["seconds"].iloc[-1]),
        "run": str(run_dir),
    }


def mnist_entry(run_dir: Path) -> dict:
    m = curve(run_dir)
    hit = m[m["classes_at_9999"] == 10]
    return {
        "evaluations": int(m["evaluations"].iloc[-1]),
        "evaluations_to_all_9999": None if hit.empty else int(hit["evaluations"].iloc[0]),
        "wall_seconds": float(m["seconds"].iloc[-1]),
        "run": str(run_dir),
    }


def plot(imagenet: dict, runs: dict[str, list[Path]], path: Path) -> None:
    """Median of the 10 targets against evaluations (log x): seeds thin, their median bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    grid = np.unique(np.geomspace(10, IMAGENET["evaluations"], 400).astype(int))
    for colour, (search, dirs) in zip(("tab:red", "tab:blue"), runs.items(), strict=False):
        lines = []
        for d in dirs:
            m = curve(d)
            ax.plot(m["evaluations"], 100 * m["median_confidence"], color=colour, lw=0.7, alpha=0.5)
            idx = np.searchsorted(m["evaluations"].to_numpy(), grid, side="right") - 1
            ok = (idx >= 0) & (grid <= m["evaluations"].iloc[-1])
            lines.append(np.where(ok, m["median_confidence"].to_numpy()[np.maximum(idx, 0)], np.nan))
        with warnings.catch_warnings():  # before a run's first evaluation its curve is NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            middle = np.nanmedian(np.array(lines), axis=0) if lines else None
        label = f"{search} ({SEARCHES[search][0]}, {len(dirs)} seed{'s' if len(dirs) > 1 else ''})"
        ax.plot(grid, 100 * middle, color=colour, lw=2.2, label=label)
    ax.axhline(88.11, color="grey", ls=":", lw=1)
    ax.text(
        120,
        89.5,
        "the paper: AlexNet, CPPN MAP-Elites after ~2 million evaluations: 88.11 %",
        color="grey",
        fontsize=8,
    )
    ax.set_xscale("log")
    ax.set_xlim(100, IMAGENET["evaluations"] * 1.1)
    ax.set_ylim(0, 100)
    ax.set_xlabel("evaluations (images scored)")
    ax.set_ylabel("median confidence of the 10 targets (%)")
    ax.set_title("efficientnet-lite0, 10 ImageNet classes, one centre crop")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", nargs="+", choices=list(SEARCHES), default=list(SEARCHES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", choices=["imagenet", "mnist"], default=["imagenet", "mnist"])
    parser.add_argument(
        "--runs", type=Path, default=Path("runs/bench/imagenet_reach"), help="folder of its run directories"
    )
    parser.add_argument("--plot-only", action="store_true", help="only redraw the plot from the JSON's runs")
    parser.add_argument(
        "--collect-only",
        action="store_true",
        help="run nothing: record the runs found in --runs (unfinished ones up to their last checkpoint)",
    )
    args = parser.parse_args()
    path = RESULTS / f"{NAME}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    imagenet, mnist = old.get("imagenet", {}), old.get("mnist", {})
    if args.collect_only:
        collect(args, imagenet, mnist)
    elif not args.plot_only:
        for search in args.searches if "mnist" in args.datasets else []:
            mnist_preset = SEARCHES[search][1]
            for seed in args.seeds:
                d = run(MNIST["model"], mnist_preset, seed, MNIST["evaluations"][search], args.runs)
                mnist[f"{search}/s{seed}"] = mnist_entry(d)
                print(search, "mnist", seed, mnist[f"{search}/s{seed}"], flush=True)
        for seed in args.seeds if "imagenet" in args.datasets else []:  # seed by seed: an early
            for search in args.searches:  # stop leaves both searches measured
                d = run(IMAGENET["model"], SEARCHES[search][0], seed, IMAGENET["evaluations"], args.runs)
                imagenet[f"{search}/s{seed}"] = imagenet_entry(d) | {"load_average": load_average()}
                print(search, "imagenet", seed, imagenet[f"{search}/s{seed}"]["median_at"], flush=True)
                write_results(imagenet, mnist)
        write_results(imagenet, mnist)
    runs = {
        s: [Path(e["run"]) for k, e in sorted(imagenet.items()) if k.startswith(f"{s}/")] for s in SEARCHES
    }
    plot(imagenet, {s: d for s, d in runs.items() if d}, RESULTS / f"{NAME}.png")
    for search, dirs in runs.items():  # what the images look like: each search's first seed
        if dirs and (dirs[0] / "gallery.png").exists():
            shutil.copyfile(dirs[0] / "gallery.png", RESULTS / f"{NAME}-{search}-gallery.png")


def collect(args, imagenet: dict, mnist: dict) -> None:
    """The entries of the runs already in --runs (some may still be running elsewhere)."""
    for search in args.searches:
        for seed in args.seeds:
            d = args.runs / f"{IMAGENET['model']}-{SEARCHES[search][0]}-s{seed}"
            if "imagenet" in args.datasets and (d / "metrics.csv").exists():
                key = f"{search}/s{seed}"  # the load as the run's own invocation recorded it, if it did
                load = imagenet.get(key, {}).get("load_average", load_average())
                imagenet[key] = imagenet_entry(d) | {"load_average": load}
            d = args.runs / f"{MNIST['model']}-{SEARCHES[search][1]}-s{seed}"
            if "mnist" in args.datasets and (d / "summary.json").exists():
                mnist[f"{search}/s{seed}"] = mnist_entry(d)
    write_results(imagenet, mnist)


def write_results(imagenet: dict, mnist: dict) -> None:
    write(
        NAME,
        {
            "imagenet_setting": IMAGENET
            | {
                "classes": "the cpu scale's 10 (84, 87, 145, 207, 327, 429, 546, 565, 644, 761)",
                "crop": "center",
            },
            "mnist_setting": MNIST | {"classes": "all 10 digits"},
            "searches": {s: {"imagenet": p[0], "mnist": p[1], "scale": "cpu"} for s, p in SEARCHES.items()},
            "measured": sorted(imagenet),
            "wall_seconds_note": "each run's own clock on 2 cores shared with other work (load_average: at "
            "its end); some runs overlapped, so wall seconds are upper bounds, not speeds",
            "imagenet": dict(sorted(imagenet.items())),
            "mnist": dict(sorted(mnist.items())),
        },
    )


if __name__ == "__main__":
    main()
