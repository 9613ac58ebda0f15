"""How fast each black-box search fools ImageNet and MNIST models: the patch search against the paper's
MAP-Elites, as the median of the targets' best confidence against evaluations.

ImageNet: efficientnet-lite0, one centre crop (the cpu scale), 10 classes at a time. The patch search
(`imagenet-patch`) runs on three class sets, each with seeds 0-2, once with 10,000 and once with
20,000 evaluations (a run plans its squares over its budget, so these are two runs, not one curve):
the cpu scale's classes, protocol v2's (0, 100, ..., 900) and ten drawn at random with seed 0
(`--classes random:10`). The paper's MAP-Elites (`imagenet-cppn`, and `imagenet-direct`) runs on
the cpu classes with 40,000 evaluations; `foolbench paper --scale cpu` makes the same runs, and
`--adopt RUN...` takes such a run (finished or stopped) as this benchmark's once its settings are
checked to be its own. Per run: the targets' median at 4k/10k/20k/40k evaluations, the evaluations until
it reaches 50/90/99 %, the final (re-scored) confidences, wall seconds. MNIST: lenet-mnist, all 10
digits: the evaluations until every digit reaches 99.99 %.

The patch search's settings were chosen on other classes (`TUNING_SETS`, drawn at random among
the classes of none of the sets above): `--tune VARIANT...` runs variants of `imagenet-patch` there,
and the JSON's "tuning" keeps every variant measured, kept or not (their runs are copied to
benchmarks/results/imagenet_reach/tuning/).

Every number comes from a real run directory (`foolbench run` through `ensure_run`; its
metrics.csv is the curve), so a killed benchmark resumes its runs where they stopped. Each reported
run's manifest, summary, results and metrics are copied to benchmarks/results/imagenet_reach/KEY/
(checkpoints and PNGs stay in --runs), and the JSON names those copies, so `--plot-only` redraws
the plot from what is committed. Results: benchmarks/results/imagenet_reach.json (entries not re-run
are kept), imagenet_reach.png (the curves) and imagenet_reach-SEARCH-gallery.png (the images of each
search's first run).

    nice -n 10 python benchmarks/imagenet_reach.py [--searches patch map-elites map-elites-direct] \\
        [--seeds 0 1 2] [--sets cpu v2 random] [--budgets 10000 20000] [--datasets imagenet mnist] \\
        [--runs DIR] [--plot-only]
    python benchmarks/imagenet_reach.py --adopt reports/paper/work/runs/imagenet-cppn-s0 ...
    nice -n 10 python benchmarks/imagenet_reach.py --tune base pool-1000 ... [--seeds 0] [--budgets 10000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from common import RESULTS, load_average, write

from foolbench.errors import FoolbenchError
from foolbench.presets import Preset, load_preset, preset_from_dict
from foolbench.rundir import preset_tables, read_manifest
from foolbench.runner import RunRequest, ensure_run

NAME = "imagenet_reach"
ROOT = RESULTS.parent.parent
COMMITTED = RESULTS / NAME  # each reported run's manifest, summary, results and metrics
MODEL = "efficientnet-lite0"
# search -> (ImageNet preset, MNIST preset or None): the patch search and the paper's MAP-Elites
# (CPPN and, on ImageNet only, direct).
SEARCHES = {
    "patch": ("imagenet-patch", "mnist-patch"),
    "map-elites": ("imagenet-cppn", "mnist-cppn"),
    "map-elites-direct": ("imagenet-direct", None),
}
CLASS_SETS = {  # the sets the patch search is reported on; none was used to choose its settings
    "cpu": "84,87,145,207,327,429,546,565,644,761",  # the cpu scale's (imagenet-cppn's, imagenet-patch's)
    "v2": "0,100,200,300,400,500,600,700,800,900",  # protocol v2's colour suite
    "random": "random:10",  # drawn with seed 0: 16, 40, 75, 175, 268, 306, 507, 631, 813, 842
}
# The sets the settings were tuned on: 20 classes drawn with numpy's default_rng(22) among those in
# none of CLASS_SETS (`tuning_sets`), as two sets of 10.
TUNING_SETS = {
    "tune-a": "17,52,54,149,264,273,322,363,836,849",
    "tune-b": "90,199,331,457,558,649,652,758,931,980",
}
BUDGETS = {"patch": (10_000, 20_000), "map-elites": (40_000,), "map-elites-direct": (40_000,)}
MAP_ELITES_SETS = ("cpu",)  # the paper's search is slow to render: only on the cpu classes
MNIST = {"model": "lenet-mnist", "evaluations": {"patch": 4_000, "map-elites": 40_000}}
MARKS = (4_000, 10_000, 20_000, 40_000)
THRESHOLDS = (0.5, 0.9, 0.99)
# Variants of imagenet-patch measured on TUNING_SETS: [patch] options over the preset's, and the
# question each answers. What each run used is recorded in full with its result.
VARIANTS: dict[str, tuple[dict, str]] = {
    "base": ({}, "the preset as it is"),
    "schedule-40k": ({"schedule": 40_000}, "squares planned over 40,000 evaluations, as before issue 22"),
    "pool-1000": ({"pool": 1000}, "a better start: each class's best of 1,000 random CPPNs, not 200"),
    "pool-50": ({"pool": 50}, "a cheaper start: each class's best of 50 random CPPNs"),
    "pool-100": ({"pool": 100}, "a cheaper start: each class's best of 100 random CPPNs"),
    "squares-2": ({"squares": 2}, "two squares per child"),
    "colours-any": ({"colours": "any"}, "squares of any colour, not only the RGB cube's corners"),
    "colours-copy": ({"colours": "copy"}, "squares copied from elsewhere in the same image"),
    "colours-shift": (
        {"colours": "shift"},
        "squares that move each channel up or down by 64, over what is there",
    ),
    "colours-stripes": ({"colours": "stripes"}, "squares of 1- or 2-pixel stripes of two corners"),
    "colours-learned": (
        {"colours": "learned"},
        "each class learns which corners raise it (Thompson sampling)",
    ),
    "cppn-1000": (
        {"cppn_evaluations": 1000},
        "a (1+1)-ES on each class's CPPN weights for 1,000 evaluations first",
    ),
    "cppn-500": (
        {"cppn_evaluations": 500},
        "a (1+1)-ES on each class's CPPN weights for 500 evaluations first",
    ),
    "cppn-2000": (
        {"cppn_evaluations": 2000},
        "a (1+1)-ES on each class's CPPN weights for 2,000 evaluations first",
    ),
    "cppn-3000": (
        {"cppn_evaluations": 3000},
        "a (1+1)-ES on each class's CPPN weights for 3,000 evaluations first",
    ),
    "restart-40": ({"restart": 40}, "a class whose last 40 children all failed starts its squares over"),
    "sizes-success": (
        {"sizes": "success"},
        "per-class square sizes by the 1/5th success rule, not the schedule",
    ),
    "sizes-random": ({"sizes": "random"}, "square sizes drawn log-uniformly (1 px to p_init) at every step"),
    "done-0.999": ({"done": 0.999}, "classes at 99.9 % get no children while others are below"),
}


def tuning_sets(seed: int = 22) -> list[list[int]]:
    """Twenty classes drawn at random among the ImageNet classes in none of CLASS_SETS, as two sets."""
    from foolbench.presets import parse_classes

    labels = [str(i) for i in range(1000)]
    taken = {c for spec in CLASS_SETS.values() for c in parse_classes(spec, labels)}
    rest = np.array(sorted(set(range(1000)) - taken))
    drawn = np.random.default_rng(seed).choice(rest, 20, replace=False)
    return [sorted(drawn[:10].tolist()), sorted(drawn[10:].tolist())]


def preset(attack: str, evaluations: int, options: dict | None = None) -> Preset:
    """The cpu-scale preset with a budget of `evaluations` (a patch search plans over it) and
    `options` over its [patch] table, checked as a preset file's would be."""
    base = load_preset(attack, "cpu")
    base.search["evaluations"] = evaluations
    tables = preset_tables(base.planned(evaluations).as_dict())
    if options:
        tables["patch"] = tables["patch"] | options
    checked = preset_from_dict(tables, base.source, "full")
    checked.scale = "cpu"
    return checked


