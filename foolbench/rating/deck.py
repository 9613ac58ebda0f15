"""The deck: every image a rating session shows, and the labels offered with it.

Champions of the runs are mixed with real images of the same classes (controls, `controls.py`),
`controls` of them per champion. Each image is offered with its target label and three foils
drawn at random from the model's other classes, plus "none of these"; the page shuffles the
images and the order of the labels for each rater. Why this design (after Dujmović, Malhotra &
Bowers, eLife 2020, who showed that how often people "agree" with a network depends on how the
images and the foils are chosen):

- **Random foils, the same rule for champions and controls.** The foils come from the model's own
  classes, uniformly, so they neither help nor hinder the target (a person guessing picks it 1
  time in 5) and do not depend on the model's other outputs; and a champion cannot be told from a
  control by its options. Foils chosen to be unlike the target would let a person pick it by
  ruling the others out; foils chosen to be like it (the model's runners-up) would make the
  controls hard and measure the foils instead of the image.
- **"None of these"**: the claim under test is that people cannot recognise the class at all. A
  forced choice makes a person guess, and a lucky guess would count as recognition.
- **Fixed per image, drawn from the deck's seed**: every rater sees the same four labels for an
  image (so raters can be compared), in an order of their own.

Everything is deterministic for the same runs, data, `controls` and `seed`, so a session closed
half-way and started again shows the same deck.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from foolbench.errors import FoolbenchError
from foolbench.rating.controls import choose, dataset_of, fit, real_images
from foolbench.rundir import is_finished, read_champions, read_manifest, read_results

NONE = "none of these"  # the answer that names no class
FOILS = 3
CHAMPION, CONTROL = "champion", "control"


@dataclass
class Item:
    """One image to rate, with what a ratings row records about it."""

    id: str  # stable across sessions: what a rater has answered is found by it
    kind: str  # CHAMPION or CONTROL
    image: str  # for people: <run>/champions/<file>, or where the real image came from
    target_class: int
    target: str  # its label
    options: list[str]  # the target and the foils (the page shows them in each rater's own order)
    run: str  # the run directory (a control: the run whose champion of that class it stands beside)
    model_sha256: str
    champion: str  # the champion's file in the run directory; "" for a control
    png: bytes = field(repr=False)
    image_sha256: str = ""

    def __post_init__(self):
        self.image_sha256 = self.image_sha256 or hashlib.sha256(self.png).hexdigest()

    def record(self) -> dict:
        """What every ratings row of this image says about it (the answer's columns come from the page)."""
        return {
            "kind": self.kind,
            "image": self.image,
            "target": self.target,
            "target_class": self.target_class,
            "run": self.run,
            "model_sha256": self.model_sha256,
            "champion": self.champion,
            "image_sha256": self.image_sha256,
            "item": self.id,
        }


@dataclass
class RatedRun:
    """A run as the deck reads it."""

    path: Path
    model_sha256: str
    labels: list[str]  # the classes a person may be offered (a defence's `fooling` class left out)
    dataset: str
    champions: object  # rundir.Champions


@dataclass
class Deck:
    items: list[Item]
    runs: list[RatedRun]
    sources: list[str]  # where the controls came from
    seed: int

    @property
    def champions(self) -> list[Item]:
        return [i for i in self.items if i.kind == CHAMPION]

    @property
    def controls(self) -> list[Item]:
        return [i for i in self.items if i.kind == CONTROL]

    def by_id(self) -> dict[str, Item]:
        return {i.id: i for i in self.items}

    def describe(self) -> str:
        runs = f"{len(self.runs)} run{'s' if len(self.runs) != 1 else ''}"
        return f"{len(self.champions)} champions from {runs} and {len(self.controls)} real images of their classes"


def read_run(path: str | Path) -> RatedRun:
    """A finished run with champions, or a one-line error saying what is wrong with it."""
    from foolbench.models.card import real_labels

    path = Path(path)
    if not path.exists():
        raise FoolbenchError(f"{path}: no such run directory; pass a folder written by 'foolbench run'")
    manifest = read_manifest(path)
    if not is_finished(path) or not (path / "results.csv").is_file():
        raise FoolbenchError(
            f"{path}: the run has not finished, so it has no champions yet; finish it with "
            f"'foolbench run --resume {path}'"
        )
    if read_results(path).empty:
        raise FoolbenchError(
            f"{path}: the run has no champions (its results.csv lists none); nothing to rate"
        )
    champions = read_champions(path)
    full = list((manifest.get("model") or {}).get("labels") or [])
    labels = real_labels(full or [champions.labels[c] for c in sorted(champions.labels)])
    return RatedRun(path, model_sha256(manifest), labels, dataset_of(manifest), champions)


def model_sha256(manifest: dict) -> str:
    """The run's model as ratings record it: its file's sha256 (an ensemble's, joined by '+')."""
    shas = [m.get("sha256") or m.get("spec", "") for m in manifest.get("models") or []]
    return "+".join(shas) or "unknown"


def build_deck(run_dirs, data: str | Path | None = None, controls: int = 1, seed: int = 0) -> Deck:
    """The champions of `run_dirs` and `controls` real images per champion, each with its options."""
    if not run_dirs:
        raise FoolbenchError("no run given; pass the run directories whose champions to rate")
    if controls < 1:
        raise FoolbenchError("--controls must be at least 1: raters are checked on real images")
    runs, seen = [], set()
    for path in run_dirs:
        run = read_run(path)
        if run.path.resolve() not in seen:
            seen.add(run.path.resolve())
            runs.append(run)
    # a champion of a defence's `fooling` class shows no class a person could name: it is not rated
    items = [
        _champion(run, i, seed)
        for run in runs
        for i in range(len(run.champions.files))
        if int(run.champions.classes[i]) < len(run.labels)
    ]
    if not items:
        raise FoolbenchError("the runs have no champion of a class a person could name; nothing to rate")
    control_items, sources = _controls(runs, items, data, controls, seed)
    return Deck(items + control_items, runs, sources, seed)


def _champion(run: RatedRun, i: int, seed: int) -> Item:
    ch = run.champions
    file, cls = ch.files[i], int(ch.classes[i])
    png = (run.path / file).read_bytes()
    sha = hashlib.sha256(png).hexdigest()
    item_id = f"{CHAMPION}-{run.model_sha256[:8]}-{sha[:12]}-{cls}"
    return Item(
        id=item_id,
        kind=CHAMPION,
        image=f"{run.path.name}/{file}",
        target_class=cls,
        target=run.labels[cls],
        options=options(run.labels, cls, seed, item_id),
        run=str(run.path),
        model_sha256=run.model_sha256,
        champion=file,
        png=png,
        image_sha256=sha,
    )


def _controls(runs: list[RatedRun], champions: list[Item], data, per_champion: int, seed: int):
    """Real images of the champions' classes, drawn once per suite; each stands beside one run."""
    by_run = {str(r.path): r for r in runs}
    groups: dict[tuple, list[Item]] = {}
    for item in champions:
        run = by_run[item.run]
        groups.setdefault((run.dataset, tuple(run.labels)), []).append(item)
    out, sources = [], []
    for (dataset, labels), members in groups.items():
        real = real_images(dataset, labels, data)
        sources.append(real.source)
        wanted: dict[int, int] = {}
        for item in members:
            wanted[item.target_class] = wanted.get(item.target_class, 0) + per_champion
        rng = np.random.default_rng(_seed_words(seed, "controls", dataset, *sorted(i.id for i in members)))
        chosen = choose(real, wanted, rng, labels)
        for cls, picks in chosen.items():
            beside = [i for i in members for _ in range(per_champion) if i.target_class == cls]
            for n, index in enumerate(picks):
                out.append(_control(real, index, beside[n % len(beside)], by_run, seed))
    return out, sources


def _control(real, index: int, beside: Item, by_run: dict, seed: int) -> Item:
    with Image.open(io.BytesIO(beside.png)) as champion:
        size, grey = champion.size, champion.mode in ("L", "1", "I", "I;16")
    buffer = io.BytesIO()
    fit(real.load(index), size, grey).save(buffer, format="PNG")
    run = by_run[beside.run]
    name = real.names[index]
    item_id = f"{CONTROL}-{hashlib.sha256(name.encode()).hexdigest()[:12]}-{beside.target_class}"
    return Item(
        id=item_id,
        kind=CONTROL,
        image=name,
        target_class=beside.target_class,
        target=beside.target,
        options=options(run.labels, beside.target_class, seed, item_id),
        run=beside.run,
        model_sha256=beside.model_sha256,
        champion="",
        png=buffer.getvalue(),
    )


def options(labels: list[str], target: int, seed: int, item_id: str) -> list[str]:
    """The target and FOILS labels of other classes, drawn uniformly (labels that read the same as
    the target, such as ImageNet's two "crane"s, are never foils)."""
    target_label = labels[target]
    others = sorted({lab for c, lab in enumerate(labels) if c != target and lab != target_label})
    rng = np.random.default_rng(_seed_words(seed, "foils", item_id))
    foils = rng.choice(len(others), size=min(FOILS, len(others)), replace=False) if others else []
    return [target_label, *(others[i] for i in foils)]


def _seed_words(seed: int, *parts: str) -> list[int]:
    digest = hashlib.sha256("\0".join(map(str, (seed, *parts))).encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
