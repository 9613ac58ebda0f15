"""Genome encodings: how a population of genomes is stored, initialised, varied and turned into images.

A population is a `dict[str, np.ndarray]` with the population on axis 0 of every array, so the search
can select rows, concatenate and `np.savez` it without knowing the encoding (no object arrays).
"""

from typing import Any, Protocol

import numpy as np

from foolbench.encodings.cppn import CPPNEncoding
from foolbench.encodings.direct import DirectEncoding, Population
from foolbench.errors import FoolbenchError

__all__ = [
    "CPPNEncoding",
    "DirectEncoding",
    "Encoding",
    "Population",
    "concat",
    "make_encoding",
    "size",
    "take",
]

ENCODINGS: dict[str, type] = {"direct": DirectEncoding, "cppn": CPPNEncoding}


class Encoding(Protocol):
    """What the search loop needs from an encoding. All randomness comes from the `rng` argument."""

    name: str
    channels: int
    resolution: int
    options: dict[str, Any]

    def init(self, n: int, rng: np.random.Generator) -> Population:
        """A random initial population of `n` genomes."""
        ...

    def vary(
        self, parents: Population, rng: np.random.Generator, generation: int, in_place: bool = False
    ) -> Population:
        """One child per parent (optional crossover, then mutation); parents are left untouched
        unless `in_place`, for a population the caller gives up (a fresh sample of the archive),
        which spares copying it. The children are the same either way."""
        ...

    def render(self, pop: Population) -> np.ndarray:
        """Images float32 `[B, C, H, W]` in [0, 1] with H == W == resolution and C == channels."""
        ...


def make_encoding(name: str, /, **options: Any) -> Encoding:
    """Build the encoding `name` ("direct" or "cppn"); bad options raise FoolbenchError naming them
    (`name` is positional only, so an option called "name" is refused as unknown, not a TypeError)."""
    if not isinstance(name, str) or name not in ENCODINGS:
        raise FoolbenchError(f"unknown encoding {name!r}; choose one of {', '.join(map(repr, ENCODINGS))}")
    return ENCODINGS[name](**options)


def take(pop: Population, idx: np.ndarray | list[int] | slice) -> Population:
    """The genomes at `idx` (indices, a boolean mask or a slice), copied row by row for every array."""
    if isinstance(idx, slice):
        return {key: value[idx].copy() for key, value in pop.items()}
    idx = np.asarray(idx)
    if idx.size == 0:
        idx = idx.astype(np.int64)  # np.asarray([]) is float64, which numpy refuses as an index
    return {key: value[idx] for key, value in pop.items()}


def concat(pops: list[Population]) -> Population:
    """One population holding the genomes of all `pops` in order; they must have the same arrays."""
    if not pops:
        raise ValueError("concat needs at least one population")
    keys = set(pops[0])
    for pop in pops[1:]:
        if set(pop) != keys:
            raise FoolbenchError(
                f"cannot concatenate populations with arrays {sorted(keys)} and {sorted(pop)}"
            )
    return {key: np.concatenate([pop[key] for pop in pops], axis=0) for key in pops[0]}


def size(pop: Population) -> int:
    """Number of genomes in the population (0 for an empty dict)."""
    return len(next(iter(pop.values()))) if pop else 0