def run(key: str, attack: str, classes: str, evaluations: int, seed: int, runs: Path, options=None) -> Path:
    """The run KEY (started, resumed or reused) in `runs`."""
    req = RunRequest(
        [MODEL],
        attack,
        preset=preset(attack, evaluations, options),
        scale="cpu",
        classes=classes,
        seed=seed,
        out=runs / key,
        progress=False,
    )
    return ensure_run(req)[0]


def keep(run_dir: Path, key: str) -> Path:
    """Copy what backs the figures of run KEY (not its checkpoints or PNGs) into the repository."""
    target = COMMITTED / key
    target.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", "summary.json", "results.csv", "metrics.csv"):
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, target / name)
    return target


def curve(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv")[
        ["evaluations", "median_confidence", "classes_at_9999", "seconds"]
    ]


def imagenet_entry(run_dir: Path) -> dict:
    """The targets' median at the marks, evaluations to the thresholds, final confidences, seconds.
    A run stopped before its budget (no results.csv) has its curve only: `finished` is false and
    the marks past where it stopped are None."""
    m = curve(run_dir)
    last = int(m["evaluations"].iloc[-1])

    def at(n):
        rows = m[m["evaluations"] <= n]
        return None if rows.empty or last < n else float(rows["median_confidence"].iloc[-1])

    def first(threshold):
        hit = m[m["median_confidence"] >= threshold]
        return None if hit.empty else int(hit["evaluations"].iloc[0])

    entry = {
        "finished": (run_dir / "results.csv").exists(),
        "evaluations": last,
        "budget": read_manifest(run_dir)["budget"]["evaluations"],
        "median_at": {str(n): at(n) for n in MARKS},
        "evaluations_to": {f"{t:g}": first(t) for t in THRESHOLDS},
        "wall_seconds": float(m["seconds"].iloc[-1]),
        "run": run_dir.resolve().relative_to(ROOT).as_posix(),
    }
    if not entry["finished"]:
        return entry
    results = pd.read_csv(run_dir / "results.csv")
    conf = results["confidence"].to_numpy()
    return entry | {
        "classes": [int(c) for c in results["class"]],
        "final_median_rescored": float(np.median(conf)),
        "classes_at_90": int((conf >= 0.9).sum()),
        "classes_at_99": int((conf >= 0.99).sum()),
        "confidences": {str(c): round(float(p), 6) for c, p in zip(results["class"], conf, strict=True)},
    }


