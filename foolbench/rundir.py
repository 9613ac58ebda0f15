"""The run directory: the unit of output, and the only thing reports read. Everything about its
files is decided here.

  manifest.json   what was run: preset, options, seed, classes, budget, versions, models and sha256s
  checkpoint/     gen-NNNNNNN.npz (the search's state and the metrics so far) + latest.json
  metrics.csv     one row per generation
  champions/      one 8-bit PNG per target class, <class index>_<label>.png
  gallery.png     all champions with label and confidence
  results.csv     file, class, label, confidence (of the saved PNG, re-scored), top-1, generation
  summary.json    the paper's statistics of the run, plus its cost
  snapshots/      where the preset asks for them (`search.snapshots`): q<queries>/ holds the champions
                  as they were when the run's model queries first reached that count (champions/,
                  results.csv, snapshot.json), so a score can read the run's progress image by image

Every file is written atomically (a killed run never leaves a half-written one), and one process at a
time writes a run (`held`: a second one is refused, not let in to interleave checkpoints). A run is
"the same run" as a request when everything that changes its result agrees (`identity`): this is
the one check behind resuming, reusing and merging runs, in every command that does so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from foolbench.errors import FoolbenchError
from foolbench.fileio import atomic_path, read_json, sha256_file, write_json
from foolbench.images import load_png
from foolbench.models.load import ModelOptions
from foolbench.presets import Preset, preset_from_dict
from foolbench.text import safe_name

RUNS_DIR = Path("runs")  # where `foolbench run` puts a run given no --out
MANIFEST = "manifest.json"
CHECKPOINTS = "checkpoint"
LATEST = "latest.json"
METRICS = "metrics.csv"
CHAMPIONS = "champions"
GALLERY = "gallery.png"
LOOKALIKES = "lookalikes.png"  # champions above their nearest real image of the class (MNIST models)
RESULTS = "results.csv"
SUMMARY = "summary.json"
SNAPSHOTS = "snapshots"
SNAPSHOT = "snapshot.json"
BUDGET_KEYS = ("generations", "evaluations", "seconds")


# -- where -----------------------------------------------------------------------------------------------
def new_run_dir(out: Path | None, model_name: str, attack: str, seed: int) -> Path:
    """`out` (which must be new or empty), else runs/<time>-<model>-<attack>-s<seed>; created."""
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


@contextlib.contextmanager
def held(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` while this process writes it, so that a second foolbench process starting or
    resuming the same run (the same command in two terminals, two sweeps sharing a folder) is
    refused in one line instead of both writing its checkpoints and metrics. An advisory lock on the
    folder (flock) that the system drops when the process ends, so a killed run can be resumed at
    once; where the file system or platform has no flock (Windows, some network mounts) nothing is
    held."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        fcntl = None
    if fcntl is None or not Path(run_dir).is_dir():  # no folder: the caller's own checks say so
        yield
        return
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FoolbenchError(
            f"{run_dir} is being written by another foolbench process; let it finish (or stop it and "
            "run this again, which resumes it), or choose another --out"
        ) from None
    except OSError:  # no locks on this file system: go on unheld
        pass
    try:
        yield
    finally:
        os.close(fd)  # closing the folder drops the lock


def champion_file(cls: int, label: str) -> str:
    """A champion's PNG, relative to the run directory (labels never become paths)."""
    return f"{CHAMPIONS}/{cls}_{safe_name(label)}.png"


