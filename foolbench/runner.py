"""One run of an evolutionary attack, from options to a finished run directory.

A run directory is the unit of output and the only thing reports read:
  manifest.json   what was run: preset, options, seed, versions, model path and sha256
  checkpoint/     gen-NNNNNNN.npz (archive, generator state, counters, metrics) + latest.json
  metrics.csv     one row per generation
  champions/      one 8-bit PNG per target class, <class index>_<label>.png
  gallery.png     all champions with label and confidence
  results.csv     class, label, confidence (of the saved PNG, re-scored), generation, top-1
  summary.json    the paper's statistics of the run, plus its cost
Every file is written atomically, so a killed run never leaves a half-written file; `resume`
continues from the last checkpoint and ends with the same archive as an uninterrupted run.
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

from foolbench import __version__
from foolbench.encodings import make_encoding
from foolbench.errors import FoolbenchError
from foolbench.io import atomic_path, read_json, sha256_file, write_json
from foolbench.models.base import DEFAULT_BATCH
from foolbench.presets import Preset, load_preset, parse_classes, preset_from_dict
from foolbench.report.gallery import gallery, load_png, percent, safe_name, save_png
from foolbench.search.archive import confidence_stats
from foolbench.search.map_elites import Budget, MapElites, quantise
from foolbench.zoo import DEFAULT_MODEL

RUNS_DIR = Path("runs")
KEEP_CHECKPOINTS = 2


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
    model_options: dict = field(default_factory=dict)  # arch, labels, card overrides
    progress: bool = True


# -- starting and resuming ---------------------------------------------------------------------------
def start_run(req: RunRequest) -> Path:
    preset = load_preset(req.attack, req.scale)
    specs = req.models or [preset.attack.get("model", DEFAULT_MODEL)]
    model = _load(specs, preset, req.model_options)
    classes = parse_classes(
        req.classes if req.classes is not None else preset.search.get("classes"), model.labels
    )
    budget = _budget(preset, req)
    seed = req.seed if req.seed is not None else preset.search.get("seed", 0)
    engine = _engine(model, preset, classes, seed)  # before the run directory: it may refuse the model
    run_dir = _new_run_dir(req.out, model.name, preset.name, seed)
    manifest = {
        "foolbench": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["foolbench", *sys.argv[1:]]),
        "attack": preset.name,
        "preset": preset.as_dict(),
        "seed": seed,
        "classes": classes,
        "budget": budget.__dict__,
        "checkpoint_every": req.checkpoint_every or preset.search.get("checkpoint_every", 50),
        "models": [_model_record(spec, m, req.model_options) for spec, m in _members(specs, model)],
        "model": model.describe(),
        "versions": _versions(),
    }
    write_json(run_dir / "manifest.json", manifest)
    return _loop(engine, run_dir, manifest, budget, metrics=[], progress=req.progress)


def resume_run(run_dir: Path, req: RunRequest | None = None) -> Path:
    """Continue a killed run from its last checkpoint; budget flags in `req` extend the budget."""
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").is_file():
        raise FoolbenchError(
            f"{run_dir} is not a run directory (no manifest.json); pass the folder a run wrote"
        )
    for stale in run_dir.rglob(".*.tmp"):  # temporaries of writes that a kill interrupted
        stale.unlink(missing_ok=True)
    manifest = read_json(run_dir / "manifest.json")
    preset = preset_from_dict(_preset_tables(manifest["preset"]), manifest["preset"]["source"])
    specs = [r["spec"] for r in manifest["models"]]
    options = manifest["models"][0].get("options", {})
    for record in manifest["models"]:
        if (
            record.get("sha256")
            and Path(record["path"]).is_file()
            and sha256_file(record["path"]) != record["sha256"]
        ):
            raise FoolbenchError(
                f"{record['path']} changed since the run started (sha256 differs); a resumed run "
                "must score with the same model — restore the file or start a new run"
            )
    model = _load(specs, preset, options)
    budget = Budget(**manifest["budget"])
    if req is not None:
        for key in ("generations", "evaluations", "seconds"):
            if getattr(req, key) is not None:
                setattr(budget, key, getattr(req, key))
        manifest["budget"] = budget.__dict__
        write_json(run_dir / "manifest.json", manifest)
    engine = _engine(model, preset, manifest["classes"], manifest["seed"])
    metrics: list[dict] = []
    state = load_checkpoint(run_dir)
    if state is not None:
        engine.load_state(state)
        metrics = json.loads(str(state["metrics"]))
    return _loop(engine, run_dir, manifest, budget, metrics, progress=req.progress if req else True)


def run_or_resume(req: RunRequest) -> tuple[Path, str]:
    """Start, resume or reuse the run at `req.out`, so a killed sweep or experiment just continues.

    Returns the run directory and what was done: 'started', 'resumed' or 'finished' (reused as is).
    """
    state = run_state(Path(req.out), req)
    if state == "finished":
        return Path(req.out), "finished"
    if state == "resuming":
        return resume_run(Path(req.out), req), "resumed"
    return start_run(req), "started"


def run_state(run_dir: Path, req: RunRequest) -> str | None:
    """None: start it; 'finished': reuse it; 'resuming': continue it. Other settings there: refuse.

    The settings compared are those that change the result: attack, seed, budget, first model, classes.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return None
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FoolbenchError(f"{run_dir} exists and is not a run directory; choose a new --out")
    manifest = read_json(manifest_path)
    preset = load_preset(req.attack, req.scale)
    budget = _budget(preset, req).__dict__
    expected = {
        "attack": preset.name,
        "seed": req.seed if req.seed is not None else preset.search.get("seed", 0),
        **budget,
        "spec": req.models[0],
    }
    found = {
        "attack": manifest.get("attack"),
        "seed": manifest.get("seed"),
        **{k: manifest.get("budget", {}).get(k) for k in budget},
        "spec": manifest.get("models", [{}])[0].get("spec"),
    }
    labels = manifest.get("model", {}).get("labels")
    if labels:  # the manifest holds resolved indices; resolve the request the same way to compare
        found["classes"] = manifest.get("classes")
        expected["classes"] = parse_classes(
            req.classes if req.classes is not None else preset.search.get("classes"), labels
        )
    if found != expected:
        diff = ", ".join(
            f"{k} {found[k]!r} (asked {expected[k]!r})" for k in expected if found[k] != expected[k]
        )
        raise FoolbenchError(
            f"{run_dir} holds a run with other settings: {diff}; choose a new --out or delete that run"
        )
    return "finished" if (run_dir / "summary.json").is_file() else "resuming"


