"""Judges: which champions show their class, so that they count as recognised, not as fooling.

A fooling image fools only if no person would see its class in it. A judge looks at champion images
and their target classes and marks each one recognised or not; a scoring protocol counts a
recognised champion's class as not fooled (`protocol.rank_curve`), and the leaderboard row says
which judge decided. Judges are named in a protocol suite (`judge = "lookalike"`) and built here
from the suite's real images, so any judge that can say "recognised" for an image plugs in the
same way (human ratings, for one).

  lookalike   `lookalike.compare`: the champion lies within its class's own nearest-neighbour
              distances among labelled real images, and its nearest real image is of that class.
              It needs at least two real images of every target class, at the champions' size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from foolbench.errors import FoolbenchError
from foolbench.lookalike import Reference, compare, reference


@runtime_checkable
class Judge(Protocol):
    name: str  # what a leaderboard row shows as the judge that decided

    def recognised(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """bool [N]: whether image i (float32 [N, C, H, W] in [0, 1]) shows class classes[i]."""
        ...


@dataclass
class LookalikeJudge:
    """A champion is recognised when it is a look-alike of the real images of its class."""

    reference: Reference
    name: str

    def recognised(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        return compare(images, classes, self.reference).table["lookalike"].to_numpy(dtype=bool)


def lookalike_judge(images, labels: np.ndarray, source: str) -> LookalikeJudge:
    """The look-alike judge over labelled real images (float32 [C, H, W] each, labels as model classes)."""
    shapes = {tuple(np.shape(x)) for x in images}
    if len(shapes) != 1:
        raise FoolbenchError(
            f"the look-alike judge needs real images of one size; {source} has {len(shapes)}"
        )
    return LookalikeJudge(reference(np.stack(list(images)), labels), f"lookalike ({source})")


JUDGES = {"lookalike": lookalike_judge}


def make_judge(kind: str, images, labels: np.ndarray, source: str) -> Judge:
    """The judge `kind` (a key of JUDGES) over labelled real images; a one-line error where it cannot be
    built from them (too few images of a class, images of several sizes)."""
    if kind not in JUDGES:
        raise FoolbenchError(f"unknown judge '{kind}'; known: {', '.join(JUDGES)}")
    return JUDGES[kind](images, labels, source)
