"""One run of an attack, from a request to a finished run directory (see `foolbench.rundir`).

`ensure_run` is the one way every command gets a run: it starts it, resumes it from its last
checkpoint, or reuses it when it has finished, after checking that what is there is the run asked
for (`run_state`). A resumed run ends with the same archive as an uninterrupted one.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from foolbench import __version__, rundir
from foolbench.errors import FoolbenchError
from foolbench.fileio import read_json, sha256_file, write_json
from foolbench.images import load_png, save_png
from foolbench.models import ModelOptions
from foolbench.models.device import placement
from foolbench.models.load import as_evaluated
from foolbench.presets import Preset, default_attacks, fit_to_model, load_preset, target_classes
from foolbench.report.gallery import gallery
from foolbench.resolve import backend_of, load_model, load_models, resolve_path
from foolbench.search import Budget, Search, make_search
from foolbench.search.archive import confidence_stats
from foolbench.text import percent
from foolbench.zoo import DEFAULT_MODEL

CACHED_MODELS = 4  # models a ModelCache keeps loaded (a sweep lists its jobs model by model)


@dataclass
class RunRequest:
    """Everything `foolbench run` was asked for, before presets and defaults fill the gaps."""

    models: list[str]
    attack: str
    scale: str = "full"
    generations: int | None = None
    evaluations: int | None = None
    seconds: float | None = None
    classes: str | None = None
    seed: int | None = None
    out: Path | None = None
    checkpoint_every: int | None = None
    model_options: ModelOptions = field(default_factory=ModelOptions)
    progress: bool = True
    preset: Preset | None = None  # the preset itself (fitted to the model: `default_presets`), not `attack`
    command: str | None = None  # what the manifest says was run (default: this process's command line)
    allow_device_change: bool = False  # resume where the run started elsewhere (it then diverges)


class ModelCache:
    """Models loaded once and reused across runs in one process (a sweep's worker). Models are only
    read (probabilities of images), so sharing one across runs cannot change a result."""

    def __init__(self, size: int = CACHED_MODELS):
        self.size = size
        self.models: dict[str, object] = {}

    def load(self, specs: list[str], preset: Preset, options: ModelOptions):
        key = json.dumps([list(specs), preset.evaluation, options.to_json()], sort_keys=True, default=str)
        if key not in self.models:
            if len(self.models) >= self.size:
                self.models.pop(next(iter(self.models)))
            self.models[key] = load_run_models(specs, preset, options)
        return self.models[key]


# -- start, resume or reuse ---------------------------------------------------------------------------
def ensure_run(req: RunRequest, cache: ModelCache | None = None) -> tuple[Path, str]:
    """Start, resume or reuse the run at `req.out`, so a killed sweep or experiment just continues.

    Returns the run directory and what was done: 'started', 'resumed' or 'finished' (reused as is).
    A run with other settings at `req.out` is refused in one line.
    """
    state = run_state(req)
    if state == "finished":
        return Path(req.out), "finished"
    if state == "resuming":
        return resume_run(Path(req.out), req, cache), "resumed"
    return start_run(req, cache), "started"


def run_state(req: RunRequest, preset: Preset | None = None) -> str | None:
    """What `ensure_run` would do at `req.out`: None (start), 'resuming' or 'finished'; a run there
    with other settings (`rundir.identity`) is refused. `preset`: the request's, if already loaded."""
    manifest = rundir.existing_manifest(req.out) if req.out is not None else None
    if manifest is None:  # nothing there yet, or a new folder under runs/ (no --out)
        return None
    return rundir.check_same_run(req.out, manifest, wanted_identity(req, manifest, preset))


def wanted_identity(req: RunRequest, manifest: dict | None = None, preset: Preset | None = None) -> dict:
    """The identity (`rundir.identity`) of the run `req` asks for. Classes are resolved against the
    labels in `manifest` (left out where it has none), so no model needs loading."""
    preset, specs, budget, seed = _plan(req, preset)
    labels = ((manifest or {}).get("model") or {}).get("labels")
    wanted = {
        "attack": preset.name,
        "seed": seed,
        **budget.__dict__,
        "classes": target_classes(req.classes, preset, labels) if labels else None,
        "model": [_sha256(spec) or spec for spec in specs],
        "options": req.model_options.to_json(),
        "settings": rundir.preset_tables(preset.as_dict()),
    }
    return json.loads(json.dumps(wanted, default=str))


def start_run(req: RunRequest, cache: ModelCache | None = None) -> Path:
    preset, specs, budget, seed = _plan(req)
    model = _load(specs, preset, req.model_options, cache)
    classes = target_classes(req.classes, preset, model.labels)
    search = build_search(model, preset, classes, seed)  # before the run directory: it may refuse the model
    check_outputs(model, search.engine.encoding.channels, search.engine.encoding.resolution)
    run_dir = rundir.new_run_dir(req.out, model.name, preset.name, seed)
    with rundir.held(run_dir):  # from its manifest on, no other process writes this run
        manifest = {
            "foolbench": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": req.command or " ".join(["foolbench", *sys.argv[1:]]),
            "attack": preset.name,
            "preset": preset.as_dict(),
            "seed": seed,
            "classes": classes,
            "budget": budget.__dict__,
            "checkpoint_every": req.checkpoint_every or preset.search.get("checkpoint_every", 50),
            "models": [_model_record(spec, m, req.model_options) for spec, m in _members(specs, model)],
            "model": model.describe(),
            "device": placement(model),
            "versions": versions(),
        }
        rundir.write_manifest(run_dir, manifest)
        return _loop(search, run_dir, manifest, budget, metrics=[], progress=req.progress)


def resume_run(run_dir: Path, req: RunRequest | None = None, cache: ModelCache | None = None) -> Path:
    """Continue a killed run from its last checkpoint; budget flags in `req` extend the budget."""
    run_dir = Path(run_dir)
    with rundir.held(run_dir):
        return _resume(run_dir, req, cache)


def _resume(run_dir: Path, req: RunRequest | None, cache: ModelCache | None) -> Path:
    """`resume_run`'s work, once the run is held by this process."""
    manifest = rundir.read_manifest(run_dir)
    rundir.clear_temporaries(run_dir)
    preset = rundir.manifest_preset(manifest)
    rundir.check_model_files(manifest, "a resumed run")
    model = _load(rundir.model_specs(manifest), preset, rundir.model_options(manifest), cache)
    _check_device(run_dir, manifest, model, req)
    budget = Budget(**manifest["budget"])
    if req is not None:
        for key in rundir.BUDGET_KEYS:
            if getattr(req, key) is not None:
                setattr(budget, key, getattr(req, key))
        manifest["budget"] = budget.__dict__
        rundir.write_manifest(run_dir, manifest)
    search = build_search(model, preset, manifest["classes"], manifest["seed"])
    metrics: list[dict] = []
    state = rundir.load_checkpoint(run_dir)
    if state is not None:
        search.load_state(state)
        metrics = rundir.checkpoint_metrics(state)
    return _loop(search, run_dir, manifest, budget, metrics, progress=req.progress if req else True)


def _check_device(run_dir: Path, manifest: dict, model, req: RunRequest | None) -> None:
    """A run continues bit for bit only where it started (device, provider, GPU): elsewhere it is
    refused in one line, unless the request accepts that it diverges, which the manifest then records."""
    from foolbench.models.device import describe_placement, same_placement

    recorded, now = manifest.get("device"), placement(model)
    if same_placement(recorded, now):
        return
    was, is_now = describe_placement(recorded), describe_placement(now)
    if req is None or not req.allow_device_change:
        hint = " (--device cpu)" if now["torch_device"] != "cpu" or "CUDA" in str(now["provider"]) else ""
        raise FoolbenchError(
            f"{run_dir} was started on {was} and would continue on {is_now}, so it would not end as "
            f"an uninterrupted run does; resume it where it started{hint}, or accept that it diverges: "
            f"foolbench run --resume {run_dir} --allow-device-change"
        )
    latest = run_dir / rundir.CHECKPOINTS / rundir.LATEST
    generation = read_json(latest).get("generation") if latest.is_file() else None
    change = {"from": recorded, "to": now, "after_generation": generation}
    manifest["device_changes"] = [*manifest.get("device_changes", []), change]
    manifest["device"] = now
    rundir.write_manifest(run_dir, manifest)


def _plan(req: RunRequest, preset: Preset | None = None) -> tuple[Preset, list[str], Budget, int]:
    """The preset, model specs, budget and seed a request comes to, before any model is loaded."""
    preset = (preset or req.preset or load_preset(req.attack, req.scale)).planned(req.evaluations)
    specs = list(req.models) or [preset.attack.get("model", DEFAULT_MODEL)]
    seed = req.seed if req.seed is not None else preset.search.get("seed", 0)
    return preset, specs, _budget(preset, req), seed


def check_outputs(model, channels: int, side: int) -> None:
    """Refuse, before anything is written, a model that returns NaN or infinity for every image: a
    run on it would have nothing to compare (one image that does is scored 0 and counted instead)."""
    rng = np.random.default_rng(0)
    images = rng.random((4, channels, side, side), dtype=np.float32)
    images[0] = 0.5  # a flat grey image too
    if not np.isfinite(model.probs(images)).any():
        raise FoolbenchError(
            f"{model.name} returns NaN or infinity for every image it was given (4 test images); "
            "nothing can be scored on it: check the model's export (e.g. with onnxruntime on a real image)"
        )


def resolve_scale(scale: str | None, models: list[str] | None = None) -> str:
    """A preset scale as the user gave it: full, cpu, or auto/None: full where the (first) model
    scores on a GPU as obtained here, not merely where one is present (`device.scores_on_gpu`)."""
    if scale not in (None, "auto"):
        return scale
    from foolbench.models.device import scores_on_gpu

    spec = (list(models or []) or [DEFAULT_MODEL])[0]
    return "full" if scores_on_gpu(backend_of(spec)) else "cpu"


def default_presets(specs: list[str], options: ModelOptions, scale: str) -> list[Preset]:
    """The presets a run gets when the user names none, chosen by the (first) model's card or input
    (`presets.default_attacks`) and drawing images at its own side (`presets.fit_to_model`)."""
    model = load_model((list(specs) or [DEFAULT_MODEL])[0], options)
    return [fit_to_model(load_preset(name, scale), model) for name in default_attacks(model)]


def _sha256(spec: str) -> str | None:
    path = resolve_path(spec)
    return sha256_file(path) if path is not None else None


def load_run_models(specs: list[str], preset: Preset, options: ModelOptions):
    """The models as the user described them; the preset's evaluation settings fill the gaps."""
    return as_evaluated(load_models(specs, options), preset.evaluation, options)


def _load(specs: list[str], preset: Preset, options: ModelOptions, cache: ModelCache | None):
    return (
        cache.load(specs, preset, options) if cache is not None else load_run_models(specs, preset, options)
    )


def _members(specs, model):
    members = getattr(model, "members", [model])
    return list(zip(specs, members, strict=True))


def _model_record(spec: str, model, options: ModelOptions) -> dict:
    path = model.path
    return {
        "spec": spec,
        "name": model.name,
        "path": str(path) if path else None,
        "sha256": sha256_file(path) if path else None,
        "options": options.to_json(),
    }


def _budget(preset: Preset, req: RunRequest) -> Budget:
    return preset.budget(req.generations, req.evaluations, req.seconds)


def build_search(model, preset: Preset, classes, seed: int) -> Search:
    """The search engine the preset's attack.method names, scored on `model`."""
    return make_search(model, preset.method, classes, seed, preset.tables)


def versions() -> dict:
    """The versions a manifest records (results are bit-identical only on the same ones)."""
    import onnxruntime
    import torch

    from foolbench.models.device import library_versions

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        **library_versions(),
        "platform": platform.platform(),
    }