# What may differ between a run made elsewhere and this benchmark's own (`adopt`): where the preset
# file was read from and how often the run saved a checkpoint (a resumed run equals an uninterrupted one).
ADOPT_IGNORES = {("source",), ("search", "checkpoint_every"), ("search", "evaluations")}


def adopt(run_dir: Path, data: dict) -> str:
    """Take a run made by another command (`foolbench paper --scale cpu` makes the same MAP-Elites
    runs) as this benchmark's, finished or stopped, when its settings are the benchmark's: the same
    model file, attack, classes, seed and preset tables, and a budget this benchmark runs. Its
    manifest, metrics (and summary and results, where finished) are copied into the repository."""
    manifest = read_manifest(run_dir)
    search = next((s for s, p in SEARCHES.items() if p[0] == manifest["attack"]), None)
    if search is None:
        raise FoolbenchError(f"{run_dir}: attack {manifest['attack']} is none of {list(SEARCHES)}' presets")
    evaluations = manifest["budget"]["evaluations"]
    if evaluations not in BUDGETS[search]:
        raise FoolbenchError(
            f"{run_dir}: a budget of {evaluations} evaluations; this benchmark runs {BUDGETS[search]}"
        )
    mine, theirs = _flat(preset(SEARCHES[search][0], evaluations).as_dict()), _flat(manifest["preset"])
    differ = [
        ".".join(k)
        for k in mine.keys() | theirs.keys()
        if k not in ADOPT_IGNORES and mine.get(k) != theirs.get(k)
    ]
    cset = next(
        (n for n, spec in CLASS_SETS.items() if spec.split(",") == [str(c) for c in manifest["classes"]]),
        None,
    )
    models = [m["name"] for m in manifest["models"]]
    if differ or cset is None or models != [MODEL]:
        raise FoolbenchError(
            f"{run_dir}: not this benchmark's settings (preset keys that differ: {sorted(differ) or 'none'}; "
            f"classes {manifest['classes']}; models {models})"
        )
    key = f"{search}/{cset}/e{evaluations}/s{manifest['seed']}"
    data["imagenet"][key] = imagenet_entry(keep(run_dir, key.replace("/", "-"))) | {
        "made_by": manifest["command"],
        "settings": f"checked equal to this benchmark's: model {MODEL} (sha256 {manifest['models'][0]['sha256'][:12]}), "
        f"{cset} classes, seed {manifest['seed']}, {evaluations:,} evaluations, preset tables except "
        + ", ".join(".".join(k) for k in sorted(ADOPT_IGNORES)),
    }
    return key


