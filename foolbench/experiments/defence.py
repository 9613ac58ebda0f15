"""The retraining defence: teach the model a "fooling" class, evolve again, repeat.

The paper (Sec. 3.5) asks whether a network can learn to reject fooling images: it adds the evolved
images to the training data as an extra class (the 11th for MNIST, the 1001st for ImageNet),
retrains, and evolves new images against the retrained network. On MNIST evolution still found
99.99 % images in every one of 15 iterations; on ImageNet the median confidence of new CPPN
images fell from 88.1 % to 11.7 %.

`defend` runs that loop and writes OUT/:
  defence.csv             one row per iteration (COLUMNS); iteration 0 is the attack on the model given
  defence.json            settings, the paper's figures, what each column means, per-iteration details
  iter-<k>/runs/<...>     ordinary run directories (the champions of iteration k)
  models/<name>-defended-<k>.onnx   the model of iteration k >= 1, with its card (labels + "fooling")

Iteration k's model is trained with the distinct champion PNGs of iterations 0..k-1 as the fooling
class; its runs target the original classes only. Each iteration makes `runs` runs (seeds
seed + 1000 k + r) at the preset's budget; each run gives one champion per target class, identical
PNGs are counted once. Everything is reused when the same command runs again: finished runs and
model files are kept, killed runs resume, and a larger --iterations continues the defence.

Keeping the fooling class's share constant, as the paper does:
  MNIST     a fresh LeNet(11) is trained on the training digits plus exactly as many fooling examples
            as an average digit class has: the distinct fooling images are repeated evenly (or
            subsampled, seeded) to that count, so the fooling class is always 1/11 of the data.
  ImageNet  only the classifier head is fine-tuned, on the frozen network's pooled features: the
            fooling images and random views of natural photos (whose targets are the original
            model's own probabilities, so its clean behaviour is kept) each carry a fixed half of
            the loss, whatever their counts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from foolbench import rundir
from foolbench.errors import FoolbenchError
from foolbench.experiments.defence_imagenet import ImagenetDefence, efficientnet_name
from foolbench.fileio import atomic_path, read_json, sha256_file, write_json
from foolbench.images import as_uint8, load_png
from foolbench.models.card import real_labels
from foolbench.models.load import ModelOptions
from foolbench.text import safe_name
from foolbench.zoo.defended import FOOLING, RUN_SEED_STRIDE, MnistDefence, distinct, images_sha256

DEFAULT_RUNS = {"mnist": 5, "imagenet": 2}  # runs per iteration (about 50 and 20 fooling images)
COLUMNS = {
    "iteration": "0: the attack on the model given; k: on the model retrained with the fooling images "
    "of iterations 0..k-1",
    "model": "name of the iteration's model",
    "model_path": "the model file the iteration's runs evolved against",
    "model_sha256": "sha256 of that file",
    "fooling_images": "distinct fooling images in the training data of the iteration's model",
    "runs": "runs evolved against the iteration's model",
    "evaluations": "model evaluations of those runs, summed",
    "median_confidence": "median confidence of the new champions (all runs, target classes only)",
    "mean_confidence": "mean confidence of the new champions",
    "classes_at_99": "target classes at >= 99 %, mean over the runs (summary.json)",
    "classes_at_9999": "target classes at >= 99.99 %, mean over the runs (summary.json)",
    "fooled_share": "share of the new champions whose top-1 is the fooling class (0 without one)",
    "clean_accuracy": "see clean_accuracy in defence.json",
}
PAPER = {
    "mnist": {
        "model": "LeNet (Caffe), 11th class 'fooling'",
        "procedure": "6,000 fooling images (as many as a digit class) from 300 runs, then 1,000 more per "
        "iteration with the class share kept constant; 15 iterations",
        "result": "evolution still produced 99.99 % images in every iteration",
        "median_confidence_every_iteration": 0.9999,
    },
    "imagenet": {
        "model": "AlexNet (Caffe), 1001st class 'fooling'",
        "procedure": "9,000 CPPN fooling images against 1,300 per real class; retrained once",
        "result": "median confidence of new CPPN images fell from 88.1 % to 11.7 %",
        "median_confidence_before": 0.881,
        "median_confidence_after": 0.117,
    },
}
BLACK_BOX = ("map-elites", "patch")  # searches on outputs alone, which any defended model file allows
SUPPORTED = (
    "the defence supports MNIST models (28x28 grey, e.g. lenet-mnist; retrained as a LeNet) and the "
    "zoo's EfficientNet-Lite models (efficientnet-lite0/1/2; head fine-tuned)"
)


# -- the loop ------------------------------------------------------------------------------------------
def defend(
    model_spec: str,
    attack: str,
    iterations: int,
    out: str | Path,
    *,
    scale: str = "cpu",
    runs_per_iteration: int | None = None,
    seed: int = 0,
    data: str | Path | None = None,
    classes: str | None = None,
    generations: int | None = None,
    epochs: int | None = None,
    model_options: ModelOptions | None = None,
    progress: bool = True,
    log=print,
    evaluations: int | None = None,
    reuse: dict[int, Path] | None = None,
) -> pd.DataFrame:
    """Run (or continue) the retraining defence into `out`; returns defence.csv as a DataFrame.

    `generations` and `evaluations` override the preset's budget per run (the first reached ends a
    run); `reuse` names run directories made elsewhere for iteration 0's runs (by run index), used
    where they hold the very run asked for, so the same run is not made twice; `epochs` the LeNet retraining's (MNIST
    only; default: the zoo recipe's, as the paper retrains the same network); `data` is an MNIST
    folder (torchvision layout) for MNIST models, a folder of photos (one sub-folder per class) for
    ImageNet ones.
    Every input is checked before anything is written.
    """
    out = Path(out)
    setup = _prepare(
        model_spec, attack, iterations, scale, runs_per_iteration, seed, data, classes, model_options
    )
    if epochs is not None and (setup.kind != "mnist" or epochs < 1):
        raise FoolbenchError(
            f"--epochs {epochs}: give 1 or more, and only for MNIST models (it sets LeNet's retraining; "
            "the ImageNet defence fine-tunes a head with its own fixed schedule)"
        )
    if evaluations is not None and evaluations < 1:
        raise FoolbenchError(f"--evaluations {evaluations}: give a whole number >= 1")
    setup.generations, setup.epochs, setup.evaluations = generations, epochs, evaluations
    setup.reuse = {int(r): Path(d) for r, d in (reuse or {}).items()}
    task = _task(setup, data)
    record = _open_record(out, _settings(setup, data, generations), setup, task)
    if setup.note:
        log(f"defence: {setup.note}")
    rows, fooling_dirs, parent = [], [], setup.model
    for k in range(iterations + 1):
        row, run_dirs, training, parent = _iteration(task, setup, out, k, fooling_dirs, parent, progress, log)
        rows.append(row)
        fooling_dirs += run_dirs
        record["iterations"].append({**row, "run_dirs": [str(d) for d in run_dirs], "training": training})
        table = pd.DataFrame(rows, columns=list(COLUMNS))
        with atomic_path(out / "defence.csv") as tmp:
            table.to_csv(tmp, index=False)
        write_json(out / "defence.json", record)
        log(
            f"defence: iteration {k}: median {row['median_confidence']:.2%} of new champions, "
            f"{row['fooled_share']:.0%} put in the fooling class, clean accuracy {row['clean_accuracy']:.2%}"
        )
    return table


def _iteration(task, setup, out: Path, k: int, fooling_dirs: list[Path], parent, progress: bool, log):
    """Iteration k: (re)train its model from the fooling images so far (k > 0), evolve, measure."""
    spec, training = setup.spec, {}
    if k > 0:
        path, training = _defended_model(task, setup, out, k, fooling_dirs, parent, log)
        spec = str(path)
    model = _load(spec, setup, k)
    run_dirs = [_evolve(setup, out, k, r, spec, model, progress, log) for r in range(setup.runs)]
    row = {
        "iteration": k,
        "model": model.name,
        "model_path": str(model.path),
        "model_sha256": sha256_file(model.path),
        "fooling_images": training.get("fooling_images", setup.inherited_fooling),
        **iteration_figures(run_dirs, setup.fooling_index if k == 0 else len(setup.labels)),
        "clean_accuracy": task.clean_accuracy(model),
    }
    return row, run_dirs, training, model


@dataclasses.dataclass
class Setup:
    """The checked inputs of a defence."""

    kind: str  # mnist or imagenet
    spec: str
    model: object  # the starting model (foolbench.models.base.Model)
    preset: object
    labels: list[str]  # the original classes, without "fooling"
    classes: list[int]
    runs: int
    seed: int
    scale: str
    iterations: int
    fooling_index: int | None  # where the starting model already has a fooling class
    inherited_fooling: int
    note: str = ""
    generations: int | None = None
    evaluations: int | None = None
    reuse: dict[int, Path] = dataclasses.field(default_factory=dict)  # iteration 0's runs made elsewhere
    epochs: int | None = None  # LeNet retraining epochs (MNIST); None: the zoo recipe's
    model_options: ModelOptions = dataclasses.field(default_factory=ModelOptions)


def _prepare(spec, attack, iterations, scale, runs, seed, data, classes, model_options=None) -> Setup:
    """Every check, before anything is written: preset, model kind, classes, runs, data."""
    from foolbench.presets import load_preset, parse_classes
    from foolbench.resolve import load_model

    if not isinstance(iterations, int) or iterations < 1:
        raise FoolbenchError(
            f"--iterations must be 1 or more (got {iterations}); each retrains the model once"
        )
    if runs is not None and runs < 1:
        raise FoolbenchError(f"--runs must be 1 or more (got {runs})")
    if seed < 0:
        raise FoolbenchError(f"--seed must be 0 or more (got {seed})")
    preset = load_preset(attack, scale)
    if preset.method not in BLACK_BOX:
        raise FoolbenchError(
            f"{preset.name} is a {preset.method} preset; the defence searches for its images with the "
            "model's outputs alone, as the paper's evolution does: pass a black-box preset such as "
            "mnist-cppn, imagenet-cppn or imagenet-patch"
        )
    model_options = model_options or ModelOptions()
    model = load_model(spec, model_options)
    kind = model_kind(model, spec)
    dataset = preset.attack.get("dataset")
    if (
        dataset not in (None, kind)
        or preset.encoding.get("channels", model.spec.channels) != model.spec.channels
    ):
        raise FoolbenchError(f"{preset.name} attacks {dataset or 'other'} models but {model.name} is {kind}")
    labels, fooling_index, note, inherited = list(model.labels), None, "", 0
    if labels[-1] == FOOLING:
        labels, fooling_index = labels[:-1], len(labels) - 1
        inherited = int(model.card.extra.get("fooling_images", 0))
        note = (
            f"{model.name} already has a fooling class (iteration {model.card.extra.get('iteration', '?')} "
            "of an earlier defence); it is iteration 0 here, and the models retrained here learn only "
            "the fooling images of this defence"
        )
    chosen = parse_classes(classes if classes is not None else preset.search.get("classes"), labels)
    _check_data(kind, data)
    return Setup(
        kind=kind,
        spec=spec,
        model=model,
        preset=preset,
        labels=labels,
        classes=chosen,
        runs=runs or DEFAULT_RUNS[kind],
        seed=seed,
        scale=scale,
        iterations=iterations,
        fooling_index=fooling_index,
        inherited_fooling=inherited,
        note=note,
        model_options=model_options,
    )


def model_kind(model, spec: str) -> str:
    """'mnist' or 'imagenet' from the model's card and input; anything else is refused."""
    dataset = (model.card.dataset or "").lower()
    grey28 = model.spec.channels == 1 and tuple(model.spec.size) == (28, 28)
    if dataset == "mnist" or (not dataset and grey28):
        digits = len(real_labels(model.labels))
        if not grey28 or digits != 10:
            raise FoolbenchError(
                f"{spec}: an MNIST model must take 28x28 grey images and have 10 classes (plus '{FOOLING}')"
            )
        return "mnist"
    if dataset == "imagenet" and model.labels[-1] == FOOLING:
        raise FoolbenchError(
            f"{model.name} already has a fooling class; start the ImageNet defence from the original "
            "model and continue it with more --iterations in the same --out"
        )
    if dataset == "imagenet" and efficientnet_name(model) is not None:
        return "imagenet"
    raise FoolbenchError(f"{spec} ({model.name}, dataset {dataset or 'unknown'}): {SUPPORTED}")