# -- the loop ----------------------------------------------------------------------------------------
def _loop(
    search: Search, run_dir: Path, manifest: dict, budget: Budget, metrics: list, progress: bool
) -> Path:
    every = manifest["checkpoint_every"]
    seconds0 = metrics[-1]["seconds"] if metrics else 0.0
    t0 = time.perf_counter()
    bar = _progress_bar(budget, search, progress)
    snapshots = manifest["preset"].get("search", {}).get("snapshots", [])
    while not budget.reached(search, seconds0 + time.perf_counter() - t0):
        before = search.queries
        improved = search.step()
        row = {
            "generation": search.generation,
            "evaluations": search.evaluations,
            "queries": search.queries,
            "seconds": round(seconds0 + time.perf_counter() - t0, 4),
            **search.stats(),
            "improved": improved,
        }
        metrics.append(row)
        _advance(bar, row)
        crossed = [q for q in snapshots if before < q <= search.queries]
        if crossed:  # one step may pass several counts: the champions then are the same
            write_snapshot(run_dir, search, crossed[0])
        if search.generation % every == 0:
            _checkpoint(run_dir, search, metrics)
    if search.generation % every != 0:  # the last generation was not just checkpointed
        _checkpoint(run_dir, search, metrics)
    summary = finish_run(run_dir, search, manifest, metrics)
    bar.close(_finished(summary))
    return run_dir


