"""Search engines, keyed by the preset's `attack.method`, and the seam they plug into.

`engine.py` defines the interface (`Engine`: ask/tell), the one `Evaluator` that scores every
engine's populations, and `Search`, which binds the two for the runner. The engines:

  map-elites   `map_elites.MapElites`: the paper's MAP-Elites over classes (any encoding)
  gradient     `gradient.GradientAscent`: gradient ascent on the pixels (white-box)
  patch        `patch.PatchSearch`: a CPPN start, then painted squares (black-box, beyond the paper)
  gradient-cppn  `gradient_cppn.CPPNGradient`: gradient ascent on CPPN weights (white-box, beyond it)

Adding a method: write a class that satisfies `Engine` (its state as plain arrays), a
`build(model, classes, seed, tables) -> Engine` that reads the preset's tables (plain dicts:
`encoding`, `search`, and the engine's own section), and register it in `ENGINES` below under the
`attack.method` name presets will use, with the rules of its own preset section if it has one
(`foolbench.options`). Presets then accept the method and its section, and the runner, checkpoints,
resume, sweeps and reports work for it unchanged (merging class shards stays MAP-Elites' own).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from foolbench.errors import FoolbenchError
from foolbench.options import Rule
from foolbench.search import gradient, gradient_cppn, map_elites, patch
from foolbench.search.engine import Budget, Engine, Evaluator, Search

__all__ = ["ENGINES", "Budget", "Engine", "EngineType", "Evaluator", "Search", "engine_type", "make_search"]


@dataclass(frozen=True)
class EngineType:
    """How a preset's `attack.method` becomes an engine, and which preset tables it reads."""

    build: Callable[..., Engine]  # build(model, classes, seed, tables) -> Engine
    encoding: bool  # whether its presets take an [encoding] table (the engine renders through it)
    section: str | None = None  # the preset table holding the engine's own options, if any
    rules: dict[str, Rule] | None = None  # that table's keys (foolbench.options), checked one by one
    check: Callable[[dict], dict] | None = None  # the whole table (cross-key rules); raises FoolbenchError
    budget_key: str | None = None  # a key of that table that is the run's budget in generations
    default_budget: int | None = None  # its value when the table does not set it
    plan: Callable[[dict, int], dict] | None = None  # its table for a run of N evaluations (plans over N)
    gradient_passes: int = 0  # model passes per target image per step the engine runs itself (white-box: 2)


ENGINES: dict[str, EngineType] = {
    "map-elites": EngineType(map_elites.build, encoding=True),
    "gradient": EngineType(
        gradient.build,
        encoding=False,
        section="gradient",
        rules=gradient.RULES,
        check=gradient.check_options,
        budget_key="steps",
        default_budget=gradient.GradientAscent.DEFAULTS["steps"],
        gradient_passes=2,
    ),
    "gradient-cppn": EngineType(
        gradient_cppn.build,
        encoding=False,
        section=gradient_cppn.SECTION,
        rules=gradient_cppn.RULES,
        check=gradient_cppn.check_options,
        budget_key="steps",
        default_budget=gradient_cppn.CPPNGradient.DEFAULTS["steps"],
        gradient_passes=2,
    ),
    "patch": EngineType(
        patch.build,
        encoding=False,
        section="patch",
        rules=patch.RULES,
        check=patch.check_options,
        plan=patch.plan,
    ),
}


def engine_type(method: str) -> EngineType:
    if method not in ENGINES:
        raise FoolbenchError(f"unknown attack method {method!r}; choose one of {', '.join(ENGINES)}")
    return ENGINES[method]


def make_search(model, method: str, classes, seed: int, tables: dict[str, dict]) -> Search:
    """The engine `method` built from a preset's tables, with an evaluator scoring it on `model`."""
    classes = np.asarray(classes, dtype=np.int64)
    kind = engine_type(method)
    engine = kind.build(model, classes, seed, tables)
    return Search(engine, Evaluator(model, engine.encoding, classes), kind.gradient_passes)
