"""Merge class shards: runs over parts of one class list become one normal run over all of them.

A 1000-class ImageNet run split into shards (each a run over a contiguous part of the classes, on its
own worker) merges back by the paper's multi-cell rule applied across the shards: every champion
genome of every shard is rendered and scored on the union of the classes, and each class goes to
the image that scores highest on it, so an image evolved in shard A takes a class of shard B when it
beats B's own champion there. The merged directory is a finished run like any other (manifest,
checkpoint, champions, results.csv re-scored from the PNGs, gallery, summary), which `transfer`,
`baseline`, `--resume` and a further merge all read.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np

from foolbench.errors import FoolbenchError
from foolbench.io import read_json, sha256_file, write_json

# What must agree for runs to merge: the same search over the same model, only classes and seeds differ.
SAME = {
    "attack": lambda m: m.get("attack"),
    "method": lambda m: m["preset"].get("attack", {}).get("method", "map-elites"),
    "encoding": lambda m: m["preset"].get("encoding"),
    "evaluation": lambda m: m["preset"].get("evaluation"),
    "models": lambda m: [(r.get("spec"), r.get("sha256"), r.get("options")) for r in m.get("models", [])],
}


def merge(shard_dirs: list, out, seed: int | None = None) -> Path:
    """Merge finished runs of one model and attack into the new run directory `out`; returns it.

    `seed` is recorded as the merged run's seed (default: the first shard's). Nothing is written
    unless every shard is readable, compatible and scored.
    """
    from foolbench import runner

    shard_dirs = [Path(d) for d in shard_dirs]
    if not shard_dirs:
        raise FoolbenchError("merge needs one or more run directories")
    manifests = [_finished_manifest(d) for d in shard_dirs]
    _check_compatible(shard_dirs, manifests)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FoolbenchError(f"{out} already exists and is not empty; choose a new --out")
    first = manifests[0]
    classes = _union(m["classes"] for m in manifests)
    preset = runner.preset_from_dict(runner._preset_tables(first["preset"]), first["preset"]["source"])
    _check_model_files(first)
    model = runner._load([r["spec"] for r in first["models"]], preset, first["models"][0].get("options", {}))
    seed = first["seed"] if seed is None else seed
    search = runner._search(model, preset, classes, seed)
    pop, found_at = _champion_genomes(shard_dirs)
    fitness = _score(search.evaluator, pop, preset.search.get("batch", 200))
    archive = search.engine.archive
    archive.insert(pop, fitness, 0)
    archive.generation = found_at[fitness.argmax(axis=0)]  # when each winner was evolved
    summaries = [read_json(d / "summary.json") for d in shard_dirs]
    search.engine.generation = max(s["generations"] for s in summaries)
    search.evaluator.evaluations = sum(s["evaluations"] for s in summaries)
    # the merge re-scores the same images: their non-finite scores are the shards' own
    search.evaluator.nonfinite = sum(s["nonfinite_scores"] for s in summaries)
    metrics = [
        {
            "generation": search.generation,
            "evaluations": search.evaluations,
            "seconds": round(sum(s["seconds"] for s in summaries), 4),  # compute time of all shards
            **search.stats(),
            "improved": len(classes),
        }
    ]
    manifest = {
        **first,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["foolbench", *sys.argv[1:]]),
        "seed": seed,
        "classes": classes,
        "merged_from": [
            {"run": str(d.resolve()), "seed": m["seed"], "classes": len(m["classes"])}
            for d, m in zip(shard_dirs, manifests, strict=True)
        ],
        "versions": runner._versions(),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "manifest.json", manifest)
    runner.save_checkpoint(out, search, metrics)
    summary = runner.finish_run(out, search, manifest, metrics)
    firsts = [s["evaluations_to_first_99"] for s in summaries if s.get("evaluations_to_first_99") is not None]
    summary["evaluations_to_first_99"] = min(firsts) if firsts else None  # within the fastest shard
    summary["merged_from"] = len(shard_dirs)
    write_json(out / "summary.json", summary)
    return out


def _finished_manifest(run_dir: Path) -> dict:
    if not (run_dir / "manifest.json").is_file():
        raise FoolbenchError(f"{run_dir} is not a run directory (no manifest.json); pass shard run folders")
    if not (run_dir / "summary.json").is_file():
        raise FoolbenchError(
            f"{run_dir} has not finished (no summary.json); finish it with 'foolbench run --resume {run_dir}'"
        )
    return read_json(run_dir / "manifest.json")


def _check_compatible(dirs: list[Path], manifests: list[dict]) -> None:
    """Refuse runs of different models, attacks or encodings, and anything but MAP-Elites."""
    first = manifests[0]
    if SAME["method"](first) != "map-elites":
        raise FoolbenchError(f"{dirs[0]}: only MAP-Elites runs merge (this one is {SAME['method'](first)})")
    for d, m in zip(dirs[1:], manifests[1:], strict=True):
        for what, get in SAME.items():
            if get(m) != get(first):
                raise FoolbenchError(
                    f"cannot merge {dirs[0]} and {d}: they differ in {what} ({get(first)!r} vs {get(m)!r}); "
                    "merge only shards of one model and attack"
                )


def _check_model_files(manifest: dict) -> None:
    for record in manifest["models"]:
        path = record.get("path")
        if record.get("sha256") and path and Path(path).is_file() and sha256_file(path) != record["sha256"]:
            raise FoolbenchError(
                f"{path} changed since the shards ran (sha256 differs); merging must score with the same model"
            )


def _union(class_lists) -> list[int]:
    """All classes, in shard order, each once."""
    seen: dict[int, None] = {}
    for classes in class_lists:
        seen.update(dict.fromkeys(int(c) for c in classes))
    return list(seen)


def _champion_genomes(dirs: list[Path]) -> tuple[dict, np.ndarray]:
    """Every distinct champion genome of every shard (final checkpoints), and the generation it was found."""
    from foolbench.encodings import concat, take
    from foolbench.runner import load_checkpoint
    from foolbench.search.archive import Archive

    pools, found_at = [], []
    for d in dirs:
        state = load_checkpoint(d)
        if state is None:
            raise FoolbenchError(f"{d} has no checkpoint to take the champion genomes from")
        archive = Archive.from_state(state)
        rows = np.unique(archive.elite[archive.occupied])
        pools.append(take(archive.pool, rows))
        found_at.extend(int(archive.generation[archive.elite == r].min()) for r in rows)
    return concat(pools), np.array(found_at, dtype=np.int64)


def _score(evaluator, pop: dict, batch: int) -> np.ndarray:
    """Fitness [genomes, union classes] of the 8-bit renders, `batch` genomes at a time."""
    from foolbench.encodings import size, take

    n = size(pop)
    return np.concatenate([evaluator(take(pop, slice(i, i + batch))) for i in range(0, n, batch)])