def _progress_bar(budget: Budget, engine: Search, enabled: bool):
    """A bar on a terminal; elsewhere one line when the run ends (foolbench.progress)."""
    from foolbench.progress import Progress

    if budget.generations is not None:
        return Progress(budget.generations + 1, engine.generation + 1, "gen", enabled)
    return Progress(budget.evaluations, engine.evaluations, "eval", enabled)


def _advance(bar, row: dict) -> None:
    rate = row["evaluations"] / max(row["seconds"], 1e-9)
    bar.advance_to(
        row["generation"] + 1 if bar.unit == "gen" else row["evaluations"],
        f"gen {row['generation']} | {rate:,.0f} eval/s | median {percent(row['median_confidence'])} "
        f"| best {percent(row['max_confidence'])} | >=99%: {row['classes_at_99']}",
    )


def _finished(s: dict) -> str:
    """The run in one line, for logs: what, on which model, how much, how long, how far."""
    return (
        f"foolbench: {s['attack']} on {s['model']}: {s['evaluations']:,} evaluations in {s['seconds']:.1f} s, "
        f"median {percent(s['median_confidence'])}, {s['classes_at_99']} of {s['classes']} classes >= 99%"
    )


# -- checkpoints -------------------------------------------------------------------------------------
def _checkpoint(run_dir: Path, search: Search, metrics: list) -> None:
    rundir.save_checkpoint(run_dir, search.generation, search.state(), metrics)


