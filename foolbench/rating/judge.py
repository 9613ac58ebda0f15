"""People as a judge: a champion that people recognised shows its class, so it does not fool.

A scoring protocol asks a judge which champion images show their target class, and counts those
classes as not fooled (protocol v3's look-alike judge is one). This judge answers from people's
ratings (`foolbench rate`): an image is recognised when the summary's rule says people recognised
it. Images are matched by their 8-bit pixels and class, not by file, so the judge recognises a
rated champion wherever it is loaded from; an image nobody rated is not recognised, so without
ratings nothing changes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foolbench.images import as_uint8, load_png
from foolbench.rating.summary import Summary, summarise_found


def pixels_key(image: np.ndarray, cls: int) -> str:
    """An image (float32 [C, H, W] in [0, 1]) and its target class, as the judge looks them up."""
    data = as_uint8(np.asarray(image, dtype=np.float32))
    return f"{int(cls)}:{data.shape}:{hashlib.sha256(data.tobytes()).hexdigest()}"


@dataclass
class PeopleJudge:
    verdicts: dict[str, bool]  # pixels_key -> recognised by people
    name: str  # what a leaderboard row shows: "people (N raters)"

    def recognised(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """bool [N]: people recognised image i as class classes[i] (False where nobody rated it)."""
        return np.array(
            [self.verdicts.get(pixels_key(x, c), False) for x, c in zip(images, classes, strict=True)]
        )

    def rated(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """bool [N]: whether people rated image i at all (so their verdict, either way, decided it)."""
        return np.array([pixels_key(x, c) in self.verdicts for x, c in zip(images, classes, strict=True)])


def people_judge(run_dirs, extra=()) -> PeopleJudge | None:
    """The judge over the ratings of `run_dirs` (their own ratings.csv and `extra` ratings files);
    None where no counted rater has rated any of their champions."""
    summary = summarise_found(run_dirs, extra)
    if summary is None or summary.champions.empty:
        return None
    return judge_from(summary)


def judge_from(summary: Summary) -> PeopleJudge:
    verdicts = {}
    for row in summary.champions.to_dict("records"):
        channels = _channels(Path(row["run"]) / row["file"])
        image = load_png(Path(row["run"]) / row["file"], channels)
        verdicts[pixels_key(image, row["class"])] = bool(row["recognised"])
    raters = int(summary.raters["counted"].sum())
    return PeopleJudge(verdicts, f"people ({raters} rater{'s' * (raters != 1)})")


def _channels(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as img:
        return 1 if img.mode in ("L", "1", "I", "I;16") else 3


@dataclass
class EitherJudge:
    """Several judges as one: an image is recognised when any of them recognises it (a look-alike, or a
    champion people recognised); its name names them all, so a row says which judges decided."""

    judges: tuple

    @property
    def name(self) -> str:
        return " or ".join(j.name for j in self.judges)

    def recognised(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(classes), dtype=bool)
        for judge in self.judges:
            found |= np.asarray(judge.recognised(images, classes), dtype=bool)
        return found


def either(*judges):
    """The judges given that exist, as one judge (None when there are none)."""
    present = tuple(j for j in judges if j is not None)
    if not present:
        return None
    return present[0] if len(present) == 1 else EitherJudge(present)


def with_people(judge, judge_text: str, run_dirs) -> tuple:
    """A protocol's judge joined by people's where people rated the runs: (judge, the text a row shows
    for it, naming both). Without ratings, the judge and its text as they were."""
    people = people_judge(run_dirs)
    if people is None:
        return judge, judge_text
    if judge is None:
        return people, people.name
    return either(judge, people), f"{judge_text} or {people.name}"
