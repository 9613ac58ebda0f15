"""Transfer: do the champions evolved against one model fool another?

The paper (Sec. 3.4) scores the images evolved on one network with a second network trained with a
different seed (often fooled too) or a different architecture (AlexNet to GoogLeNet: about 20%).
`transfer` does this for saved runs: it re-scores each run's champion PNGs — the 8-bit files on disk,
never the genomes — on every target model and reports, per (source model, target model):

  median_confidence   median target probability of the champion's class
  fraction_at_99      share of champions the target gives >= 99% for their class
  fraction_at_50      share at >= 50%
  top1_match          share whose target top-1 is the champion's class

`transfer-seeds` and `transfer-arch` are the paper's two cases as ready-made experiments: they evolve
the runs (normal run directories under DIR/runs/) and then write the transfer matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from foolbench import rundir
from foolbench.errors import FoolbenchError
from foolbench.fileio import atomic_path, write_json
from foolbench.models.load import ModelOptions
from foolbench.rundir import Champions
from foolbench.text import percent, safe_name
from foolbench.transfer_stats import STATISTICS, heatmap

CHUNK = 256  # champion PNGs held in memory at once (ImageNet runs have 1000 of 256x256)


@dataclass
class ClassSpace:
    """The classes shared by a set of runs: their count and every label any of them names."""

    num_classes: int
    labels: dict[int, str] = field(default_factory=dict)
    first: str = ""


def class_space(runs: Sequence[Champions]) -> ClassSpace:
    """The runs' common class space; runs whose label lists disagree cannot be compared."""
    if not runs:
        raise FoolbenchError("no runs given; pass one or more run directories")
    first = runs[0]
    space = ClassSpace(first.num_classes, dict(first.labels), str(first.path))
    for run in runs[1:]:
        if run.num_classes != space.num_classes:
            raise FoolbenchError(
                f"runs from different class spaces: {space.first} has {space.num_classes} classes, "
                f"{run.path} has {run.num_classes}; transfer only runs against models of one label set"
            )
        for c, label in run.labels.items():
            if space.labels.setdefault(c, label) != label:
                raise FoolbenchError(
                    f"runs from different class spaces: class {c} is '{space.labels[c]}' in {space.first} "
                    f"but '{label}' in {run.path}; transfer only runs against models of one label set"
                )
    return space


def check_target(model, space: ClassSpace) -> None:
    """A target must have the runs' classes, with the same labels."""
    if model.num_classes != space.num_classes:
        raise FoolbenchError(
            f"target {model.name} has {model.num_classes} classes but the runs have {space.num_classes}; "
            "transfer needs models of the runs' label set"
        )
    for c, label in sorted(space.labels.items()):
        if model.labels[c] != label:
            raise FoolbenchError(
                f"target {model.name} calls class {c} '{model.labels[c]}' but the runs call it '{label}'; "
                "pass a model of the runs' label set (or give it the same labels with --labels)"
            )


# -- scoring -------------------------------------------------------------------------------------------
def load_targets(
    specs: Sequence[str], runs: Sequence[Champions], options: ModelOptions | None = None
) -> list:
    """Load each target once. Unless the options say otherwise, they score with the runs' crop."""
    from foolbench.resolve import load_model

    options = options or ModelOptions()
    crops = {r.crop for r in runs}
    crop = crops.pop() if "crop" not in options.card and len(crops) == 1 and None not in crops else None
    models, seen = [], {}
    for spec in dict.fromkeys(specs):
        model = load_model(spec, options).with_options(crop=crop)
        if model.name in seen:
            raise FoolbenchError(
                f"two targets are both named '{model.name}' ({seen[model.name]} and {spec}); "
                "rename one of the files so the matrices can tell them apart"
            )
        seen[model.name] = spec
        models.append(model)
    return models