# -- finishing: champions, results, gallery, summary --------------------------------------------------
def finish_run(run_dir: Path, search: Search, manifest: dict, metrics: list) -> dict:
    """Save champions as 8-bit PNGs, re-score the PNGs from disk, and write the run's results."""
    model, classes, labels = search.evaluator.model, search.engine.classes, search.evaluator.model.labels
    reloaded, results = save_champions(run_dir, search)
    found = _lookalikes(model, reloaded, classes)
    if found is not None:
        results["lookalike"] = found.table["lookalike"].to_numpy()
        results["lookalike_distance"] = found.table["distance"].round(6).to_numpy()
        _lookalike_gallery(run_dir, reloaded, found, [labels[c] for c in classes])
    rundir.write_results(run_dir, results)
    captions = [
        f"{labels[c]}\n{percent(conf)}" for c, conf in zip(classes, results["confidence"], strict=True)
    ]
    gallery(list(reloaded), captions, run_dir / rundir.GALLERY)
    summary = summarise(results["confidence"].to_numpy(), metrics, search, manifest)
    if found is not None:
        fooled = results["confidence"].to_numpy() >= 0.99
        summary["lookalike_share"] = found.share
        summary["lookalike_classes"] = [int(c) for c in found.table["class"][found.table["lookalike"]]]
        summary["fooled_99_not_lookalike"] = int((fooled & ~found.table["lookalike"].to_numpy()).sum())
    rundir.write_summary(run_dir, summary)
    return summary


def save_champions(folder: Path, search: Search) -> tuple[np.ndarray, pd.DataFrame]:
    """Each target class's champion as an 8-bit PNG in FOLDER/champions/, re-scored from disk: the
    images as reloaded, and one row per class (file, confidence, top-1, generation found)."""
    engine, model = search.engine, search.evaluator.model
    genomes, found_at = engine.champions()
    images = search.evaluator.images(genomes)
    if (folder / rundir.CHAMPIONS).exists():
        shutil.rmtree(folder / rundir.CHAMPIONS)
    files = [rundir.champion_file(c, model.labels[c]) for c in engine.classes]
    for file, image in zip(files, images, strict=True):
        save_png(folder / file, image)
    reloaded = np.stack([load_png(folder / f, engine.encoding.channels) for f in files])
    results = score_images(model, reloaded, engine.classes)
    results.insert(0, "file", files)
    results["generation"] = found_at
    return reloaded, results


