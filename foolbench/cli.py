"""The `foolbench` command line. Heavy libraries are imported inside commands so --help is instant.

Every mistake a user can make raises FoolbenchError, printed here as one line with exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from foolbench import __version__
from foolbench.errors import FoolbenchError
from foolbench.zoo import DEFAULT_MODEL

DEFAULT_ATTACKS = {"mnist": ("mnist-cppn", "mnist-direct"), "imagenet": ("imagenet-cppn", "imagenet-direct")}


def model_options(f):
    """Flags that tell the adapter what a model file does not (they override its card)."""
    options = [
        click.option("--arch", help="package.module:factory building the architecture of a state-dict file."),
        click.option("--labels", type=click.Path(), help="Text file with one class label per line."),
        click.option(
            "--layout", type=click.Choice(["NCHW", "NHWC"]), help="Input layout (detected for ONNX)."
        ),
        click.option(
            "--output",
            "output_kind",
            type=click.Choice(["logits", "probs"]),
            help="What the model outputs (detected when rows sum to 1).",
        ),
        click.option("--input-size", nargs=2, type=int, help="Input height and width."),
        click.option("--channels", type=click.IntRange(1, 4), help="Input channels."),
        click.option("--mean", type=str, help="Per-channel mean, comma-separated, on [0,1] pixels."),
        click.option("--std", type=str, help="Per-channel std, comma-separated."),
        click.option(
            "--crop", type=click.Choice(["center", "ten"]), help="Centre crop or the paper's 10 crops."
        ),
        click.option("--batch-size", type=click.IntRange(1), help="Images per forward pass (default 256)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _floats(text: str | None, name: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise FoolbenchError(f"--{name} must be comma-separated numbers, e.g. 0.485,0.456,0.406") from None


def collect_model_options(kw: dict) -> dict:
    overrides = {
        "layout": kw.pop("layout"),
        "output": kw.pop("output_kind"),
        "input_size": list(kw.pop("input_size")) if kw.get("input_size") else kw.pop("input_size"),
        "channels": kw.pop("channels"),
        "mean": _floats(kw.pop("mean"), "mean"),
        "std": _floats(kw.pop("std"), "std"),
        "crop": kw.pop("crop"),
    }
    labels = kw.pop("labels")
    options = {
        "arch": kw.pop("arch"),
        "labels": str(Path(labels).resolve()) if labels else None,
        "overrides": {k: v for k, v in overrides.items() if v is not None},
    }
    batch_size = kw.pop("batch_size")
    if batch_size is not None:
        options["batch_size"] = batch_size
    return options


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="foolbench")
def cli():
    """foolbench: how easily is an image classifier fooled?

    Evolves images that a model labels with high confidence although no person would recognise
    the class in them (Nguyen, Yosinski & Clune, CVPR 2015), and reports how well it resists.
    """


# -- run ---------------------------------------------------------------------------------------------
@cli.command()
@click.option(
    "--model",
    "models",
    multiple=True,
    help=f"Model file or zoo name; several form an ensemble. Default: {DEFAULT_MODEL}.",
)
@click.option(
    "--attack",
    "attacks",
    multiple=True,
    help="Preset name in attacks/ or a .toml file; repeatable. "
    "Default: the CPPN and direct presets of the model's dataset.",
)
@click.option(
    "--scale",
    type=click.Choice(["auto", "cpu", "full"]),
    default="auto",
    show_default=True,
    help="Preset budget: the paper's (full) or sized for 2 CPU cores; auto picks cpu without a GPU.",
)
@click.option("--generations", type=click.IntRange(0), help="Stop after this many generations.")
@click.option("--evaluations", type=click.IntRange(1), help="Stop after this many model evaluations.")
@click.option("--seconds", type=click.FloatRange(min=0.001), help="Stop after this many seconds.")
@click.option("--classes", help="Target classes: all, 0-9, 1,3,5, random:10, or label names.")
@click.option(
    "--seed", type=click.IntRange(0), help="Seed of every random choice (default: the preset's, else 0)."
)
@click.option(
    "--out", type=click.Path(path_type=Path), help="Run directory (with several attacks: their parent)."
)
@click.option(
    "--resume", type=click.Path(path_type=Path), help="Continue a killed run from its last checkpoint."
)
@click.option("--checkpoint-every", type=click.IntRange(1), help="Generations between checkpoints.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@model_options
def run(models, attacks, scale, resume, out, progress, **kw):
    """Evolve fooling images against a model and write a run directory per attack."""
    from foolbench.runner import RunRequest, resume_run, start_run, summary_table

    model_opts = collect_model_options(kw)
    budget = {k: kw.pop(k) for k in ("generations", "evaluations", "seconds")}
    if resume is not None:
        req = RunRequest(models=list(models), attack="", progress=progress, **budget)
        done = [resume_run(resume, req)]
    else:
        if not attacks:
            models = list(models) or [DEFAULT_MODEL]
            attacks = _default_attacks(models, model_opts)
        scale = _resolve_scale(scale)
        done = []
        for attack in attacks:
            target = out / Path(attack).stem if out is not None and len(attacks) > 1 else out
            req = RunRequest(
                models=list(models),
                attack=attack,
                scale=scale,
                out=target,
                progress=progress,
                model_options=model_opts,
                **budget,
                **kw,
            )
            on = " + ".join(models) if models else "the preset's model"
            click.echo(f"foolbench: {attack} ({scale} scale) on {on}", err=True)
            done.append(start_run(req))
    click.echo(summary_table(done))
    for d in done:
        click.echo(f"run: {d}   gallery: {d / 'gallery.png'}")


def _resolve_scale(scale: str) -> str:
    if scale != "auto":
        return scale
    from foolbench.models.onnx_model import gpu_present

    return "full" if gpu_present() else "cpu"


def _default_attacks(models: list[str], model_opts: dict) -> tuple[str, ...]:
    """The MNIST presets for grey models, the ImageNet presets for colour ones."""
    from foolbench.models import load_model

    m = load_model(models[0], **model_opts)
    dataset = (m.card.dataset or "").lower()
    if dataset not in DEFAULT_ATTACKS:
        dataset = "mnist" if m.spec.channels == 1 else "imagenet"
    return DEFAULT_ATTACKS[dataset]


# -- models ------------------------------------------------------------------------------------------
@cli.group()
def models():
    """Inspect models as foolbench sees them."""


@models.command()
@click.argument("model")
@model_options
def inspect(model, **kw):
    """Print what the adapter understood of MODEL, and its top-3 on a probe image."""
    from foolbench.inspect import inspect_model

    click.echo(inspect_model(model, collect_model_options(kw)))


# -- zoo ---------------------------------------------------------------------------------------------
@cli.group()
def zoo():
    """Reference models: list them, build them into zoo/."""


@zoo.command("list")
def zoo_list():
    """The models foolbench can build."""
    import pandas as pd

    from foolbench.zoo import list_zoo

    table = pd.DataFrame(list_zoo())[["name", "dataset", "built", "needs", "description"]]
    table["built"] = table["built"].map({True: "yes", False: ""})
    click.echo(table.to_string(index=False))


@zoo.command("build")
@click.argument("name")
@click.option("--data", type=click.Path(), help="MNIST folder (torchvision layout) for MNIST models.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Training seed (MNIST).")
@click.option("--weights", type=click.Path(), help="Weights file (state dict) for alexnet/googlenet.")
@click.option("--out", type=click.Path(path_type=Path), help="Folder to write NAME.onnx into (default zoo/).")
def zoo_build(name, data, seed, weights, out):
    """Build NAME into zoo/NAME.onnx with its model card."""
    from foolbench.zoo import build

    path = build(name, out_dir=out, data=data, seed=seed, weights=weights)
    click.echo(f"built {path}")


# -- transfer ----------------------------------------------------------------------------------------
@cli.command("transfer")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--model", "models", multiple=True, required=True, help="Target model (file or zoo name); repeatable."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("transfer"),
    show_default=True,
    help="Folder for transfer.csv, the matrices and the heatmaps.",
)
@model_options
def transfer_cmd(run_dirs, models, out, **kw):
    """Score the champion PNGs of RUN_DIR... on each --model: how well do fooling images transfer?

    Writes, per (source model, target model), the median target confidence for the champion's class,
    the shares at >= 99% and >= 50%, and how often the target's top-1 is the champion's class.
    """
    from foolbench.experiments.transfer import format_table, transfer

    table = transfer(run_dirs, list(models), out, collect_model_options(kw))
    click.echo(format_table(table))
    click.echo(f"transfer: {out / 'transfer.csv'}   heatmaps: {out}/heatmap_*.png")


# -- baseline ----------------------------------------------------------------------------------------
@cli.command("baseline")
@click.argument("run_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model file or zoo name.")
@click.option(
    "--data",
    help="mnist (held-out digits), skimage (scikit-image's photos) or DIR (one sub-folder per class, "
    "named by label or class index). Default: mnist for digit models, else skimage.",
)
@click.option(
    "--runs",
    "runs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Run directory whose champions are the fooling images (repeatable; extra arguments count too).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("baseline"),
    show_default=True,
    help="Folder for baseline.json.",
)
@model_options
def baseline_cmd(run_dirs, model, data, runs, out, **kw):
    """Median top-1 confidence on real images (overall, right, wrong), and, given runs, how well that
    confidence separates real images from fooling ones (AUROC, FPR at 95% TPR)."""
    import json

    from foolbench.experiments.baseline import baseline

    result = baseline(model, data, [*runs, *run_dirs], out, collect_model_options(kw))
    shown = {k: v for k, v in result.items() if k not in ("per_image", "paper")}
    click.echo(json.dumps(shown, indent=2))
    click.echo(f"baseline: {out / 'baseline.json'}")


# -- experiments -------------------------------------------------------------------------------------
@cli.group("experiment")
def experiment_group():
    """The paper's experiments as presets: evolve the runs, then write the tables."""