def _check_data(kind: str, data) -> None:
    if data is None or (kind == "imagenet" and str(data) == "skimage"):
        return
    if kind == "mnist":
        from foolbench.data.mnist import load_mnist

        load_mnist(data)
    else:
        from foolbench.data.photos import image_folder

        image_folder(data)


def _settings(setup: Setup, data, generations) -> dict:
    """What must match for a second call to continue the same defence (iterations may grow)."""
    return {
        "model": setup.spec,
        "model_sha256": sha256_file(setup.model.path),
        "attack": setup.preset.name,
        "scale": setup.scale,
        "seed": setup.seed,
        "runs_per_iteration": setup.runs,
        "classes": setup.classes,
        "generations": generations,
        "data": str(data) if data is not None else None,
        # only when given, so defences recorded before --epochs (--evaluations) existed still continue
        **({"epochs": setup.epochs} if setup.epochs is not None else {}),
        **({"evaluations": setup.evaluations} if setup.evaluations is not None else {}),
    }


def _task(setup: Setup, data):
    """How this defence retrains and measures clean accuracy: MNIST (LeNet) or ImageNet (the head)."""
    if setup.kind == "mnist":
        return MnistDefence(data, setup.seed, setup.epochs)
    return ImagenetDefence(setup.model, data, setup.seed)


