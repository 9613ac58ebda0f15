"""A sweep spec (models x attacks x seeds x class shards) turned into checked jobs, one run each.

Every job is a normal `RunRequest` whose run directory has a name derived from the spec alone,
`<model>-<attack>-s<seed>[-shard<i>of<n>]` under the sweep folder, so running the same sweep again
finds its own runs: finished ones are skipped and killed ones resumed (`runner.ensure_run`).
Everything a user can get wrong is checked here, before any job runs and before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from foolbench.errors import FoolbenchError
from foolbench.models.load import ModelOptions
from foolbench.text import safe_name

DEFAULT_OUT = Path("runs/sweep")


@dataclass
class Sweep:
    """What `foolbench sweep` was asked for."""

    models: list[str]
    attacks: list[str]
    seeds: list[int]
    shards: int = 1
    scale: str = "cpu"
    generations: int | None = None
    evaluations: int | None = None
    seconds: float | None = None
    classes: str | None = None
    checkpoint_every: int | None = None
    model_options: ModelOptions = field(default_factory=ModelOptions)
    out: Path = DEFAULT_OUT
    allow_device_change: bool = False  # resume runs started on another device (they then diverge)


@dataclass
class Job:
    """One run of the sweep. `group` names the (model, attack, seed) its shards merge into."""

    name: str
    group: str
    seed: int  # the sweep's seed (a shard runs with a seed derived from it)
    request: object  # runner.RunRequest (imported lazily: the runner pulls in torch)
    state: str | None = None  # runner.run_state: None (start), 'resuming' or 'finished'

    @property
    def run_dir(self) -> Path:
        return Path(self.request.out)


def parse_seeds(text: str | int) -> list[int]:
    """'0-4', '0,3,7', '5' or a mix ('0-2,9'): the seeds in the order given, each once."""
    seeds: list[int] = []
    for item in str(text).split(","):
        item = item.strip()
        lo, sep, hi = item.partition("-")
        try:
            span = range(int(lo), int(hi) + 1) if sep else [int(item)]
        except ValueError:
            raise FoolbenchError(f"--seeds '{text}': '{item}' is not a seed or a range like 0-4") from None
        if not span or min(span) < 0:
            raise FoolbenchError(f"--seeds '{text}': '{item}' names no non-negative seed (write low-high)")
        seeds.extend(s for s in span if s not in seeds)
    return seeds


def shard_seed(seed: int, shard: int) -> int:
    """The seed of shard `shard` of a run seeded `seed`: distinct per shard, the same on every machine."""
    return int(np.random.SeedSequence([seed, shard]).generate_state(1)[0])


def model_stem(spec: str) -> str:
    """The short name a model gets in run directory names: the file stem, or the zoo name."""
    path = Path(spec)
    return safe_name(path.stem if path.suffix else spec)


def plan(sweep: Sweep) -> list[Job]:
    """The sweep's jobs, in model-major order (so a worker's cached model is reused), all checked.

    Loads each model once to prove it loads and to resolve the target classes; reads any run
    directories already there to decide start/resume/skip (and refuses ones with other settings).
    """
    from foolbench.presets import load_preset, target_classes
    from foolbench.resolve import load_model
    from foolbench.runner import RunRequest, run_state

    if not sweep.models or not sweep.attacks or not sweep.seeds:
        raise FoolbenchError("a sweep needs at least one --model, one --attack and one seed")
    if sweep.shards < 1:
        raise FoolbenchError(f"--shards must be 1 or more, not {sweep.shards}")
    models = [_absolute(spec) for spec in sweep.models]
    stems = [model_stem(spec) for spec in models]
    if len(set(stems)) != len(stems):
        raise FoolbenchError(f"two --model values share the name in run directories: {', '.join(stems)}")
    presets = {attack: load_preset(_absolute(attack), sweep.scale) for attack in sweep.attacks}
    if sweep.shards > 1:
        for attack, preset in presets.items():
            if preset.method != "map-elites":
                raise FoolbenchError(f"{attack}: only MAP-Elites presets can be split into class shards")
    out = Path(sweep.out).resolve()
    jobs = []
    for spec, stem in zip(models, stems, strict=True):
        labels = load_model(spec, sweep.model_options).labels
        for attack, preset in presets.items():
            classes = target_classes(sweep.classes, preset, labels)
            if sweep.shards > len(classes):
                raise FoolbenchError(
                    f"--shards {sweep.shards} is more than the {len(classes)} target classes of {attack}"
                )
            for seed in sweep.seeds:
                group = f"{stem}-{preset.name}-s{seed}"
                for shard, part in enumerate(_split(classes, sweep.shards), start=1):
                    sharded = sweep.shards > 1
                    name = f"{group}-shard{shard}of{sweep.shards}" if sharded else group
                    req = RunRequest(
                        models=[spec],
                        attack=_absolute(attack),
                        scale=sweep.scale,
                        generations=sweep.generations,
                        evaluations=sweep.evaluations,
                        seconds=sweep.seconds,
                        classes=",".join(map(str, part)) if sharded else sweep.classes,
                        seed=shard_seed(seed, shard) if sharded else seed,
                        out=out / name,
                        checkpoint_every=sweep.checkpoint_every,
                        model_options=sweep.model_options,
                        progress=False,
                        allow_device_change=sweep.allow_device_change,
                    )
                    jobs.append(Job(name, group, seed, req, run_state(req)))
    return jobs


def _split(classes: list[int], shards: int) -> list[list[int]]:
    """`shards` contiguous parts of the class list, sizes differing by at most one."""
    return [part.tolist() for part in np.array_split(np.asarray(classes, dtype=np.int64), shards)]


def _absolute(ref: str) -> str:
    """Files named on the command line, as absolute paths: workers may run in another folder."""
    path = Path(ref)
    return str(path.resolve()) if path.is_file() else ref
