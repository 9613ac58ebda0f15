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

from foolbench import rundir
from foolbench.errors import FoolbenchError

# What must agree for runs to merge (`rundir.identity`): the same search over the same model; the
# classes, seeds and budgets of the shards differ, and so does the search table, which holds them.
SAME = ("attack", "model", "options")
SAME_TABLES = ("attack", "encoding", "evaluation")


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
    preset = rundir.manifest_preset(first)
    rundir.check_model_files(first, "merging")
    model = runner.load_run_models(rundir.model_specs(first), preset, rundir.model_options(first))
    seed = first["seed"] if seed is None else seed
    search = runner.build_search(model, preset, classes, seed)
    pop, found_at = _champion_genomes(shard_dirs)
    fitness = _score(search.evaluator, pop, preset.search.get("batch", 200))
    archive = search.engine.archive
    archive.insert(pop, fitness, 0)
    archive.generation = found_at[fitness.argmax(axis=0)]  # when each winner was evolved
    summaries = [rundir.read_summary(d) for d in shard_dirs]
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
        "versions": runner.versions(),
    }
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_manifest(out, manifest)
    rundir.save_checkpoint(out, search.generation, search.state(), metrics)
    summary = runner.finish_run(out, search, manifest, metrics)
    firsts = [s["evaluations_to_first_99"] for s in summaries if s.get("evaluations_to_first_99") is not None]
    summary["evaluations_to_first_99"] = min(firsts) if firsts else None  # within the fastest shard
    summary["merged_from"] = len(shard_dirs)
    rundir.write_summary(out, summary)
    return out


def _finished_manifest(run_dir: Path) -> dict:
    manifest = rundir.read_manifest(run_dir)
    rundir.read_summary(run_dir)  # refuses a run that has not finished
    return manifest


def _check_compatible(dirs: list[Path], manifests: list[dict]) -> None:
    """Refuse runs of different models, attacks or encodings, and anything but MAP-Elites."""
    first = rundir.identity(manifests[0])
    method = first["settings"].get("attack", {}).get("method", "map-elites")
    if method != "map-elites":
        raise FoolbenchError(f"{dirs[0]}: only MAP-Elites runs merge (this one is {method})")
    for d, m in zip(dirs[1:], manifests[1:], strict=True):
        found = rundir.identity(m)
        diff = rundir.differences(first, found, SAME, versus="vs") + [
            f"[{table}] ({first['settings'].get(table)!r} vs {found['settings'].get(table)!r})"
            for table in SAME_TABLES
            if found["settings"].get(table) != first["settings"].get(table)
        ]
        if diff:
            raise FoolbenchError(
                f"cannot merge {dirs[0]} and {d}: they differ in {diff[0]}; merge only shards of one "
                "model and attack"
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
    from foolbench.search.archive import Archive

    pools, found_at = [], []
    for d in dirs:
        state = rundir.load_checkpoint(d)
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