def _open_record(out: Path, settings: dict, setup: Setup, task) -> dict:
    """defence.json's header; an existing defence in `out` must have the same settings."""
    path = out / "defence.json"
    if path.is_file():
        found = read_json(path).get("settings", {})
        diff = [f"{k} {found.get(k)!r} (asked {v!r})" for k, v in settings.items() if found.get(k) != v]
        if diff:
            raise FoolbenchError(
                f"{out} holds a defence with other settings: {', '.join(diff)}; choose a new --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise FoolbenchError(f"{out} exists and holds no defence.json; choose a new or empty --out")
    record = {
        "settings": settings,
        "iterations_asked": setup.iterations,
        "dataset": setup.kind,
        "labels": setup.labels + [FOOLING],
        "target_classes": setup.classes,
        "clean_accuracy": task.clean_text,
        **task.facts(),
        "class_share": task.SHARE,
        "paper": PAPER[setup.kind],
        "columns": COLUMNS,
        "note": setup.note or None,
        "iterations": [],
    }
    write_json(path, record)
    return record


def _load(spec: str, setup: Setup, k: int):
    from foolbench.resolve import load_model

    return load_model(spec, _options(setup, k))


def _options(setup: Setup, k: int) -> ModelOptions:
    """Iteration 0 loads the model as given; a defended model takes only the options that still fit
    it (its card has the extra label and its own file)."""
    return setup.model_options if k == 0 else setup.model_options.portable()


def _evolve(setup: Setup, out: Path, k: int, r: int, spec: str, model, progress: bool, log) -> Path:
    """One run of iteration k: started, resumed, or reused (if it evolved against this very model file)."""
    from foolbench.runner import RunRequest, ensure_run, run_state

    seed = setup.seed + RUN_SEED_STRIDE * k + r
    run_dir = (k == 0 and setup.reuse.get(r)) or out / f"iter-{k}" / "runs" / f"{setup.preset.name}-s{seed}"
    req = RunRequest(
        models=[spec],
        attack=setup.preset.source,
        scale=setup.scale,
        generations=setup.generations,
        evaluations=setup.evaluations,
        classes=",".join(map(str, setup.classes)),
        seed=seed,
        out=run_dir,
        model_options=_options(setup, k),
        progress=progress,
    )
    state = run_state(req)
    log(
        f"defence: iteration {k}, run {r + 1}/{setup.runs} on {model.name} -> {run_dir}"
        + (f" ({state})" if state else "")
    )
    ensure_run(req)
    return run_dir


def iteration_figures(run_dirs: list[Path], fooling_index: int | None) -> dict:
    """The iteration's row from its runs' results.csv (champions) and summary.json (class counts)."""
    results = pd.concat([rundir.read_results(d) for d in run_dirs], ignore_index=True)
    summaries = [rundir.read_summary(d) for d in run_dirs]
    confidence = results["confidence"].to_numpy(dtype=np.float64)
    fooled = 0.0 if fooling_index is None else float(np.mean(results["top1"].to_numpy() == fooling_index))
    return {
        "runs": len(run_dirs),
        "evaluations": int(sum(s["evaluations"] for s in summaries)),
        "median_confidence": float(np.median(confidence)),
        "mean_confidence": float(np.mean(confidence)),
        "classes_at_99": float(np.mean([s["classes_at_99"] for s in summaries])),
        "classes_at_9999": float(np.mean([s["classes_at_9999"] for s in summaries])),
        "fooled_share": fooled,
    }


def fooling_images(run_dirs: list[Path], channels: int) -> np.ndarray:
    """The distinct champion PNGs of the runs, float32 [N, C, H, W] in [0, 1], in run and class order."""
    runs = [
        as_uint8(np.stack([load_png(d / f, channels) for f in rundir.read_results(d)["file"]]))
        for d in run_dirs
    ]
    return distinct(runs).astype(np.float32) / np.float32(255.0)


def _defended_model(task, setup: Setup, out: Path, k: int, fooling_dirs: list[Path], parent, log):
    """OUT/models/<name>-defended-<k>.onnx, trained with the fooling images so far (reused if already made)."""
    images = fooling_images(fooling_dirs, setup.model.spec.channels)
    digest = images_sha256(images)
    stem = f"{safe_name(setup.model.name)}-defended-{k}"
    path = out / "models" / f"{stem}.onnx"
    facts = {
        "iteration": k,
        "fooling_images": len(images),
        "fooling_images_sha256": digest,
        "defence_seed": setup.seed,
        "parent": parent.name,
        "parent_sha256": sha256_file(parent.path),
        "original": setup.spec,
        "original_sha256": sha256_file(setup.model.path),
        **task.facts(),  # how it was trained (ImageNet: the photos held out of it)
    }
    if path.is_file() and all(_card_extra(path).get(key) == value for key, value in facts.items()):
        log(f"defence: iteration {k}: reusing {path}")
    else:
        log(f"defence: iteration {k}: retraining with {len(images)} fooling images -> {path}")
        task.retrain(images, setup.labels + [FOOLING], stem, facts, path)
    return path, _card_extra(path)  # what the card records, the same whether trained now or before


def _card_extra(path: Path) -> dict:
    from foolbench.models import load_model

    return dict(load_model(str(path)).card.extra)
