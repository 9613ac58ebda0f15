"""MAP-Elites over classes (the paper's search), batched, as an ask/tell engine.

`ask` draws a whole generation at once: the random initial population first, then parents sampled
uniformly from the occupied cells and varied by the encoding. `tell` inserts the scored batch into
the class archive by the paper's multi-cell rule. Scoring is the shared `Evaluator`'s
(`foolbench.search.engine`); the run directory, checkpoints and progress bar are the runner's.
"""

from __future__ import annotations

import json

import numpy as np

from foolbench.encodings import Encoding, Population, make_encoding
from foolbench.search.archive import Archive

DEFAULT_BATCH = 200


class MapElites:
    """MAP-Elites over the target classes: parents from the archive, whole batches per generation.

    State: the archive, the generator and the generation (the generation is saved by `Search`).
    """

    nonfinite = 0  # black-box: the evaluator counts non-finite scores

    def __init__(self, encoding: Encoding, classes, batch: int, init_size: int, seed: int):
        self.encoding = encoding
        self.classes = np.asarray(classes, dtype=np.int64)
        self.batch = batch
        self.init_size = init_size
        self.rng = np.random.default_rng(seed)
        self.archive = Archive(len(self.classes))
        self.generation = -1  # -1: not started; 0: the initial population has been scored

    @property
    def fitness(self) -> np.ndarray:
        return self.archive.fitness

    def ask(self) -> Population:
        """The random initial population (first call), else one varied child per sampled parent."""
        if self.generation < 0:
            return self.encoding.init(self.init_size, self.rng)
        parents = self.archive.sample(self.batch, self.rng)
        return self.encoding.vary(parents, self.rng, self.generation + 1, in_place=True)

    def tell(self, pop: Population, fitness: np.ndarray) -> int:
        self.generation += 1
        return self.archive.insert(pop, fitness, self.generation)

    def champions(self) -> tuple[Population, np.ndarray]:
        return self.archive.champions(), self.archive.generation

    # -- checkpointing: plain arrays, so np.savez/np.load need no pickle -----------------------------
    def state(self) -> dict[str, np.ndarray]:
        return {**self.archive.state(), "rng": np.array(json.dumps(self.rng.bit_generator.state))}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.archive = Archive.from_state(state)
        self.rng.bit_generator.state = json.loads(str(state["rng"]))


def build(model, classes, seed: int, tables: dict[str, dict]) -> MapElites:
    """The engine a map-elites preset describes: its [encoding], batch and initial population."""
    options = dict(tables["encoding"])
    encoding = make_encoding(options.pop("type"), **options)
    batch = tables.get("search", {}).get("batch", DEFAULT_BATCH)
    return MapElites(encoding, classes, batch, tables.get("search", {}).get("init", batch), seed)
