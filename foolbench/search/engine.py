"""The seam every search method plugs into: engines in ask/tell form and the one evaluator.

A search is a loop of three steps, as in pyribs' scheduler:

    pop = engine.ask()               # the engine proposes a population of genomes
    fitness = evaluator(pop)         # render -> 8-bit quantise -> model -> target classes' probabilities
    improved = engine.tell(pop, fitness)   # the engine learns from the scores

The engine owns what the method knows (an archive, gradient state, per-class schedules) and never
scores anything itself; the `Evaluator` is the only place where images meet the model, so every
engine's scores are of the images exactly as the runner saves them, non-finite scores are handled
one way and evaluations are counted once. `Search` binds the two and writes their checkpoint state.

Engine state is plain arrays and JSON strings, so checkpoints load with `allow_pickle=False`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from foolbench.encodings import Encoding, Population
from foolbench.images import quantise
from foolbench.search.archive import confidence_stats


@runtime_checkable
class Engine(Protocol):
    """A search method. All randomness comes from the engine's own seeded generator.

    `fitness` and `tell`'s scores are probabilities of the target classes, `classes[j]` in column j.
    """

    classes: np.ndarray  # int64 [n] target class indices
    encoding: Encoding  # how the evaluator turns what `ask` proposes into images
    generation: int  # -1 before the first `tell`, then the number of tells after the first
    nonfinite: int  # non-finite numbers the engine met itself (e.g. gradients); 0 for black-box engines

    @property
    def fitness(self) -> np.ndarray:
        """float [n]: the best score found so far for each target class (-1 where none yet)."""
        ...

    def ask(self) -> Population:
        """The next population to score (the first call: the starting population)."""
        ...

    def tell(self, pop: Population, fitness: np.ndarray) -> int:
        """Learn from the scores `fitness [B, n]` of `pop`; returns how many classes got a better champion."""
        ...

    def champions(self) -> tuple[Population, np.ndarray]:
        """Each target class's best genome, in class order, and the generation it was found in."""
        ...

    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue exactly, as plain arrays (no pickled objects)."""
        ...

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Continue from `state` (written by `state`); the generation is restored by `Search`."""
        ...


class Evaluator:
    """Scores populations for any engine: render, quantise to 8 bits, model probabilities, count.

    Non-finite scores (a model returning NaN or inf) count as 0, and each image that had one is
    counted in `nonfinite`, so a broken model can neither win a cell nor stop the run.
    """

    def __init__(self, model, encoding: Encoding, classes: np.ndarray):
        self.model = model
        self.encoding = encoding
        self.classes = np.asarray(classes, dtype=np.int64)
        self.evaluations = 0
        self.nonfinite = 0

    def images(self, pop: Population) -> np.ndarray:
        """The 8-bit images of `pop` as float32 [B, C, H, W]: exactly what is scored and saved."""
        return quantise(self.encoding.render(pop), in_place=True)

    def __call__(self, pop: Population) -> np.ndarray:
        """Fitness [B, n]: the model's probability of each target class for each genome."""
        probs = self.model.probs(self.images(pop))[:, self.classes]
        bad = ~np.isfinite(probs)
        if bad.any():
            self.nonfinite += int(bad.any(axis=1).sum())
            probs = np.where(bad, 0.0, probs)
        self.evaluations += len(probs)
        return probs


@dataclass
class Search:
    """An engine and its evaluator: one `step` is ask, evaluate, tell. Checkpointable.

    `gradient_passes`: model passes per target image that the engine runs itself at each step after
    the first (a white-box engine's forward and backward pass: 2), beyond the evaluator's scoring.
    They count in `queries`, so every method's cost sits on one axis: images through the model."""

    engine: Engine
    evaluator: Evaluator
    gradient_passes: int = 0

    @property
    def generation(self) -> int:
        return self.engine.generation

    @property
    def evaluations(self) -> int:
        return self.evaluator.evaluations

    @property
    def queries(self) -> int:
        """Model queries so far: every image scored, plus each forward and backward pass a white-box
        engine ran on one image to take its gradient."""
        steps = max(self.engine.generation, 0)
        return self.evaluator.evaluations + self.gradient_passes * len(self.engine.classes) * steps

    @property
    def nonfinite(self) -> int:
        """Non-finite numbers met so far: scores (the evaluator's count) and the engine's own."""
        return self.evaluator.nonfinite + self.engine.nonfinite

    def step(self) -> int:
        """One generation (the first call scores the starting population); returns classes improved."""
        pop = self.engine.ask()
        return self.engine.tell(pop, self.evaluator(pop))

    def stats(self) -> dict:
        return confidence_stats(self.engine.fitness)

    def state(self) -> dict[str, np.ndarray]:
        counters = {
            "generation": self.engine.generation,
            "evaluations": self.evaluator.evaluations,
            "nonfinite": self.evaluator.nonfinite,
        }
        return {**self.engine.state(), "counters": np.array(json.dumps(counters))}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.engine.load_state(state)
        counters = json.loads(str(state["counters"]))
        self.engine.generation = counters["generation"]
        self.evaluator.evaluations = counters["evaluations"]
        self.evaluator.nonfinite = counters["nonfinite"]


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

    def reached(self, search: Search, seconds: float) -> bool:
        """Whether `search` is done after `seconds` of running: never before its first generation."""
        return search.generation >= 0 and self.done(search.generation, search.evaluations, seconds)