def _flat(tables: dict, prefix: tuple = ()) -> dict[tuple, object]:
    out = {}
    for k, v in tables.items():
        if isinstance(v, dict):
            out |= _flat(v, (*prefix, k))
        else:
            out[(*prefix, k)] = v
    return out


def mnist_entry(run_dir: Path) -> dict:
    m = curve(run_dir)
    hit = m[m["classes_at_9999"] == 10]
    return {
        "evaluations": int(m["evaluations"].iloc[-1]),
        "evaluations_to_all_9999": None if hit.empty else int(hit["evaluations"].iloc[0]),
        "wall_seconds": float(m["seconds"].iloc[-1]),
    }


def tuning_entry(run_dir: Path) -> dict:
    """A tuning run: its final (re-scored) median and confidences, and the [patch] options it ran with."""
    conf = pd.read_csv(run_dir / "results.csv").set_index("class")["confidence"]
    return {
        "median": round(float(conf.median()), 6),
        "classes_at_90": int((conf >= 0.9).sum()),
        "classes_at_99": int((conf >= 0.99).sum()),
        "confidences": {str(c): round(float(p), 6) for c, p in conf.items()},
        "patch": read_manifest(run_dir)["preset"]["patch"],
        "wall_seconds": float(curve(run_dir)["seconds"].iloc[-1]),
        "load_average": load_average(),
        "run": run_dir.resolve().relative_to(ROOT).as_posix(),
    }


def tune(args, data: dict) -> None:
    """Each variant on each tuning set, seed and budget; per variant, the sets' medians side by side."""
    tuning = data.setdefault("tuning", {"runs": {}})
    tuning["sets"] = TUNING_SETS
    tuning["note"] = (
        "variants of imagenet-patch on classes drawn apart from the reported sets; 'median' is the final "
        "median of a run's 10 classes, re-scored from its PNGs"
    )
    for name in args.tune:
        options, question = VARIANTS[name]
        for evaluations in args.budgets:
            for seed in args.seeds:
                for tset in args.tune_sets:
                    classes = TUNING_SETS[tset]
                    key = f"{name}/{tset}/e{evaluations}/s{seed}"
                    d = run(
                        key.replace("/", "-"),
                        "imagenet-patch",
                        classes,
                        evaluations,
                        seed,
                        args.runs / "tuning",
                        options,
                    )
                    kept = keep(d, f"tuning/{key.replace('/', '-')}")
                    tuning["runs"][key] = tuning_entry(kept) | {"variant": name, "question": question}
                    print(key, tuning["runs"][key]["median"], flush=True)
                    write_results(data)


PROBE_EVALUATIONS = 1_000  # after the pool: a tenth of the 10,000-evaluation budget
PROBE_SIGMA = 0.3  # the first mutation's size, in units of each weight's initial standard deviation