def is_run_dir(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def is_finished(path: Path) -> bool:
    return (Path(path) / SUMMARY).is_file()


# -- readers ---------------------------------------------------------------------------------------------
def read_manifest(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise FoolbenchError(
            f"{run_dir} is not a run directory (no {MANIFEST}); pass a folder written by 'foolbench run'"
        )
    return read_json(run_dir / MANIFEST)


def read_summary(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    if not is_finished(run_dir):
        raise FoolbenchError(
            f"{run_dir} has not finished (no {SUMMARY}); finish it with 'foolbench run --resume {run_dir}'"
        )
    return read_json(run_dir / SUMMARY)


def read_results(run_dir: Path) -> pd.DataFrame:
    """results.csv, labels and file names as text (a label such as 'NA' stays a label)."""
    return pd.read_csv(
        Path(run_dir) / RESULTS, dtype={"label": str, "file": str}, keep_default_na=False, na_filter=False
    )


def read_metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / METRICS)


@dataclass
class Snapshot:
    """The champions of a run at one point: after `queries` model queries (the run's end for the last)."""

    folder: Path  # holds champions/ and results.csv
    queries: int
    evaluations: int
    generation: int
    results: pd.DataFrame

    def images(self, channels: int) -> np.ndarray:
        """The champion PNGs, float32 [N, C, H, W] in [0, 1], in the order of `results`."""
        return np.stack([load_png(self.folder / f, channels) for f in self.results["file"]])


def snapshot_dir(run_dir: Path, queries: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"q{queries:010d}"


def read_snapshots(run_dir: Path) -> list[Snapshot]:
    """A finished run's snapshots in order of queries, its end last (from results.csv and summary.json).

    Only runs whose summary counts queries (foolbench after query counting came in) can be read."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    if "queries" not in summary:
        raise FoolbenchError(
            f"{run_dir} was made before runs counted model queries; run it again to score it this way"
        )
    found = []
    for folder in sorted((run_dir / SNAPSHOTS).glob("q*")):
        info = read_json(folder / SNAPSHOT)
        found.append(
            Snapshot(folder, info["queries"], info["evaluations"], info["generation"], read_results(folder))
        )
    end = Snapshot(
        run_dir, summary["queries"], summary["evaluations"], summary["generations"], read_results(run_dir)
    )
    return [s for s in found if s.queries < end.queries] + [end]


def preset_tables(preset: dict) -> dict:
    """The tables of a preset as a manifest records it (`Preset.as_dict`), without where it came from."""
    return {k: v for k, v in preset.items() if k not in ("name", "source", "scale") and v}


def manifest_preset(manifest: dict) -> Preset:
    """The preset a run was made with, exactly as it ran (from its manifest, not from the file)."""
    return preset_from_dict(preset_tables(manifest["preset"]), manifest["preset"]["source"])


def model_specs(manifest: dict) -> list[str]:
    return [record["spec"] for record in manifest["models"]]


def model_options(manifest: dict) -> ModelOptions:
    return ModelOptions.from_json(manifest["models"][0].get("options"))


def check_model_files(manifest: dict, doing: str) -> None:
    """Each model file the run recorded must still be the file it used (sha256), to keep scoring it."""
    for record in manifest["models"]:
        path = record.get("path")
        if record.get("sha256") and path and Path(path).is_file() and sha256_file(path) != record["sha256"]:
            raise FoolbenchError(
                f"{path} changed since the run started (sha256 differs); {doing} must score with the same "
                "model — restore the file or start a new run"
            )


@dataclass
class Champions:
    """A finished run's champion PNGs, as transfer and the baseline read them."""

    path: Path
    source: str  # the run's model name (manifest)
    attack: str
    files: list[str]  # relative to the run directory
    classes: np.ndarray
    confidences: np.ndarray  # results.csv: the source model's confidence of each PNG
    num_classes: int
    labels: dict[int, str]  # the class labels the run knows (all, if its manifest lists them)
    channels: int
    crop: str | None

    def images(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The champion PNGs [start:stop] as float32 [N, C, H, W] in [0, 1]."""
        return np.stack([load_png(self.path / f, self.channels) for f in self.files[start:stop]])


def read_champions(run_dir: str | Path) -> Champions:
    """The champions of a finished run directory (manifest.json + results.csv + champions/)."""
    path = Path(run_dir)
    manifest = read_manifest(path)
    if not (path / RESULTS).is_file():
        raise FoolbenchError(
            f"{path}: the run has no {RESULTS}, so it has not finished; "
            f"finish it with 'foolbench run --resume {path}'"
        )
    results = read_results(path)
    missing = {"file", "class", "label", "confidence"} - set(results.columns)
    if missing:
        raise FoolbenchError(f"{path}/{RESULTS} lacks the columns {', '.join(sorted(missing))}")
    if results.empty:
        raise FoolbenchError(f"{path}/{RESULTS} lists no champions; the run has nothing to transfer")
    for f in results["file"]:
        if not (path / f).is_file():
            raise FoolbenchError(f"{path}: the champion {f} named in {RESULTS} is missing")
    model = manifest.get("model", {})
    labels = {int(c): str(lab) for c, lab in zip(results["class"], results["label"], strict=True)}
    full = model.get("labels") or manifest.get("labels")
    if full:
        labels = {i: str(lab) for i, lab in enumerate(full)}
    preset = manifest.get("preset", {})
    return Champions(
        path=path,
        source=str(model.get("name") or manifest["models"][0]["name"]),
        attack=str(manifest.get("attack", preset.get("name", "?"))),
        files=list(results["file"]),
        classes=results["class"].to_numpy(dtype=np.int64),
        confidences=results["confidence"].to_numpy(dtype=np.float64),
        num_classes=int(model.get("classes") or len(full or []) or max(labels) + 1),
        labels=labels,
        channels=int(preset.get("encoding", {}).get("channels", 0))
        or _png_channels(path / results["file"][0]),
        crop=preset.get("evaluation", {}).get("crop"),
    )


def _png_channels(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as img:
        return 1 if img.mode in ("L", "I", "I;16", "1") else 3


# -- the same run? -----------------------------------------------------------------------------------------
def identity(manifest: dict) -> dict:
    """What decides a run's result, as its manifest records it: compare two of these to know whether
    two runs (or a run and a request, see `runner.run_state`) are the same run. A model is its file's
    sha256 (wherever the file lives), or its spec where it has no file (a factory)."""
    models = manifest.get("models") or [{}]
    found = {
        "attack": manifest.get("attack"),
        "seed": manifest.get("seed"),
        **{key: (manifest.get("budget") or {}).get(key) for key in BUDGET_KEYS},
        "classes": manifest.get("classes"),
        "model": [record.get("sha256") or record.get("spec") for record in models],
        "options": ModelOptions.from_json(models[0].get("options")).to_json(),
        "settings": preset_tables(manifest.get("preset") or {}),
    }
    return json.loads(json.dumps(found, default=str))  # as JSON stores it: tuples are lists


def differences(found: dict, wanted: dict, keys=None, versus: str = "asked") -> list[str]:
    """The entries of two identities that differ (among `keys`), each as a few words for a message:
    `key <found> (<versus> <wanted>)`."""
    out = []
    for key in keys or wanted:
        a, b = found.get(key), wanted.get(key)
        if a == b:
            continue
        if key == "settings":
            out.append("other attack settings (the preset or protocol file changed?)")
        elif key == "model":
            out.append(f"another model file ({_short(a)}, {versus} {_short(b)})")
        else:
            out.append(f"{key} {a!r} ({versus} {b!r})")
    return out


def _short(models) -> str:
    return ", ".join(str(m)[:12] for m in models or [])


def existing_manifest(run_dir: Path) -> dict | None:
    """The manifest of the run at `run_dir`; None where nothing is there yet (no folder, or empty)."""
    run_dir = Path(run_dir)
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return None
    if not is_run_dir(run_dir):
        raise FoolbenchError(f"{run_dir} exists and is not a run directory; write to another folder")
    return read_json(run_dir / MANIFEST)


def check_same_run(run_dir: Path, manifest: dict, wanted: dict) -> str:
    """'finished' (reuse it) or 'resuming' (continue it) when the run there has the identity
    `wanted` (entries left out or None are not compared); another run is refused in one line."""
    found = identity(manifest)
    keys = [key for key, value in wanted.items() if value is not None or key in BUDGET_KEYS]
    diff = differences(found, wanted, keys)
    if diff:
        raise FoolbenchError(
            f"{run_dir} holds a run with other settings: {', '.join(diff)}; delete that run or write to "
            "another folder"
        )
    return "finished" if is_finished(run_dir) else "resuming"


# -- checkpoints -------------------------------------------------------------------------------------------
def clear_temporaries(run_dir: Path) -> None:
    """Delete the temporaries of writes that a kill interrupted."""
    for stale in Path(run_dir).rglob(".*.tmp"):
        stale.unlink(missing_ok=True)


def save_checkpoint(run_dir: Path, generation: int, state: dict[str, np.ndarray], metrics: list) -> None:
    """Write gen-N.npz (the state and the metrics so far), then point latest.json at it; keep the
    previous one as a fallback; then metrics.csv."""
    folder = Path(run_dir) / CHECKPOINTS
    name = f"gen-{generation:07d}.npz"
    state = {**state, "metrics": np.array(json.dumps(metrics))}
    with atomic_path(folder / name) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **state)
    latest = folder / LATEST
    previous = read_json(latest) if latest.is_file() else None
    entry = {"file": name, "generation": generation, "sha256": sha256_file(folder / name)}
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
    latest = Path(run_dir) / CHECKPOINTS / LATEST
    if not latest.is_file():
        return None
    entry = read_json(latest)
    for candidate in (entry, entry.get("previous")):
        if candidate is None:
            continue
        path = Path(run_dir) / CHECKPOINTS / candidate["file"]
        if path.is_file() and sha256_file(path) == candidate["sha256"]:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        print(f"foolbench: checkpoint {path} is missing or corrupt; trying the previous one", file=sys.stderr)
    raise FoolbenchError(
        f"{run_dir}: no intact checkpoint (checksums differ); start the run again with the same seed"
    )


def checkpoint_metrics(state: dict[str, np.ndarray]) -> list[dict]:
    return json.loads(str(state["metrics"]))


def write_metrics(run_dir: Path, metrics: list) -> None:
    with atomic_path(Path(run_dir) / METRICS) as tmp:
        pd.DataFrame(metrics).to_csv(tmp, index=False)


def write_results(run_dir: Path, results: pd.DataFrame) -> None:
    with atomic_path(Path(run_dir) / RESULTS) as tmp:
        results.to_csv(tmp, index=False)


def write_summary(run_dir: Path, summary: dict) -> None:
    write_json(Path(run_dir) / SUMMARY, summary)


def write_manifest(run_dir: Path, manifest: dict) -> None:
    write_json(Path(run_dir) / MANIFEST, manifest)
