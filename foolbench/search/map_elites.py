"""MAP-Elites over classes (the paper's search), batched: a whole generation is rendered, scored
and inserted at once. This module holds the algorithm and its state only; `foolbench.runner`
adds the run directory, checkpoints and progress bar.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from foolbench.search.archive import Archive, confidence_stats

# Batches with more values than this are quantised by torch on all cores; smaller ones by numpy,
# whose single thread leaves nothing spinning when the model's threads start on the batch.
TORCH_QUANTISE_VALUES = 2**20


def quantise(images: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Round to the 8-bit values a PNG stores, so what is scored is exactly what is saved.

    float32 `round(x * 255) / 255`, halves to even (numpy's `rint`, torch's `round`: the same
    values). `in_place` reuses a float32 batch the caller owns, such as a fresh render.
    """
    images = np.asarray(images)
    own = in_place and images.dtype == np.float32 and images.flags.c_contiguous
    if images.size <= TORCH_QUANTISE_VALUES:
        out = images if own else np.empty(images.shape, dtype=np.float32)
        np.multiply(images, np.float32(255.0), out=out, dtype=np.float32)
        np.rint(out, out=out)
        out /= np.float32(255.0)
        return out
    source = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    out = source if own else torch.empty_like(source)
    torch.mul(source, 255.0, out=out).round_().div_(255.0)
    return out.numpy()


@dataclass
class Budget:
    """Stop when any given limit is reached; generations count the ones after initialisation."""

    generations: int | None = None
    evaluations: int | None = None
    seconds: float | None = None

    def done(self, generation: int, evaluations: int, seconds: float) -> bool:
        return (
            (self.generations is not None and generation >= self.generations)
            or (self.evaluations is not None and evaluations >= self.evaluations)
            or (self.seconds is not None and seconds >= self.seconds)
        )


class SearchEngine:
    """What the runner needs of any search: an archive, a generator and counters, checkpointable.

    Subclasses set `model`, `encoding`, `classes` and implement `step()`; state is plain arrays and
    JSON strings, so checkpoints load with `allow_pickle=False`.
    """

    def __init__(self, classes, seed: int):
        self.classes = np.asarray(classes, dtype=np.int64)
        self.rng = np.random.default_rng(seed)
        self.archive = Archive(len(self.classes))
        self.generation = -1  # -1: not started; 0: the starting images have been scored
        self.evaluations = 0
        self.nonfinite = 0  # scores that were NaN or infinite, counted as 0

    def stats(self) -> dict:
        return confidence_stats(self.archive.fitness)

    def state(self) -> dict[str, np.ndarray]:
        counters = {
            "generation": self.generation,
            "evaluations": self.evaluations,
            "nonfinite": self.nonfinite,
        }
        return {
            **self.archive.state(),
            "rng": np.array(json.dumps(self.rng.bit_generator.state)),
            "counters": np.array(json.dumps(counters)),
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.archive = Archive.from_state(state)
        self.rng.bit_generator.state = json.loads(str(state["rng"]))
        counters = json.loads(str(state["counters"]))
        self.generation = counters["generation"]
        self.evaluations = counters["evaluations"]
        self.nonfinite = counters["nonfinite"]


class MapElites(SearchEngine):
    """MAP-Elites over the target classes: parents from the archive, whole batches per generation."""

    def __init__(self, model, encoding, classes: np.ndarray, batch: int, init_size: int, seed: int):
        super().__init__(classes, seed)
        self.model = model
        self.encoding = encoding
        self.batch = batch
        self.init_size = init_size

    def evaluate(self, pop: dict) -> np.ndarray:
        """Fitness [B, cells]: the model's probability of each target class for each genome."""
        probs = self.model.probs(quantise(self.encoding.render(pop), in_place=True))[:, self.classes]
        bad = ~np.isfinite(probs)
        if bad.any():
            self.nonfinite += int(bad.any(axis=1).sum())
            probs = np.where(bad, 0.0, probs)
        self.evaluations += len(probs)
        return probs

    def step(self) -> int:
        """One generation (the first call evaluates the random initial population)."""
        if self.generation < 0:
            pop = self.encoding.init(self.init_size, self.rng)
        else:
            parents = self.archive.sample(self.batch, self.rng)
            pop = self.encoding.vary(parents, self.rng, self.generation + 1, in_place=True)
        fitness = self.evaluate(pop)
        self.generation += 1
        return self.archive.insert(pop, fitness, self.generation)