def cppn_probe(data: dict, seed: int = 0) -> None:
    """CMA-ES and a (1+1)-ES on the weights of each class's best pool CPPN, after the same pool as
    the patch search: is tuning the CPPN a better use of the first evaluations than squares? Per
    tuning set, the classes' median best confidence after PROBE_EVALUATIONS more, beside the patch
    search's at the same count (the curve of its `base` tuning run)."""
    from foolbench.encodings import fixed_cppn
    from foolbench.images import as_uint8
    from foolbench.models import ModelOptions
    from foolbench.runner import load_run_models
    from foolbench.search import Evaluator
    from foolbench.search.patch import PatchSearch

    base = preset("imagenet-patch", 10_000)
    model = load_run_models([MODEL], base, ModelOptions())
    probe = data.setdefault("tuning", {}).setdefault("cppn_probe", {})
    for tset, spec in TUNING_SETS.items():
        classes = np.array([int(c) for c in spec.split(",")])
        engine = PatchSearch(model, classes, seed, **base.tables["patch"])
        o, score = engine.options, Evaluator(model, engine.encoding, classes)

        def canvases(genome, o=o):  # as PatchSearch.pool draws them
            images = as_uint8(fixed_cppn.render(genome, o["resolution"], o["cppn_resolution"]))
            return {"canvas": np.ascontiguousarray(images[:, : o["channels"]])}

        pool = fixed_cppn.init(
            o["pool"], np.random.default_rng(seed), hidden=o["cppn_hidden"]
        )  # the same draw
        start = score(canvases(pool))
        scale = {
            k: v.std() if v.std() > 0 else 0.5
            for k, v in fixed_cppn.init(1000, np.random.default_rng(1)).items()
        }
        x0 = [np.concatenate([pool[k][i].ravel() / scale[k] for k in pool]) for i in start.argmax(0)]

        def genome(xs, pool=pool, scale=scale):  # flat vectors (in units of the initial std) -> genomes
            out, at = {}, 0
            for k, v in pool.items():
                size = int(np.prod(v.shape[1:]))
                out[k] = np.stack([x[at : at + size] for x in xs]).reshape(len(xs), *v.shape[1:]) * scale[k]
                out[k] = out[k].astype(np.float32)
                at += size
            return out

        entry = {
            "patch_search": patch_median_at(f"base/{tset}/e10000/s{seed}", o["pool"] + PROBE_EVALUATIONS)
        }
        entry["start_median"] = float(np.median(start.max(0)))
        entry["cma-es"] = cma_es(x0, start.max(0), genome, canvases, score, seed)
        entry["one-plus-one-es"] = one_plus_one(x0, start.max(0), genome, canvases, score, seed)
        probe[f"{tset}/s{seed}"] = entry
        print(tset, {k: v if not isinstance(v, dict) else v["median"] for k, v in entry.items()}, flush=True)
        write_results(data)


def patch_median_at(key: str, evaluations: int) -> float:
    """The median of tuning run KEY's classes after `evaluations`, from its committed curve."""
    m = curve(COMMITTED / "tuning" / key.replace("/", "-"))
    return float(m[m["evaluations"] <= evaluations]["median_confidence"].iloc[-1])


def cma_es(x0, best, genome, canvases, score, seed: int) -> dict:
    """One CMA-ES per class (its default population), asked and scored together, on -log p."""
    import cma

    opts = {"seed": seed + 1, "verbose": -9}
    strategies = [cma.CMAEvolutionStrategy(x, PROBE_SIGMA, opts) for x in x0]
    best, spent = best.copy(), 0
    while spent < PROBE_EVALUATIONS:
        asked = [es.ask() for es in strategies]
        fitness = score(canvases(genome([x for xs in asked for x in xs])))
        at = 0
        for c, (es, xs) in enumerate(zip(strategies, asked, strict=True)):
            own = fitness[at : at + len(xs), c]
            es.tell(xs, list(-np.log(np.maximum(own, 1e-30))))
            best[c] = max(best[c], own.max())
            at += len(xs)
        spent += len(fitness)
    return {"evaluations": spent, "median": float(np.median(best)), "best": best.round(6).tolist()}


def one_plus_one(x0, best, genome, canvases, score, seed: int) -> dict:
    """A (1+1)-ES per class with the 1/5th success rule: what CMA-ES comes to at a few hundred evaluations."""
    rng = np.random.default_rng(seed + 1)
    x, sigma = [v.copy() for v in x0], np.full(len(x0), PROBE_SIGMA)
    best, spent = best.copy(), 0
    while spent < PROBE_EVALUATIONS:
        kids = [v + s * rng.standard_normal(v.shape) for v, s in zip(x, sigma, strict=True)]
        own = score(canvases(genome(kids))).diagonal()
        won = own > best
        for c in np.flatnonzero(won):
            x[c] = kids[c]
        best = np.where(won, own, best)
        sigma *= np.where(won, 1.5, 1.5**-0.25)
        spent += len(kids)
    return {"evaluations": spent, "median": float(np.median(best)), "best": best.round(6).tolist()}


