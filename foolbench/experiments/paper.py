"""`foolbench paper`: every experiment of the paper at one scale, and a report that sets each of our
figures beside the paper's.

The paper's numbers come from its models and budgets (AlexNet, LeNet trained by Caffe, millions of
evaluations); ours come from the models this machine has and the chosen scale. So every line of the
report's headline names the model and the budget on both sides, and its verdict follows a stated
rule (foolbench.report.headline): a reader should never compare two numbers without seeing what
each was measured on.

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

from foolbench.errors import FoolbenchError
from foolbench.fileio import read_json, write_json

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


# -- the experiments ---------------------------------------------------------------------------------
# Each step writes its outputs under OUT/work/; the report finds them there and sets each beside the
# paper's figure (foolbench.report.headline), so `foolbench report OUT/work` gives the same page.
def mnist_runs(ctx: Context) -> None:
    for attack in ("mnist-direct", "mnist-cppn"):
        evolve(ctx, attack, attack, [MNIST_MODEL])


def imagenet_runs(ctx: Context) -> None:
    for attack in ("imagenet-direct", "imagenet-cppn"):
        evolve(ctx, attack, attack, [ctx.imagenet_model])


def ensemble(ctx: Context) -> None:
    evolve(ctx, "imagenet-cppn-ensemble", "imagenet-cppn", list(ENSEMBLE))


def transfers(ctx: Context) -> None:
    from foolbench.experiments.transfer import run_experiment

    for name in ("transfer-seeds", "transfer-arch"):
        out = ctx.work / name
        ctx.log(f"{name} -> {out}")
        run_experiment(
            name,
            out,
            seed=ctx.seed,
            generations=ctx.generations,
            scale=ctx.scale,
            imagenet=True,
            progress=ctx.progress,
            log=ctx.log,
        )


def defences(ctx: Context) -> None:
    from foolbench.experiments.defence import defend

    mnist_iters, imagenet_iters = DEFENCE_ITERATIONS[ctx.scale]
    for model, attack, iterations in (
        (MNIST_MODEL, "mnist-cppn", mnist_iters),
        (ctx.imagenet_model, "imagenet-cppn", imagenet_iters),
    ):
        out = ctx.work / f"defence-{attack.split('-')[0]}"
        ctx.log(f"defence of {model} with {attack}, {iterations} iterations -> {out}")
        defend(
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


def gradients(ctx: Context) -> None:
    for attack in (*GRADIENT_PRESETS, "gradient-imagenet"):
        model = ctx.imagenet_model if attack == "gradient-imagenet" else MNIST_MODEL
        evolve(ctx, attack, attack, [model])


def baselines(ctx: Context) -> None:
    from foolbench.experiments.baseline import baseline

    for model, runs in (
        (MNIST_MODEL, ["mnist-cppn", "mnist-direct"]),
        (ctx.imagenet_model, ["imagenet-cppn", "imagenet-direct"]),
    ):
        out = ctx.work / f"baseline-{model}"
        ctx.log(f"baseline of {model} -> {out}")
        baseline(model, runs=[ctx.work / "runs" / r for r in runs], out=out)


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
    """Run every step (reusing finished work), then write the report; returns the index.html path.

    The headline rows (ours, the paper's, both budgets, the verdict) are the report's headline.csv,
    also kept in OUT/paper.json with the settings they were made with."""
    from foolbench.report import write_report

    if scale not in SCALES:
        raise FoolbenchError(f"unknown scale '{scale}'; choose one of {', '.join(SCALES)}")
    ctx = Context(Path(out), scale, seed, imagenet_model, progress, log, generations)
    for step in STEPS:
        step(ctx)
    note = (
        f"Every experiment of the paper at the '{scale}' scale (seed {seed}), on this machine's models. "
        "The paper's figures were measured on its models and budgets, ours on those beside them."
    )
    if generations is not None:
        note += (
            f" Every run was capped at {generations} generations (a quick look, not the presets' budgets)."
        )
    index = write_report([ctx.work], ctx.out, title="foolbench: the paper, reproduced", note=note)
    rows = pd.read_csv(ctx.out / "headline.csv", keep_default_na=False, na_values=[""])
    rows = rows.astype(object).where(rows.notna(), None).to_dict("records")
    write_json(
        ctx.out / "paper.json", {"scale": scale, "seed": seed, "generations": generations, "rows": rows}
    )
    return index


def markdown_table(out: str | Path) -> str:
    """The headline as Markdown (for the README), read back from paper.json."""
    from foolbench.report.tables import headline_markdown

    return headline_markdown(pd.DataFrame(read_json(Path(out) / "paper.json")["rows"]))
