"""`foolbench paper`: every experiment of the paper at one scale, and a report that sets each of our
figures beside the paper's.

The paper's numbers come from its models and budgets (AlexNet, LeNet trained by Caffe, millions of
evaluations); ours come from the models this machine has and the chosen scale. So every row of the
main table names the model and the budget on both sides: a reader should never compare two numbers
without seeing what each was measured on.

Each experiment writes ordinary outputs under OUT/work/ (run directories, transfer, defence and
baseline folders). A step whose outputs are already there is reused and a killed run is resumed, so
an interrupted `foolbench paper` continues where it stopped. The report is written last, from those
folders only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from foolbench import rundir
from foolbench.errors import FoolbenchError
from foolbench.fileio import read_json, write_json
from foolbench.text import percent

SCALES = ("cpu", "full")
MNIST_MODEL = "lenet-mnist"
ENSEMBLE = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
GRADIENT_PRESETS = ("gradient", "gradient-decay", "gradient-regularised", "gradient-blur")
DEFENCE_ITERATIONS = {"cpu": (3, 2), "full": (5, 3)}  # (MNIST, ImageNet)


@dataclass
class Context:
    """What every step needs: where to write, at which scale, on which models, and how to talk."""

    out: Path
    scale: str
    seed: int
    imagenet_model: str
    progress: bool
    log: Callable[[str], None]
    generations: int | None = None  # a cap on every run, for a quick look; None: the presets' budgets

    @property
    def work(self) -> Path:
        return self.out / "work"


# -- helpers -----------------------------------------------------------------------------------------
def evolve(ctx: Context, key: str, attack: str, models: list[str]) -> Path:
    """One run directory at OUT/work/runs/KEY: started, resumed, or reused when it already finished."""
    from foolbench.runner import RunRequest, ensure_run

    run_dir = ctx.work / "runs" / key
    req = RunRequest(
        models=list(models),
        attack=attack,
        scale=ctx.scale,
        seed=ctx.seed,
        generations=ctx.generations,
        out=run_dir,
        progress=ctx.progress,
    )
    ctx.log(f"{attack} on {' + '.join(models)} -> {run_dir}")
    ensure_run(req)
    return run_dir


def run_figures(run_dir: Path) -> dict:
    """The run's summary plus when (generation) the first class and the median reached 99.99%."""
    summary = rundir.read_summary(run_dir)
    metrics = rundir.read_metrics(run_dir)
    first = metrics.loc[metrics["classes_at_9999"] > 0, "generation"]
    median = metrics.loc[metrics["median_confidence"] >= 0.9999, "generation"]
    manifest = rundir.read_manifest(run_dir)
    batch = manifest["preset"].get("search", {}).get("batch")
    return {
        **summary,
        "first_9999_generation": int(first.iloc[0]) if len(first) else None,
        "median_9999_generation": int(median.iloc[0]) if len(median) else None,
        "batch": batch,
    }


def budget_text(f: dict) -> str:
    if f.get("batch"):
        text = f"{f['generations']:,} generations of {f['batch']} ({f['evaluations']:,} evaluations)"
    else:
        text = f"{f['generations']:,} gradient steps"
    return f"{text}, {f['classes']} classes"


def classes_text(f: dict) -> str:
    return (
        f"median {percent(f['median_confidence'])}; {f['classes_at_99']} of {f['classes']} classes ≥ 99%, "
        f"{f['classes_at_9999']} ≥ 99.99%"
    )


def share(fraction: float) -> str:
    """A share of images, whole percent: 30%, not 30.00%."""
    return f"{fraction:.0%}"


def row(experiment: str, ours: str, model: str, budget: str, paper: str, paper_setting: str, where) -> dict:
    return {
        "experiment": experiment,
        "ours": ours,
        "our model": model,
        "our budget": budget,
        "paper": paper,
        "paper's model and budget": paper_setting,
        "outputs": str(where),
    }


# -- the experiments ---------------------------------------------------------------------------------
def mnist_runs(ctx: Context) -> list[dict]:
    rows = []
    for attack, name, paper in (
        (
            "mnist-direct",
            "MNIST, direct encoding",
            "≥ 99.99% images within 50 generations; median 99.99% by 200",
        ),
        ("mnist-cppn", "MNIST, CPPN encoding", "median 99.99% by 200 generations"),
    ):
        run_dir = evolve(ctx, attack, attack, [MNIST_MODEL])
        f = run_figures(run_dir)
        when = []
        if f["first_9999_generation"] is not None:
            when.append(f"first ≥ 99.99% image at generation {f['first_9999_generation']}")
        if f["median_9999_generation"] is not None:
            when.append(f"median ≥ 99.99% from generation {f['median_9999_generation']}")
        ours = classes_text(f) + ("; " + ", ".join(when) if when else "")
        rows.append(
            row(
                name,
                ours,
                MNIST_MODEL,
                budget_text(f),
                paper,
                "LeNet (Caffe); 200 generations of 200",
                run_dir,
            )
        )
    return rows