def plot(imagenet: dict, path: Path) -> None:
    """Median of the 10 targets against evaluations (log x): one panel per class set measured, each
    search's runs of its largest budget there thin (dashed where a run stopped early), their median bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [s for s in CLASS_SETS if any(k.split("/")[1] == s for k in imagenet)]
    fig, axes = plt.subplots(1, len(sets), figsize=(max(4.6 * len(sets), 7), 4.6), sharey=True, squeeze=False)
    top = max(MARKS)
    grid = np.unique(np.geomspace(10, top, 400).astype(int))
    colours = ("tab:red", "tab:blue", "tab:green")
    for ax, cset in zip(axes[0], sets, strict=True):
        for colour, search in zip(colours, SEARCHES, strict=True):
            budgets = [
                b for b in BUDGETS[search] if any(k.startswith(f"{search}/{cset}/e{b}/") for k in imagenet)
            ]
            if not budgets:
                continue
            budget = max(budgets)
            entries = [e for k, e in sorted(imagenet.items()) if k.startswith(f"{search}/{cset}/e{budget}/")]
            stopped = sum(not e["finished"] for e in entries)
            runs = f"{len(entries)} seed{'s' if len(entries) > 1 else ''}" + (
                f", {stopped} stopped early, dashed" if stopped else ""
            )
            label = f"{SEARCHES[search][0]}, {budget:,} evaluations ({runs})"
            lines = []
            for e in entries:
                m = curve(ROOT / e["run"])
                style = "-" if e["finished"] else "--"
                alone = label if len(entries) == 1 else None  # one run: its own line is the legend's
                ax.plot(
                    m["evaluations"],
                    100 * m["median_confidence"],
                    style,
                    color=colour,
                    lw=0.8 if not alone else 1.8,
                    alpha=0.6 if not alone else 1,
                    label=alone,
                )
                idx = np.searchsorted(m["evaluations"].to_numpy(), grid, side="right") - 1
                ok = (idx >= 0) & (grid <= m["evaluations"].iloc[-1])
                lines.append(np.where(ok, m["median_confidence"].to_numpy()[np.maximum(idx, 0)], np.nan))
            if len(entries) > 1:
                with warnings.catch_warnings():  # before a run's first evaluation its curve is NaN
                    warnings.simplefilter("ignore", RuntimeWarning)
                    middle = np.nanmedian(np.array(lines), axis=0)
                ax.plot(grid, 100 * middle, color=colour, lw=2.2, label=label)
        ax.axhline(88.11, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlim(100, top * 1.1)
        ax.set_ylim(0, 100)
        ax.set_xlabel("evaluations (images scored)")
        ax.set_title(f"{cset} classes", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", fontsize=7)
    axes[0][0].set_ylabel("median confidence of the 10 targets (%)")
    axes[0][0].text(120, 84.5, "the paper (AlexNet, ~2M evaluations): 88.11 %", color="grey", fontsize=7)
    fig.suptitle("efficientnet-lite0, 10 ImageNet classes per set, one centre crop", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", nargs="+", choices=list(SEARCHES), default=list(SEARCHES))
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2 (with --tune: 0)")
    parser.add_argument("--sets", nargs="+", choices=list(CLASS_SETS), default=list(CLASS_SETS))
    parser.add_argument("--datasets", nargs="+", choices=["imagenet", "mnist"], default=["imagenet", "mnist"])
    parser.add_argument(
        "--runs", type=Path, default=Path("runs/bench/imagenet_reach"), help="folder of its run directories"
    )
    parser.add_argument(
        "--plot-only", action="store_true", help="only redraw the plot from the committed runs"
    )
    parser.add_argument(
        "--tune", nargs="+", choices=list(VARIANTS), help="measure these variants on the tuning sets"
    )
    parser.add_argument(
        "--budgets", nargs="+", type=int, help="only runs of these budgets (with --tune: default 10000)"
    )
    parser.add_argument("--tune-sets", nargs="+", choices=list(TUNING_SETS), default=list(TUNING_SETS))
    parser.add_argument("--probe-cppn", action="store_true", help="CMA-ES on CPPN weights against squares")
    parser.add_argument(
        "--adopt",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="take these run directories (e.g. foolbench paper's MAP-Elites runs) as this benchmark's, "
        "when their settings are its own",
    )
    args = parser.parse_args()
    path = RESULTS / f"{NAME}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("imagenet", {})
    data.setdefault("mnist", {})
    if args.probe_cppn:
        return cppn_probe(data)
    if args.tune:
        args.seeds, args.budgets = args.seeds or [0], args.budgets or [10_000]
        return tune(args, data)
    if args.adopt:
        for run_dir in args.adopt:
            print(adopt(run_dir, data), "<-", run_dir, flush=True)
        write_results(data)
    args.seeds = args.seeds or [0, 1, 2]
    if not (args.plot_only or args.adopt):
        measure(args, data)
    plot(data["imagenet"], RESULTS / f"{NAME}.png")


def measure(args, data: dict) -> None:
    imagenet, mnist = data["imagenet"], data["mnist"]
    for search in args.searches if "mnist" in args.datasets else []:
        if SEARCHES[search][1] is None:
            continue
        for seed in args.seeds:
            key = f"{MNIST['model']}-{SEARCHES[search][1]}-s{seed}"
            req = RunRequest(
                [MNIST["model"]],
                SEARCHES[search][1],
                scale="cpu",
                evaluations=MNIST["evaluations"][search],
                seed=seed,
                out=args.runs / key,
                progress=False,
            )
            mnist[f"{search}/s{seed}"] = mnist_entry(ensure_run(req)[0])
            print(search, "mnist", seed, mnist[f"{search}/s{seed}"], flush=True)
    for seed in args.seeds if "imagenet" in args.datasets else []:  # seed by seed: an early stop
        for cset in args.sets:  # leaves every search and set measured
            for search in args.searches:
                if search != "patch" and cset not in MAP_ELITES_SETS:
                    continue
                for evaluations in [b for b in BUDGETS[search] if b in (args.budgets or [b])]:
                    key = f"{search}/{cset}/e{evaluations}/s{seed}"
                    name = key.replace("/", "-")
                    d = run(name, SEARCHES[search][0], CLASS_SETS[cset], evaluations, seed, args.runs)
                    imagenet[key] = imagenet_entry(keep(d, name)) | {"load_average": load_average()}
                    print(key, imagenet[key]["median_at"], flush=True)
                    write_results(data)
                    if (seed, cset, evaluations) == (0, "cpu", max(BUDGETS[search])) and (
                        d / "gallery.png"
                    ).exists():
                        shutil.copyfile(d / "gallery.png", RESULTS / f"{NAME}-{search}-gallery.png")
    write_results(data)


def write_results(data: dict) -> None:
    """The JSON, with what is on disk now under what this process measured: entries another process
    wrote since this one started (a tuning job beside a report run) are kept."""
    path = RESULTS / f"{NAME}.json"
    disk = json.loads(path.read_text()) if path.exists() else {}
    imagenet = disk.get("imagenet", {}) | data["imagenet"]
    tuning = disk.get("tuning", {}) | data.get("tuning", {})
    for part in ("runs", "cppn_probe"):
        tuning[part] = disk.get("tuning", {}).get(part, {}) | data.get("tuning", {}).get(part, {})
    write(
        NAME,
        {
            "imagenet_setting": {
                "model": MODEL,
                "scale": "cpu",
                "crop": "center",
                "class_sets": CLASS_SETS,
                "budgets": BUDGETS,
                "map_elites_sets": list(MAP_ELITES_SETS),
            },
            "mnist_setting": MNIST | {"classes": "all 10 digits"},
            "searches": {s: {"imagenet": p[0], "mnist": p[1], "scale": "cpu"} for s, p in SEARCHES.items()},
            "measured": sorted(imagenet),
            "wall_seconds_note": "each run's own clock on 2 cores shared with other work (load_average: at "
            "its end); some runs overlapped, so wall seconds are upper bounds, not speeds",
            "imagenet": dict(sorted(imagenet.items())),
            "mnist": dict(sorted((disk.get("mnist", {}) | data["mnist"]).items())),
            "earlier": disk.get("earlier", data.get("earlier", {})),
            "tuning": tuning,
        },
    )


if __name__ == "__main__":
    try:
        main()
    except FoolbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