def _preset_tables(d: dict) -> dict:
    return {k: d[k] for k in ("attack", "encoding", "search", "evaluation", "gradient") if d.get(k)}


def _load(specs: list[str], preset: Preset, options: dict):
    from foolbench.models import load_models

    """Load the models as the user described them; the preset's evaluation settings fill the gaps."""
    options = {"overrides": {}, **options}
    options["overrides"] = {k: v for k, v in preset.evaluation.items() if k == "crop"} | options["overrides"]
    options.setdefault("batch_size", preset.evaluation.get("batch_size", DEFAULT_BATCH))
    return load_models(specs, **options)


def _members(specs, model):
    members = getattr(model, "members", [model])
    return list(zip(specs, members, strict=True))


def _model_record(spec: str, model, options: dict) -> dict:
    path = model.path
    return {
        "spec": spec,
        "name": model.name,
        "path": str(path) if path else None,
        "sha256": sha256_file(path) if path else None,
        "options": options,
    }


def _budget(preset: Preset, req: RunRequest) -> Budget:
    given = [req.generations, req.evaluations, req.seconds]
    if any(v is not None for v in given):
        return Budget(req.generations, req.evaluations, req.seconds)
    s = preset.search
    budget = Budget(s.get("generations"), s.get("evaluations"), s.get("seconds"))
    if budget.generations is None and budget.evaluations is None and budget.seconds is None:
        raise FoolbenchError(f"{preset.source}: the preset sets no budget; add search.generations")
    return budget


def _engine(model, preset: Preset, classes, seed: int):
    """The search engine the preset names (MapElites or GradientAscent: the same interface)."""
    if preset.method == "gradient":
        from foolbench.search.gradient import GradientAscent

        return GradientAscent(model, np.array(classes), seed, **preset.gradient)
    options = dict(preset.encoding)
    encoding = make_encoding(options.pop("type"), **options)
    batch = preset.search.get("batch", 200)
    return MapElites(model, encoding, np.array(classes), batch, preset.search.get("init", batch), seed)


def _new_run_dir(out: Path | None, model_name: str, attack: str, seed: int) -> Path:
    if out is not None:
        out = Path(out)
        if out.exists() and any(out.iterdir()):
            raise FoolbenchError(f"{out} already exists and is not empty; choose a new --out or --resume it")
        out.mkdir(parents=True, exist_ok=True)
        return out
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = RUNS_DIR / f"{stamp}-{safe_name(model_name)}-{attack}-s{seed}"
    path, n = base, 1
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    path.mkdir(parents=True)
    return path


def _versions() -> dict:
    import onnxruntime
    import torch

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
    }


# -- the loop ----------------------------------------------------------------------------------------
def _loop(
    engine: MapElites, run_dir: Path, manifest: dict, budget: Budget, metrics: list, progress: bool
) -> Path:
    every = manifest["checkpoint_every"]
    seconds0 = metrics[-1]["seconds"] if metrics else 0.0
    t0 = time.perf_counter()
    bar = _progress_bar(budget, engine, progress)
    while engine.generation < 0 or not budget.done(
        engine.generation, engine.evaluations, seconds0 + time.perf_counter() - t0
    ):
        improved = engine.step()
        row = {
            "generation": engine.generation,
            "evaluations": engine.evaluations,
            "seconds": round(seconds0 + time.perf_counter() - t0, 4),
            **engine.stats(),
            "improved": improved,
        }
        metrics.append(row)
        _advance(bar, row)
        if engine.generation % every == 0:
            save_checkpoint(run_dir, engine, metrics)
    if engine.generation % every != 0:  # the last generation was not just checkpointed
        save_checkpoint(run_dir, engine, metrics)
    summary = finish_run(run_dir, engine, manifest, metrics)
    bar.close(_finished(summary))
    return run_dir


