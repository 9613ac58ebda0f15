"""The class archive of MAP-Elites: one cell per target class, each keeping its champion.

Insertion is multi-cell as in the paper: one child is compared against every cell and takes each
cell where its probability is strictly higher than the champion's. Champions are stored once in a
pool of genomes (one image may hold many cells), so the archive never holds more than one genome
per cell, and often far fewer.
"""

from __future__ import annotations

import numpy as np

from foolbench.encodings import concat, take

EMPTY = -1.0


class Archive:
    """Champion fitness, generation and genome per target class."""

    def __init__(self, cells: int):
        self.fitness = np.full(cells, EMPTY)
        self.generation = np.full(cells, -1, dtype=np.int64)
        self.elite = np.full(cells, -1, dtype=np.int64)  # row of `pool` holding each cell's genome
        self.pool: dict[str, np.ndarray] | None = None

    @property
    def cells(self) -> int:
        return len(self.fitness)

    @property
    def occupied(self) -> np.ndarray:
        return np.flatnonzero(self.elite >= 0)

    def insert(self, pop: dict, fitness: np.ndarray, generation: int) -> int:
        """Offer a scored batch (fitness [B, cells]); returns how many cells got a new champion."""
        best_child = fitness.argmax(axis=0)
        best = fitness[best_child, np.arange(self.cells)]
        wins = best > self.fitness
        if not wins.any():
            return 0
        winners, slot = np.unique(best_child[wins], return_inverse=True)
        kept = np.unique(self.elite[(self.elite >= 0) & ~wins])
        new_elite = self.elite.copy()
        new_elite[~wins & (self.elite >= 0)] = np.searchsorted(kept, self.elite[~wins & (self.elite >= 0)])
        new_elite[wins] = len(kept) + slot
        parts = [take(pop, winners)]
        if len(kept):
            parts.insert(0, take(self.pool, kept))
        self.pool = concat(parts)
        self.elite = new_elite
        self.fitness = np.where(wins, best, self.fitness)
        self.generation = np.where(wins, generation, self.generation)
        return int(wins.sum())

    def sample(self, n: int, rng: np.random.Generator) -> dict:
        """Parents drawn uniformly at random from the occupied cells (new arrays, the caller's to change)."""
        cells = rng.choice(self.occupied, size=n)
        return take(self.pool, self.elite[cells])

    def champion(self, cell: int) -> dict:
        return take(self.pool, self.elite[[cell]])

    def champions(self) -> dict:
        """Every occupied cell's genome, in cell order (cells sharing a genome repeat it)."""
        return take(self.pool, self.elite[self.occupied])

    # -- checkpointing: plain arrays, so np.savez/np.load need no pickle --------------------------
    def state(self) -> dict[str, np.ndarray]:
        out = {
            "archive/fitness": self.fitness,
            "archive/generation": self.generation,
            "archive/elite": self.elite,
        }
        for key, value in (self.pool or {}).items():
            out[f"pool/{key}"] = value
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> Archive:
        archive = cls(len(state["archive/fitness"]))
        archive.fitness = np.array(state["archive/fitness"])
        archive.generation = np.array(state["archive/generation"])
        archive.elite = np.array(state["archive/elite"])
        pool = {k[len("pool/") :]: np.array(v) for k, v in state.items() if k.startswith("pool/")}
        archive.pool = pool or None
        return archive


def confidence_stats(fitness: np.ndarray) -> dict:
    """The paper's figures of an archive: median/mean/max confidence and classes over thresholds."""
    f = np.where(fitness < 0, 0.0, fitness)
    return {
        "median_confidence": float(np.median(f)),
        "mean_confidence": float(np.mean(f)),
        "max_confidence": float(np.max(f)),
        "classes_at_90": int((f >= 0.90).sum()),
        "classes_at_99": int((f >= 0.99).sum()),
        "classes_at_9999": int((f >= 0.9999).sum()),
    }