def _experiment_options(f):
    options = [
        click.option(
            "--out", type=click.Path(path_type=Path), help="Experiment folder (default: ./EXPERIMENT-NAME)."
        ),
        click.option("--seed", type=click.IntRange(0), help="Seed of every run (default: the presets')."),
        click.option(
            "--generations", type=click.IntRange(0), help="Generations per run (default: the preset's)."
        ),
        click.option(
            "--scale",
            type=click.Choice(["cpu", "full"]),
            default="cpu",
            show_default=True,
            help="Preset budget: sized for 2 CPU cores, or the paper's.",
        ),
        click.option(
            "--model",
            "models",
            multiple=True,
            help="Replace the experiment's MNIST models (repeatable, at least two).",
        ),
        click.option("--progress/--no-progress", default=True, help="Show progress bars."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _run_experiment(name, out, seed, generations, scale, models, progress, imagenet=False):
    from foolbench.experiments.transfer import experiment_summary, run_experiment

    out = out or Path(name)
    tables = run_experiment(
        name,
        out,
        seed=seed,
        generations=generations,
        scale=scale,
        imagenet=imagenet,
        models={"mnist": list(models)} if models else None,
        progress=progress,
        log=lambda m: click.echo(f"foolbench: {m}", err=True),
    )
    click.echo(experiment_summary(tables))
    click.echo(f"experiment: {out}   transfer: {out / 'transfer'}")


@experiment_group.command("transfer-seeds")
@_experiment_options
def experiment_transfer_seeds(out, seed, generations, scale, models, progress):
    """LeNet vs its seed twins (lenet-mnist-s1, -s2): evolve on each, transfer among them."""
    _run_experiment("transfer-seeds", out, seed, generations, scale, models, progress)


@experiment_group.command("transfer-arch")
@_experiment_options
@click.option(
    "--imagenet/--no-imagenet",
    default=False,
    help="Also EfficientNet-Lite0 vs -Lite2 with the imagenet-cppn preset.",
)
def experiment_transfer_arch(out, seed, generations, scale, models, progress, imagenet):
    """LeNet vs an MLP on MNIST (and, with --imagenet, EfficientNet-Lite0 vs -Lite2)."""
    _run_experiment("transfer-arch", out, seed, generations, scale, models, progress, imagenet)


def main() -> None:
    try:
        rv = cli.main(standalone_mode=False)
    except FoolbenchError as e:
        click.echo(f"foolbench: error: {e}", err=True)
        sys.exit(2)
    except OSError as e:  # a full disk, an unwritable or missing folder: the files before it are intact
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        click.echo(f"foolbench: error: cannot read or write{where}: {e.strerror or e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("foolbench: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