def imagenet_runs(ctx: Context) -> list[dict]:
    rows = []
    for attack, name, paper, setting in (
        (
            "imagenet-direct",
            "ImageNet, direct encoding",
            "median 21.59%; 45 of 1000 classes ≥ 99%",
            "AlexNet; 5010 generations of 200, 1000 classes, 10 crops",
        ),
        (
            "imagenet-cppn",
            "ImageNet, CPPN encoding",
            "median 88.11%; many classes ≥ 99%",
            "AlexNet; 5001 generations of 400, 1000 classes, 10 crops",
        ),
    ):
        run_dir = evolve(ctx, attack, attack, [ctx.imagenet_model])
        f = run_figures(run_dir)
        rows.append(row(name, classes_text(f), ctx.imagenet_model, budget_text(f), paper, setting, run_dir))
    return rows


def ensemble(ctx: Context) -> list[dict]:
    run_dir = evolve(ctx, "imagenet-cppn-ensemble", "imagenet-cppn", list(ENSEMBLE))
    f = run_figures(run_dir)
    ours = f"{f['classes_at_90']} of {f['classes']} classes ≥ 90%; " + classes_text(f)
    return [
        row(
            "Ensemble (mean of softmaxes), CPPN",
            ours,
            " + ".join(ENSEMBLE),
            budget_text(f),
            "231 of 1000 classes ≥ 90%",
            "an ensemble of ImageNet networks; 4000 generations",
            run_dir,
        )
    ]


def transfers(ctx: Context) -> list[dict]:
    from foolbench.experiments.transfer import run_experiment

    rows = []
    for name, title, paper, setting in (
        (
            "transfer-seeds",
            "Transfer between seed twins",
            "images evolved on one network often fool another trained with a different seed",
            "LeNet / AlexNet twins",
        ),
        (
            "transfer-arch",
            "Transfer across architectures",
            "about 20% of the images transfer",
            "AlexNet → GoogLeNet",
        ),
    ):
        out = ctx.work / name
        ctx.log(f"{name} -> {out}")
        tables = run_experiment(
            name,
            out,
            seed=ctx.seed,
            generations=ctx.generations,
            scale=ctx.scale,
            imagenet=True,
            progress=ctx.progress,
            log=ctx.log,
        )
        for group, table in tables.items():
            ours = transfer_text(table)
            models = ", ".join(dict.fromkeys(table["target"]))
            budget = "CPPN and direct runs at the presets' budgets" if group == "mnist" else "CPPN runs"
            rows.append(
                row(f"{title} ({group})", ours, models, budget, paper, setting, out / "transfer" / group)
            )
    return rows


def transfer_text(table: pd.DataFrame) -> str:
    """The 'ours' cell of a transfer row (`transfer.csv`: one row per source and target). The median
    confidence on another model is given per direction: the two directions between two
    architectures can differ as much as 8% and 99.9%, which no single number would show."""
    cross = table[table["source"] != table["target"]]
    own = table[table["source"] == table["target"]]
    directions = ", ".join(
        f"{source} → {target} {percent(median)}"
        for source, target, median in zip(
            cross["source"], cross["target"], cross["median_confidence"], strict=True
        )
    )
    return (
        f"{share(cross['fraction_at_99'].min())}–{share(cross['fraction_at_99'].max())} of champions "
        f"≥ 99% on another model (on their own: {share(own['fraction_at_99'].min())}–"
        f"{share(own['fraction_at_99'].max())}); median on another model: {directions}"
    )


