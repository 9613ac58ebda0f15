"""Find and read everything a report shows: run directories, transfer, defence and baseline folders.

The report reads files only (it never loads a model), and reads all of them before it writes
anything, so that a corrupt or missing input stops it with one line naming the file and leaves the
output folder as it was.

Recognised folders (searched recursively under each path given):
  run directory     manifest.json + summary.json (+ results.csv, metrics.csv, champions/)
                    a manifest without summary.json is an unfinished run: skipped with a warning
  transfer folder   transfer.csv + transfer.json + matrix_*.csv (`foolbench transfer`)
  defence folder    defence.csv (`foolbench defend`)
  baseline folder   baseline.json (`foolbench baseline`)
  ratings folder    ratings.csv (`foolbench rate --out`; a run's own ratings.csv is read with the run)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from foolbench.errors import FoolbenchError
from foolbench.images import load_png
from foolbench.text import safe_name

GALLERY_LIMIT = 100  # champions shown per run; ImageNet runs have 1000, the page shows the most confident
SUMMARY_KEYS = ("attack", "model", "median_confidence", "mean_confidence", "evaluations")


@dataclass
class Run:
    """A finished run directory as the report needs it."""

    path: Path
    key: str  # unique and safe_name()'d: names this run's files in the report
    manifest: dict
    summary: dict
    results: pd.DataFrame  # results.csv, labels as text
    metrics: pd.DataFrame  # metrics.csv
    gallery: list[np.ndarray]  # champion images shown, float32 [C, H, W]
    gallery_rows: list[int]  # their rows in `results`
    title: str = ""  # model · attack · seed, and the key where that is not unique

    def __post_init__(self):
        s = self.summary
        self.title = self.title or f"{s['model']} · {s['attack']} · seed {s.get('seed', '?')}"

    @property
    def attack(self) -> str:
        return str(self.summary["attack"])

    @property
    def model(self) -> str:
        return str(self.summary["model"])

    @property
    def seed(self):
        return self.summary.get("seed")

    @property
    def method(self) -> str:
        """The preset's [attack] method: map-elites, gradient, patch or gradient-cppn."""
        return str(self._preset("attack").get("method") or "map-elites")

    @property
    def encoding(self) -> str:
        """direct or cppn for evolution; empty for gradient ascent."""
        return "" if self.method == "gradient" else str(self._preset("encoding").get("type") or "")

    @property
    def dataset(self) -> str:
        """The model's dataset (its card's), else the one the attack was made for (the preset's), else
        'other': an ImageNet preset run on a digit model is a digit experiment."""
        model = self.manifest.get("model")
        card = model.get("dataset") if isinstance(model, dict) else None
        return str(card or self._preset("attack").get("dataset") or "other").lower()

    @property
    def ensemble(self) -> bool:
        models = self.manifest.get("models")
        return isinstance(models, list) and len(models) > 1

    def _preset(self, table: str) -> dict:
        preset = self.manifest.get("preset")
        value = preset.get(table) if isinstance(preset, dict) else None
        return value if isinstance(value, dict) else {}


@dataclass
class Transfer:
    """A `foolbench transfer` output folder: the long table and one matrix per statistic."""

    path: Path
    key: str
    table: pd.DataFrame
    matrices: dict[str, pd.DataFrame]  # statistic -> source x target
    meta: dict  # transfer.json
    images: pd.DataFrame | None = None  # images.csv: every champion on every target, where written
    experiment: dict = field(default_factory=dict)  # experiment.json of `foolbench experiment transfer-*`
    root: Path | None = None  # that experiment's folder, which also holds its runs


@dataclass
class Defence:
    path: Path
    key: str
    table: pd.DataFrame
    meta: dict = field(default_factory=dict)  # defence.json, where written


@dataclass
class Baseline:
    path: Path
    key: str
    result: dict


@dataclass
class Inputs:
    runs: list[Run] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    defences: list[Defence] = field(default_factory=list)
    baselines: list[Baseline] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # unfinished runs
    ratings: list[Path] = field(default_factory=list)  # ratings.csv outside run directories (`rate --out`)

    def empty(self) -> bool:
        return not (self.runs or self.transfers or self.defences or self.baselines)