def write_snapshot(run_dir: Path, search: Search, point: int) -> None:
    """The champions as they are now, in snapshots/q<point>/ (written whole, then renamed into place).

    A resumed run replays the generations after its checkpoint and reaches the same champions, so
    a snapshot already there is kept as it is."""
    final = rundir.snapshot_dir(run_dir, point)
    if final.is_dir():
        return
    tmp = final.with_name(f".tmp-{final.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    _, results = save_champions(tmp, search)
    rundir.write_results(tmp, results)
    info = {"queries": search.queries, "evaluations": search.evaluations, "generation": search.generation}
    write_json(tmp / rundir.SNAPSHOT, info | {"snapshot": point})
    tmp.rename(final)


def _lookalikes(model, champions: np.ndarray, classes):
    """Each champion against the real images of its class (foolbench.lookalike), where the model
    says its classes are MNIST's digits (its card's dataset) and the champions are digit-sized;
    None elsewhere: without real images of the classes, nothing can say what a class looks like."""
    card = getattr(model, "card", None)
    if card is None or (card.dataset or "").lower() != "mnist" or champions.shape[1:] != (1, 28, 28):
        return None
    if int(np.max(classes)) > 9:  # a defended model's "fooling" class has no real images
        return None
    from foolbench.lookalike import compare, mnist_reference

    return compare(champions, classes, mnist_reference())


def _lookalike_gallery(run_dir: Path, champions: np.ndarray, found, labels: list[str]) -> None:
    """Each row of champions above a row of their nearest real images of the target class, captioned
    with the distance and the class's threshold, so a reader can judge the verdict by eye."""
    images, captions = [], []
    for start in range(0, len(champions), 10):
        rows = found.table.iloc[start : start + 10]
        images += list(champions[start : start + 10])
        captions += [
            f"{label}\n{'look-alike' if r.lookalike else 'not alike'}"
            for label, r in zip(labels[start : start + 10], rows.itertuples(), strict=True)
        ]
        images += list(found.nearest[start : start + 10])
        captions += [f"nearest real\nd {r.distance:.2f} / {r.threshold:.2f}" for r in rows.itertuples()]
    gallery(images, captions, run_dir / rundir.LOOKALIKES)


def score_images(model, images: np.ndarray, classes) -> pd.DataFrame:
    """Per image: its target class's confidence, the model's top-1, and each ensemble member's view."""
    classes = np.asarray(classes)
    rows = np.arange(len(classes))
    members = model.member_probs(images) if hasattr(model, "member_probs") else None
    probs = np.mean(members, axis=0) if members is not None else model.probs(images)
    probs = np.where(np.isfinite(probs), probs, 0.0)  # as the evaluator scores them (search.engine)
    top = probs.argmax(1)
    df = pd.DataFrame(
        {
            "class": classes,
            "label": [model.labels[c] for c in classes],
            "confidence": probs[rows, classes],
            "top1": top,
            "top1_label": [model.labels[t] for t in top],
            "top1_confidence": probs[rows, top],
        }
    )
    for member, p in zip(getattr(model, "members", []), members or [], strict=True):
        df[f"confidence_{member.name}"] = p[rows, classes]
    return df


def summarise(confidences: np.ndarray, metrics: list, search: Search, manifest: dict) -> dict:
    last = metrics[-1]
    first99 = next((m["evaluations"] for m in metrics if m["classes_at_99"] > 0), None)
    return {
        "attack": manifest["attack"],
        "model": manifest["model"]["name"],
        "seed": manifest["seed"],
        "classes": len(confidences),
        **confidence_stats(confidences),
        "evaluations": last["evaluations"],
        "queries": search.queries,
        "generations": last["generation"],
        "seconds": last["seconds"],
        "evaluations_per_second": round(last["evaluations"] / max(last["seconds"], 1e-9), 2),
        "evaluations_to_first_99": first99,
        "nonfinite_scores": search.nonfinite,
    }


def summary_table(run_dirs: list[Path]) -> str:
    """A plain-text table of finished runs, for the terminal."""
    rows = []
    for d in run_dirs:
        s = rundir.read_summary(d)
        rows.append(
            {
                "attack": s["attack"],
                "model": s["model"],
                "evals": s["evaluations"],
                "median": percent(s["median_confidence"]),
                "mean": percent(s["mean_confidence"]),
                ">=90%": s["classes_at_90"],
                ">=99%": s["classes_at_99"],
                ">=99.99%": s["classes_at_9999"],
                "classes": s["classes"],
                "eval/s": f"{s['evaluations_per_second']:,.0f}",
            }
        )
    return pd.DataFrame(rows).to_string(index=False)