def defences(ctx: Context) -> list[dict]:
    from foolbench.experiments.defence import defend

    rows = []
    mnist_iters, imagenet_iters = DEFENCE_ITERATIONS[ctx.scale]
    for model, attack, iterations, paper, setting in (
        (
            MNIST_MODEL,
            "mnist-cppn",
            mnist_iters,
            "evolution finds 99.99% images in every iteration",
            "LeNet + an 11th class, retrained each iteration; 15 iterations",
        ),
        (
            ctx.imagenet_model,
            "imagenet-cppn",
            imagenet_iters,
            "median of new CPPN images 88.1% → 11.7%",
            "AlexNet + a 1001st class, retrained once",
        ),
    ):
        out = ctx.work / f"defence-{attack.split('-')[0]}"
        ctx.log(f"defence of {model} with {attack}, {iterations} iterations -> {out}")
        table = defend(
            model,
            attack,
            iterations,
            out,
            scale=ctx.scale,
            seed=ctx.seed,
            generations=ctx.generations,
            progress=ctx.progress,
            log=ctx.log,
        )
        medians = " → ".join(percent(m) for m in table["median_confidence"])
        shares = " → ".join(share(s) for s in table["fooled_share"])
        ours = f"median of new champions {medians}; put in the fooling class {shares}"
        budget = (
            f"{iterations} iterations, {table['runs'].iloc[-1]} runs per iteration at the preset's budget"
        )
        rows.append(row(f"Retraining defence ({attack})", ours, model, budget, paper, setting, out))
    return rows


def gradients(ctx: Context) -> list[dict]:
    rows = []
    for attack in (*GRADIENT_PRESETS, "gradient-imagenet"):
        model = ctx.imagenet_model if attack == "gradient-imagenet" else MNIST_MODEL
        run_dir = evolve(ctx, attack, attack, [model])
        f = run_figures(run_dir)
        first = f["first_9999_generation"]
        ours = classes_text(f) + (f"; first ≥ 99.99% at step {first}" if first is not None else "")
        rows.append(
            row(
                f"Gradient ascent ({attack})",
                ours,
                model,
                budget_text(f),
                "unrecognisable images at 99.99%",
                "LeNet / AlexNet; 300 steps",
                run_dir,
            )
        )
    return rows


def baselines(ctx: Context) -> list[dict]:
    from foolbench.experiments.baseline import baseline

    rows = []
    for model, runs in (
        (MNIST_MODEL, ["mnist-cppn", "mnist-direct"]),
        (ctx.imagenet_model, ["imagenet-cppn", "imagenet-direct"]),
    ):
        out = ctx.work / f"baseline-{model}"
        ctx.log(f"baseline of {model} -> {out}")
        b = baseline(model, runs=[ctx.work / "runs" / r for r in runs], out=out)
        ours = f"median top-1 {percent(b['median_confidence'])} on {b['images']} real images"
        if b.get("median_confidence_correct") is not None:
            ours += (
                f" (right {percent(b['median_confidence_correct'])}, "
                f"wrong {percent(b['median_confidence_wrong'])})"
            )
        vs = b.get("fooling_vs_real")
        if vs:
            ours += f"; fooling-vs-real AUROC {vs['auroc']:.2f}"
        rows.append(
            row(
                "Real-image baseline",
                ours,
                model,
                b["data_source"].split(" (")[0],
                "median 60.3% (right 86.7%, wrong 33.7%)",
                "AlexNet on the ImageNet validation set",
                out,
            )
        )
    return rows


STEPS = (mnist_runs, imagenet_runs, ensemble, transfers, gradients, baselines, defences)


# -- the command ---------------------------------------------------------------------------------------
def paper(
    out: str | Path = "reports/paper",
    scale: str = "cpu",
    seed: int = 0,
    imagenet_model: str = "efficientnet-lite0",
    progress: bool = True,
    log: Callable[[str], None] = print,
    generations: int | None = None,
) -> Path:
    """Run every step (reusing finished work), then write the report; returns the index.html path."""
    from foolbench.report import write_report

    if scale not in SCALES:
        raise FoolbenchError(f"unknown scale '{scale}'; choose one of {', '.join(SCALES)}")
    ctx = Context(Path(out), scale, seed, imagenet_model, progress, log, generations)
    rows = []
    for step in STEPS:
        rows.extend(step(ctx))
    table = pd.DataFrame(rows)
    write_json(
        ctx.out / "paper.json", {"scale": scale, "seed": seed, "generations": generations, "rows": rows}
    )
    caption = (
        f"Every experiment of the paper at the '{scale}' scale (seed {seed}). The paper's numbers were "
        "measured on its models and budgets, ours on the models and budgets beside them."
    )
    if generations is not None:
        caption += (
            f" Every run was capped at {generations} generations (a quick look, not the presets' budgets)."
        )
    return write_report(
        [ctx.work],
        ctx.out,
        title="foolbench: the paper, reproduced",
        lead=[("Ours vs the paper", table, caption)],
    )


def markdown_table(out: str | Path) -> str:
    """The main table as Markdown (for the README), read back from paper.json."""
    from foolbench.report.tables import to_markdown

    rows = read_json(Path(out) / "paper.json")["rows"]
    return to_markdown(pd.DataFrame(rows).drop(columns="outputs"))