def collect(paths: Sequence[str | Path], warn: Callable[[str], None] | None = None) -> Inputs:
    """Read every recognised folder under `paths`; raise FoolbenchError on the first bad one."""
    if warn is None:
        warn = _stderr
    if not paths:
        raise FoolbenchError("no input given; pass run directories or folders that contain them")
    inputs, seen, keys = Inputs(), set(), set()
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise FoolbenchError(f"{root} does not exist; pass run directories or folders that contain them")
        if not root.is_dir():
            raise FoolbenchError(f"{root} is a file; pass the folder that holds it")
        before = _count(inputs)
        for folder in _folders(root):
            if folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            _read_folder(folder, inputs, keys, warn)
        if _count(inputs) == before:
            raise FoolbenchError(
                f"{root}: no finished run, transfer, defence or baseline results found in it "
                f"(a run directory holds manifest.json and summary.json)"
            )
    titles = [r.title for r in inputs.runs]
    for run in inputs.runs:
        if titles.count(run.title) > 1:
            run.title = f"{run.title} · {run.key}"
    return inputs


def _stderr(message: str) -> None:
    print(f"foolbench: {message}", file=sys.stderr)


def _count(inputs: Inputs) -> int:
    return sum(
        len(x)
        for x in (
            inputs.runs,
            inputs.transfers,
            inputs.defences,
            inputs.baselines,
            inputs.skipped,
            inputs.ratings,
        )
    )


def _folders(root: Path):
    """Every folder under root, in name order, without descending into run directories."""
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))  # .venv, .git: no results there
        if "manifest.json" in files:
            subdirs.clear()  # champions/ and checkpoint/ hold nothing a report reads
        yield Path(folder)


def _read_folder(folder: Path, inputs: Inputs, keys: set, warn) -> None:
    names = {p.name for p in folder.iterdir() if p.is_file()}
    if "manifest.json" in names:
        if "summary.json" not in names:
            warn(f"{folder}: skipped, the run has not finished (no summary.json); resume it first")
            inputs.skipped.append(folder)
            return
        inputs.runs.append(read_run(folder, _key(folder, keys)))
    elif "ratings.csv" in names:  # people's ratings of runs (`foolbench rate --out`); a run's own are its
        inputs.ratings.append(folder / "ratings.csv")
    if {"transfer.csv", "transfer.json"} <= names:
        inputs.transfers.append(read_transfer(folder, _key(folder, keys)))
    if "defence.csv" in names:
        meta = _json(folder / "defence.json") if "defence.json" in names else {}
        inputs.defences.append(
            Defence(
                folder,
                _key(folder, keys),
                _defence_csv(folder / "defence.csv"),
                meta if isinstance(meta, dict) else {},
            )
        )
    if "baseline.json" in names:
        result = _json(folder / "baseline.json")
        if not isinstance(result, dict) or "median_confidence" not in result:
            raise FoolbenchError(
                f"{folder / 'baseline.json'} is not a baseline result (no median_confidence)"
            )
        inputs.baselines.append(Baseline(folder, _key(folder, keys), result))


def _key(folder: Path, keys: set) -> str:
    """A file-name-safe, unique name for a folder's outputs: its own name, or with as many of its
    parents' names as it takes to tell it apart (transfer folders are often all called all/)."""
    parts = folder.resolve().parts[1:] or ("input",)
    for depth in range(1, min(len(parts), 4) + 1):
        key = safe_name("-".join(parts[-depth:]), limit=60)
        if key not in keys:
            break
    base, n = key, 2
    while key in keys:
        key, n = f"{base}-{n}", n + 1
    keys.add(key)
    return key


# -- readers: each raises FoolbenchError naming the file -----------------------------------------------
def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FoolbenchError(
            f"{path} is not readable JSON ({type(e).__name__}); restore or remove it"
        ) from None


def _csv(path: Path, **kw) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kw)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as e:
        raise FoolbenchError(
            f"{path} is not a readable CSV table ({type(e).__name__}); restore or remove it"
        ) from None