def _progress_bar(budget: Budget, engine: MapElites, enabled: bool):
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
def save_checkpoint(run_dir: Path, engine: MapElites, metrics: list) -> None:
    """Write gen-N.npz, then point latest.json at it; keep the previous one as a fallback."""
    folder = run_dir / "checkpoint"
    name = f"gen-{engine.generation:07d}.npz"
    state = {**engine.state(), "metrics": np.array(json.dumps(metrics))}
    with atomic_path(folder / name) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **state)
    latest = folder / "latest.json"
    previous = read_json(latest) if latest.is_file() else None
    entry = {"file": name, "generation": engine.generation, "sha256": sha256_file(folder / name)}
    if previous and previous["file"] != name:
        entry["previous"] = {k: previous[k] for k in ("file", "generation", "sha256")}
    elif previous and "previous" in previous:  # the same generation saved again: keep its fallback
        entry["previous"] = previous["previous"]
    write_json(latest, entry)
    keep = {name, entry.get("previous", {}).get("file")}
    for old in folder.glob("gen-*.npz"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    write_metrics(run_dir, metrics)


def load_checkpoint(run_dir: Path) -> dict | None:
    """The newest intact checkpoint's arrays (falling back to the previous one), or None if none."""
    latest = run_dir / "checkpoint" / "latest.json"
    if not latest.is_file():
        return None
    entry = read_json(latest)
    for candidate in (entry, entry.get("previous")):
        if candidate is None:
            continue
        path = run_dir / "checkpoint" / candidate["file"]
        if path.is_file() and sha256_file(path) == candidate["sha256"]:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        print(f"foolbench: checkpoint {path} is missing or corrupt; trying the previous one", file=sys.stderr)
    raise FoolbenchError(
        f"{run_dir}: no intact checkpoint (checksums differ); start the run again with the same seed"
    )


def write_metrics(run_dir: Path, metrics: list) -> None:
    with atomic_path(run_dir / "metrics.csv") as tmp:
        pd.DataFrame(metrics).to_csv(tmp, index=False)


# -- finishing: champions, results, gallery, summary --------------------------------------------------
def finish_run(run_dir: Path, engine: MapElites, manifest: dict, metrics: list) -> dict:
    """Save champions as 8-bit PNGs, re-score the PNGs from disk, and write the run's results."""
    model, classes, labels = engine.model, engine.classes, engine.model.labels
    images = quantise(engine.encoding.render(engine.archive.champions()))
    folder = run_dir / "champions"
    if folder.exists():
        shutil.rmtree(folder)
    paths = [folder / f"{c}_{safe_name(labels[c])}.png" for c in classes]
    for path, image in zip(paths, images, strict=True):
        save_png(path, image)
    reloaded = np.stack([load_png(p, engine.encoding.channels) for p in paths])
    results = score_images(model, reloaded, classes)
    results.insert(0, "file", [f"champions/{p.name}" for p in paths])
    results["generation"] = engine.archive.generation
    with atomic_path(run_dir / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    captions = [
        f"{labels[c]}\n{percent(conf)}" for c, conf in zip(classes, results["confidence"], strict=True)
    ]
    gallery(list(reloaded), captions, run_dir / "gallery.png")
    summary = summarise(results["confidence"].to_numpy(), metrics, engine, manifest)
    write_json(run_dir / "summary.json", summary)
    return summary


def score_images(model, images: np.ndarray, classes) -> pd.DataFrame:
    """Per image: its target class's confidence, the model's top-1, and each ensemble member's view."""
    classes = np.asarray(classes)
    rows = np.arange(len(classes))
    members = model.member_probs(images) if hasattr(model, "member_probs") else None
    probs = np.mean(members, axis=0) if members is not None else model.probs(images)
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


def summarise(confidences: np.ndarray, metrics: list, engine: MapElites, manifest: dict) -> dict:
    last = metrics[-1]
    first99 = next((m["evaluations"] for m in metrics if m["classes_at_99"] > 0), None)
    return {
        "attack": manifest["attack"],
        "model": manifest["model"]["name"],
        "seed": manifest["seed"],
        "classes": len(confidences),
        **confidence_stats(confidences),
        "evaluations": last["evaluations"],
        "generations": last["generation"],
        "seconds": last["seconds"],
        "evaluations_per_second": round(last["evaluations"] / max(last["seconds"], 1e-9), 2),
        "evaluations_to_first_99": first99,
        "nonfinite_scores": engine.nonfinite,
    }


def summary_table(run_dirs: list[Path]) -> str:
    """A plain-text table of finished runs, for the terminal."""
    rows = []
    for d in run_dirs:
        s = read_json(Path(d) / "summary.json")
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