def score_transfer(runs: Sequence[Champions], targets: Sequence, chunk: int = CHUNK) -> pd.DataFrame:
    """One row per (champion, target): the target's confidence for the champion's class and its top-1."""
    rows = []
    for i, run in enumerate(runs):
        n = len(run.files)
        conf = {m.name: np.empty(n) for m in targets}
        top = {m.name: np.empty(n, dtype=np.int64) for m in targets}
        top_conf = {m.name: np.empty(n) for m in targets}
        for start in range(0, n, chunk):  # PNGs are read once per chunk and scored by every target
            images = run.images(start, start + chunk)
            classes = run.classes[start : start + chunk]
            idx = np.arange(len(classes))
            for model in targets:
                probs = model.probs(images)
                t = probs.argmax(1)
                conf[model.name][start : start + len(classes)] = probs[idx, classes]
                top[model.name][start : start + len(classes)] = t
                top_conf[model.name][start : start + len(classes)] = probs[idx, t]
        for model in targets:
            rows.append(
                pd.DataFrame(
                    {
                        "run": str(run.path),
                        "run_index": i,
                        "attack": run.attack,
                        "source": run.source,
                        "target": model.name,
                        "file": run.files,
                        "class": run.classes,
                        "label": [run.labels[c] for c in run.classes],
                        "source_confidence": run.confidences,
                        "confidence": conf[model.name],
                        "top1": top[model.name],
                        "top1_confidence": top_conf[model.name],
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def summarise(images: pd.DataFrame) -> pd.DataFrame:
    """The long-form table: one row per (source, target) with the four statistics."""
    rows = []
    for (source, target), g in images.groupby(["source", "target"], sort=False):
        conf = g["confidence"].to_numpy()
        rows.append(
            {
                "source": source,
                "target": target,
                "median_confidence": float(np.median(conf)),
                "fraction_at_99": float(np.mean(conf >= 0.99)),
                "fraction_at_50": float(np.mean(conf >= 0.5)),
                "top1_match": float(np.mean(g["top1"].to_numpy() == g["class"].to_numpy())),
                "n_images": len(g),
                "runs": int(g["run_index"].nunique()),
            }
        )
    return pd.DataFrame(rows)


def _order(names: Sequence[str], first: Sequence[str]) -> list[str]:
    """Sources in the targets' order (a square matrix reads along its diagonal), the rest after."""
    names = list(dict.fromkeys(names))
    return [n for n in first if n in names] + [n for n in names if n not in first]


def matrix(table: pd.DataFrame, statistic: str, targets: Sequence[str]) -> pd.DataFrame:
    sources = _order(table["source"], targets)
    m = table.pivot(index="source", columns="target", values=statistic)
    return m.reindex(index=sources, columns=list(targets))


# -- writing -------------------------------------------------------------------------------------------
def write_transfer(images: pd.DataFrame, out: str | Path, targets: Sequence[str], meta: dict) -> pd.DataFrame:
    """transfer.csv, images.csv, transfer.json, and per statistic a matrix CSV and a heatmap PNG."""
    out = Path(out)
    table = summarise(images)
    with atomic_path(out / "transfer.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "images.csv") as tmp:
        images.drop(columns="run_index").to_csv(tmp, index=False)
    for statistic, title in STATISTICS.items():
        m = matrix(table, statistic, targets)
        with atomic_path(out / f"matrix_{statistic}.csv") as tmp:
            m.to_csv(tmp, index_label="source")
        counts = table.groupby("source", sort=False)["n_images"].max()
        rows = [f"{src}\n({counts[src]} images)" for src in m.index]
        heatmap(m.set_axis(rows, axis=0), title, out / f"heatmap_{statistic}.png")
    write_json(out / "transfer.json", {**meta, "statistics": STATISTICS, "table": table.to_dict("records")})
    return table


def checked_scores(runs: list, target_specs: Sequence[str], model_options: ModelOptions | None):
    """Every run's champions scored on every target, after checking they share one class space."""
    space = class_space(runs)
    targets = load_targets(target_specs, runs, model_options)
    for model in targets:
        check_target(model, space)
    return score_transfer(runs, targets), targets


def transfer(
    run_dirs: Sequence[str | Path],
    target_specs: Sequence[str],
    out: str | Path = "transfer",
    model_options: ModelOptions | None = None,
) -> pd.DataFrame:
    """Score every run's champion PNGs on every target; everything is checked before anything is written."""
    if not target_specs:
        raise FoolbenchError("no target model given; pass one or more --model")
    runs = [rundir.read_champions(d) for d in dict.fromkeys(Path(d).resolve() for d in run_dirs)]
    images, targets = checked_scores(runs, target_specs, model_options)
    names = [m.name for m in targets]
    meta = {
        "runs": [
            {"path": str(r.path), "source": r.source, "attack": r.attack, "images": len(r.files)}
            for r in runs
        ],
        "targets": [{"name": m.name, "path": str(m.path) if m.path else None} for m in targets],
        "crop": sorted({m.spec.crop for m in targets}),
    }
    return write_transfer(images, out, names, meta)


def format_table(table: pd.DataFrame) -> str:
    shown = table.copy()
    for col in STATISTICS:
        shown[col] = shown[col].map(percent)
    return shown.to_string(index=False)


# -- the paper's two transfer experiments ----------------------------------------------------------------
@dataclass(frozen=True)
class Group:
    """Models of one label set, each evolved against with each attack, then transferred among each other."""

    name: str
    models: tuple[str, ...]
    attacks: tuple[str, ...]
    imagenet: bool = False  # run only with --imagenet


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    paper: str
    groups: tuple[Group, ...]


MNIST_ATTACKS = ("mnist-cppn", "mnist-direct")
IMAGENET_MODELS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
EXPERIMENTS = {
    "transfer-seeds": Experiment(
        "transfer-seeds",
        "LeNet and two seed twins (same recipe, different initialisation and data order)",
        "Sec. 3.4: images evolved on one network often fool another trained with a different seed",
        (Group("mnist", ("lenet-mnist", "lenet-mnist-s1", "lenet-mnist-s2"), MNIST_ATTACKS),),
    ),
    "transfer-arch": Experiment(
        "transfer-arch",
        "Different architectures: LeNet vs an MLP on MNIST; EfficientNet-Lite0, -Lite1 and -Lite2 on "
        "ImageNet, with the paper's CPPN MAP-Elites and the patch search (beyond the paper)",
        "Sec. 3.4: across architectures (AlexNet to GoogLeNet) about 20% of the images transfer",
        (
            Group("mnist", ("lenet-mnist", "mlp-mnist"), MNIST_ATTACKS),
            Group("imagenet", IMAGENET_MODELS, ("imagenet-cppn", "imagenet-patch"), imagenet=True),
        ),
    ),
}


def _stem(spec: str) -> str:
    path = Path(spec)
    return safe_name(path.stem if path.suffix else spec)


def experiment_requests(
    name: str,
    out: str | Path,
    *,
    seed: int | None = None,
    generations: int | None = None,
    scale: str = "cpu",
    imagenet: bool = False,
    models: dict[str, Sequence[str]] | None = None,
    model_options: ModelOptions | None = None,
    progress: bool = True,
    evaluations: dict[str, int] | None = None,
    reuse: dict[tuple[str, str], Path] | None = None,
) -> dict[str, list]:
    """The runs `run_experiment` makes or reuses, by group: one RunRequest per (model, attack), in
    its order, the run directory of each in `reuse` or under OUT/runs/GROUP/. A caller may make them
    first (side by side: `foolbench paper --jobs`); the experiment then finds them finished.

    `models` replaces a group's models (by group name); `evaluations` sets a group's budget per run
    (by group name; default: the presets'). `reuse` names run directories made elsewhere for some
    (model, attack)."""
    from foolbench.runner import RunRequest

    if name not in EXPERIMENTS:
        raise FoolbenchError(f"unknown experiment '{name}'; known: {', '.join(EXPERIMENTS)}")
    exp, out, models = EXPERIMENTS[name], Path(out), dict(models or {})
    groups = [g for g in exp.groups if imagenet or not g.imagenet]
    unknown = set(models) - {g.name for g in groups}
    if unknown:
        raise FoolbenchError(
            f"{name} has no group {', '.join(sorted(unknown))}; its groups: {[g.name for g in groups]}"
        )
    planned = {}
    for group in groups:
        specs = list(models.get(group.name, group.models))
        if len(specs) < 2:
            raise FoolbenchError(f"{name}: group {group.name} needs at least two models to transfer between")
        planned[group.name] = [
            RunRequest(
                models=[spec],
                attack=attack,
                scale=scale,
                generations=generations,
                evaluations=(evaluations or {}).get(group.name),
                seed=seed,
                out=(reuse or {}).get((spec, attack))
                or out / "runs" / group.name / f"{_stem(spec)}-{attack}",
                model_options=model_options or ModelOptions(),
                progress=progress,
            )
            for spec in specs
            for attack in group.attacks
        ]
    return planned


def run_experiment(name: str, out: str | Path, *, log=print, **settings) -> dict[str, pd.DataFrame]:
    """Evolve every (model, attack) of the experiment into DIR/runs/, then write DIR/transfer/<group>/.

    `settings` are `experiment_requests`'s (seed, generations, scale, imagenet, models,
    model_options, progress, evaluations, reuse). A run directory named in `reuse` is used where it
    holds the run this experiment asks for (a different run there is an error), so a run is not
    evolved twice. A run directory that already holds a finished run with the same settings is
    reused and an unfinished one is resumed, so a killed experiment continues. Returns the pooled
    transfer table of each group.
    """
    from foolbench.runner import ensure_run, run_state

    planned = experiment_requests(name, out, **settings)
    exp, out = EXPERIMENTS[name], Path(out)
    groups = [g for g in exp.groups if g.name in planned]
    tables, record = {}, {"experiment": exp.name, "description": exp.description, "paper": exp.paper}
    first = next(iter(planned.values()))[0]  # every run of the experiment has the same settings
    record |= {"seed": first.seed, "generations": first.generations, "scale": first.scale}
    record |= {"groups": []} | (
        {"evaluations": settings["evaluations"]} if settings.get("evaluations") else {}
    )
    for group in groups:
        run_dirs = []
        for req in planned[group.name]:
            state = run_state(req)
            log(f"{name}: {req.attack} on {req.models[0]} -> {req.out}" + (f" ({state})" if state else ""))
            ensure_run(req)
            run_dirs.append(Path(req.out))
        specs = list(dict.fromkeys(req.models[0] for req in planned[group.name]))
        runs = [rundir.read_champions(d) for d in run_dirs]
        images, targets = checked_scores(runs, specs, settings.get("model_options"))
        names = [m.name for m in targets]
        folder = out / "transfer" / group.name
        meta = {
            "experiment": exp.name,
            "group": group.name,
            "runs": [str(d) for d in run_dirs],
            "targets": names,
        }
        tables[group.name] = write_transfer(
            images, folder / "all", names, {**meta, "attacks": list(group.attacks)}
        )
        for attack in group.attacks:
            write_transfer(
                images[images["attack"] == attack], folder / attack, names, {**meta, "attacks": [attack]}
            )
        record["groups"].append(
            {
                "name": group.name,
                "models": specs,
                "attacks": list(group.attacks),
                "runs": [str(d) for d in run_dirs],
            }
        )
    write_json(out / "experiment.json", record)
    return tables


def experiment_summary(tables: dict[str, pd.DataFrame]) -> str:
    return "\n\n".join(f"[{group}]\n{format_table(table)}" for group, table in tables.items())