def _require(df: pd.DataFrame, columns: Sequence[str], path: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise FoolbenchError(
            f"{path} lacks the columns {', '.join(missing)}; it was not written by foolbench"
        )


def read_run(path: Path, key: str | None = None) -> Run:
    """A finished run directory; the champions shown in the gallery are loaded (and so checked) here."""
    manifest = _json(path / "manifest.json")
    if not isinstance(manifest, dict):
        raise FoolbenchError(f"{path / 'manifest.json'} is not a run manifest; restore it")
    summary = _json(path / "summary.json")
    if not isinstance(summary, dict) or any(k not in summary for k in SUMMARY_KEYS):
        raise FoolbenchError(
            f"{path / 'summary.json'} lacks the run's statistics ({', '.join(SUMMARY_KEYS)}); "
            "restore it or resume the run to write it again"
        )
    for name in ("results.csv", "metrics.csv"):
        if not (path / name).is_file():
            raise FoolbenchError(f"{path / name} is missing; the run directory is incomplete")
    results = _csv(
        path / "results.csv",
        dtype={"label": str, "top1_label": str, "file": str},
        keep_default_na=False,
        na_filter=False,
    )
    _require(results, ("file", "class", "label", "confidence"), path / "results.csv")
    if not all(pd.api.types.is_numeric_dtype(results[c]) for c in ("class", "confidence")):
        raise FoolbenchError(f"{path / 'results.csv'} has non-numeric classes or confidences; restore it")
    metrics = _csv(path / "metrics.csv")
    _require(metrics, ("evaluations", "median_confidence", "max_confidence"), path / "metrics.csv")
    channels = int(manifest.get("preset", {}).get("encoding", {}).get("channels", 0)) or None
    order = np.argsort(-results["confidence"].to_numpy(), kind="stable")[:GALLERY_LIMIT]
    rows = sorted(int(i) for i in order)  # the most confident, shown in class order
    images = []
    for i in rows:
        file = path / results["file"][i]
        if not file.is_file():
            raise FoolbenchError(f"{file} named in {path / 'results.csv'} is missing")
        channels = channels or _png_channels(file)
        images.append(load_png(file, channels))
    return Run(path, key or safe_name(path.name), manifest, summary, results, metrics, images, rows)


def _png_channels(path: Path) -> int:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return 1 if img.mode in ("L", "I", "I;16", "1") else 3
    except OSError:
        return 3  # load_png names the broken file


def _defence_csv(path: Path) -> pd.DataFrame:
    table = _csv(path)
    _require(table, ("iteration", "median_confidence"), path)
    return table


def read_transfer(path: Path, key: str | None = None) -> Transfer:
    table = _csv(path / "transfer.csv")
    _require(table, ("source", "target", "fraction_at_99", "median_confidence"), path / "transfer.csv")
    meta = _json(path / "transfer.json")
    matrices = {}
    for file in sorted(path.glob("matrix_*.csv")):
        m = _csv(file, index_col=0)
        m.index = m.index.astype(str)
        m.columns = m.columns.astype(str)
        matrices[file.stem.removeprefix("matrix_")] = m
    images = None
    if (path / "images.csv").is_file():
        images = _csv(path / "images.csv", dtype={"label": str}, keep_default_na=False)
        _require(images, ("run", "file", "target", "confidence", "label"), path / "images.csv")
    experiment, root = _experiment(path)
    return Transfer(
        path,
        key or safe_name(path.name),
        table,
        matrices,
        meta if isinstance(meta, dict) else {},
        images,
        experiment,
        root,
    )


def _experiment(path: Path) -> tuple[dict, Path | None]:
    """The experiment.json a `foolbench experiment` folder holds two levels above its transfer folders
    (EXPERIMENT/transfer/GROUP/ATTACK), and that folder."""
    for folder in list(path.parents)[:3]:
        if (folder / "experiment.json").is_file():
            meta = _json(folder / "experiment.json")
            return (meta, folder) if isinstance(meta, dict) else ({}, None)
    return {}, None
