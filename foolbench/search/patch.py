"""The patch search: a query-efficient black-box attack, beyond the paper (a random CPPN start, then
Square-Attack-style painted squares), as an ask/tell engine.

The paper's MAP-Elites needs about 2 million evaluations to fool ImageNet models. This search takes
the median of efficientnet-lite0's 10 cpu-scale classes past 99 % within 40,000 evaluations
(benchmarks/results/imagenet_reach.json), with images that stay unrecognisable: CPPN colour fields
strewn with squares.

1. Pool (generation 0): `pool` random fixed-topology CPPNs (`encodings/fixed_cppn.py`), rendered
   and scored at once. Every target class's cell takes the image it likes best (multi-cell, as the
   paper's archive), so each class starts from a texture the model already leans towards.
2. Patch steps (every later generation): each cell proposes `children` copies of its champion,
   each with one square of a random saturated colour (an RGB-cube corner; black or white on grey
   images) painted somewhere in the window the model sees. All cells' children are one batch.
   The square's area is `p` times the window's, `p` following Square Attack's schedule
   (`p_selection`, Andriushchenko et al. 2020) over `schedule` evaluations: big squares first,
   finer ones as the images get good.
3. Tell: the class archive's multi-cell insertion, so a child replaces its own cell's champion when
   it is strictly better, and any child may also take another cell it is better for (stepping
   stones between the classes).

The genome of this engine is the 8-bit image itself (`Canvases`): what is scored, kept and saved
are the same bytes. The state is the archive (champion images and confidences) and the generator;
the step counter is the generation. `schedule` is an option, not read from the run's budget, so a
run extended on resume keeps the squares it was planned with; presets set it to their budget, and
a run given `--evaluations N` (or a protocol's budget) plans over N (`plan`).
"""

from __future__ import annotations

import functools
import json
from typing import Any, ClassVar

import numpy as np

from foolbench.encodings import Population, fixed_cppn
from foolbench.errors import FoolbenchError
from foolbench.images import as_uint8
from foolbench.options import Choice, Float, Int, check_table
from foolbench.search.archive import Archive

# The 8 corners of the RGB cube: Square Attack's squares take the extremes of the allowed range too.
CORNERS = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)], np.uint8)

SUCCESS_GROWTH = 1.5  # sizes = "success": a square's area grows by this after a success, shrinks by its 4th root after a failure

SHIFT = 64  # colours = "shift": how far a square moves each channel (of 255)
CPPN_SIGMA = 0.3  # cppn_evaluations: the first mutation, in units of each weight's initial spread

# Square Attack's p_selection: (last iteration out of 10,000, divisor of p_init) for each stage.
SCHEDULE = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
)


def p_selection(p_init: float, step: int, steps: int) -> float:
    """The share of the window a square covers at `step` of `steps` (Square Attack's schedule, whose
    stages are set for 10,000 iterations, rescaled to `steps`)."""
    it = int(step / max(steps, 1) * 10000)
    for last, divisor in SCHEDULE:
        if it <= last:
            return p_init / divisor
    return p_init / 512


@functools.cache
def _spreads(hidden: int) -> dict[str, float]:
    sample = fixed_cppn.init(256, np.random.default_rng(0), hidden=hidden)
    return {k: float(v.std()) or 0.5 for k, v in sample.items()}  # biases drawn as 0: 0.5


def spread(key: str, options: dict) -> float:
    """The spread of a CPPN weight tensor as `fixed_cppn.init` draws it (0.5 for those it zeroes)."""
    return _spreads(options["cppn_hidden"])[key]


def square_side(p: float, width: int) -> int:
    """The side of a square covering a share `p` of a `width` x `width` window, in [1, width - 1]."""
    return min(max(int(round(np.sqrt(p * width * width))), 1), width - 1)


class Canvases:
    """The engine's "encoding": a genome is the 8-bit image, {"canvas": uint8 [B, C, H, W]}, and
    rendering it only scales it to [0, 1], so what is scored is exactly what is saved."""

    name = "canvas"

    def __init__(self, resolution: int, channels: int):
        self.resolution, self.channels = resolution, channels
        self.options = {"resolution": resolution, "channels": channels}

    def render(self, pop: Population) -> np.ndarray:
        return pop["canvas"].astype(np.float32) / np.float32(255.0)


class PatchSearch:
    """A CPPN pool, then per cell `children` painted squares per step; state: archive and generator."""

    nonfinite = 0  # black-box: the evaluator counts non-finite scores
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "resolution": None,  # None: the side the model resizes to, else its input size
        "channels": None,  # None: the model's channels
        "window": None,  # [start, end) rows and columns painted; None: those the model sees
        "pool": 200,  # random CPPNs scored first (every class starts from its best one)
        "children": 1,  # children per class per step
        "squares": 1,  # squares painted on each child
        "colours": "corners",  # the RGB cube's 8 (Square Attack's extremes); any: any colour; copy: see fill
        "p_init": 0.02,  # first squares cover this share of the window (~32 px of 224)
        "schedule": 40_000,  # evaluations the square sizes shrink over (the run's budget)
        "restart": 0,  # a class whose last `restart` children all failed starts its squares over (0: never)
        "sizes": "schedule",  # Square Attack's over the budget; success: per class, the 1/5th rule; random
        "done": 1.0,  # a class at this confidence gets no children while another is below it
        "cppn_evaluations": 0,  # after the pool: a (1+1)-ES on each class's CPPN weights, before squares
        "cppn_hidden": 16,  # hidden units per CPPN layer (a multiple of 4)
        "cppn_resolution": 128,  # CPPNs are drawn at this size, then resized to the canvas (MNIST too)
    }

    def __init__(self, model, classes, seed: int, **options: Any):
        self.classes = np.asarray(classes, dtype=np.int64)
        self.options = check_options(options, model)
        o = self.options
        self.encoding = Canvases(o["resolution"], o["channels"])
        self.rng = np.random.default_rng(seed)
        self.archive = Archive(len(self.classes))
        self.generation = -1  # -1: not started; 0: the pool has been scored; then one per step
        n = len(self.classes)
        self.spent = 0  # children scored so far (the evaluations after the pool)
        self.start = np.zeros(n, np.int64)  # `spent` when each class's squares began (0, or its restart)
        self.stall = np.zeros(n, np.int64)  # children each class has had since its champion improved
        self.p = np.full(n, self.options["p_init"])  # each class's square share (sizes = "success")
        self.palette = CORNERS[:, : o["channels"]] if o["channels"] == 3 else np.array([[0], [255]], np.uint8)
        # colours = "learned": per class and palette colour, the class's own children that raised its
        # confidence and those that did not (Thompson sampling draws colours by these)
        self.wins = np.zeros((n, len(self.palette)), np.int64)
        self.losses = np.zeros((n, len(self.palette)), np.int64)
        self.painted: list[tuple[int, list[int]]] = []  # the last batch: (cell, palette colours) per child
        # cppn_evaluations: each class's CPPN and mutation size while they last; the squares start after
        self.genomes: dict[str, np.ndarray] | None = None
        self.sigma = np.full(n, CPPN_SIGMA)
        self.start[:] = o["cppn_evaluations"]
        self.batch: dict[str, np.ndarray] | None = None  # the CPPNs of the batch asked, until told

    @property
    def fitness(self) -> np.ndarray:
        return self.archive.fitness

    def ask(self) -> Population:
        """The CPPN pool (first call), else every cell's children, cell by cell, in one batch."""
        if self.generation < 0:
            return {"canvas": self.pool(self.options["pool"])}
        if self.spent < self.options["cppn_evaluations"]:
            return {"canvas": self.mutate()}
        return {"canvas": self.paint()}

    def tell(self, pop: Population, fitness: np.ndarray) -> int:
        """Insert the scored batch; after a patch step, count each class's failed children and
        restart the squares of a class that has failed `restart` times in a row."""
        parents, before = self.active(), self.archive.fitness.copy()
        self.generation += 1
        improved = self.archive.insert(pop, fitness, self.generation)
        if self.batch is not None:  # the pool or CPPN children: each cell keeps its champion's CPPN
            self.tell_cppns(fitness, before, parents)
        if self.generation == 0:  # the pool
            return improved
        self.spent += len(fitness)
        if self.spent >= self.options["cppn_evaluations"]:
            self.genomes = None  # the squares paint on the images from now on
        for row, (cell, colours) in enumerate(self.painted):  # each child's colours, by its own class
            tally = self.wins if fitness[row, cell] > before[cell] else self.losses
            np.add.at(tally[cell], colours, 1)
        self.stall[parents] += self.options["children"]
        won = self.archive.fitness > before
        self.stall[won] = 0
        if self.options["sizes"] == "success":  # Rechenberg's 1/5th rule: steady at 1 success in 5
            grow = np.where(won, SUCCESS_GROWTH, SUCCESS_GROWTH ** (-1 / 4))[parents]
            lo, hi = self.options["window"]  # between one pixel and p_init
            self.p[parents] = np.clip(self.p[parents] * grow, 1 / (hi - lo) ** 2, self.options["p_init"])
        if self.options["restart"]:
            stalled = self.stall >= self.options["restart"]
            self.start[stalled], self.stall[stalled] = self.spent, 0
        return improved

    def tell_cppns(self, fitness: np.ndarray, before: np.ndarray, parents: np.ndarray) -> None:
        """After the pool or a CPPN step: a cell that got a new champion keeps its CPPN; each
        parent's mutation size follows the 1/5th rule."""
        won = self.archive.fitness > before
        rows = fitness.argmax(axis=0)  # the child each cell took, where it took one
        if self.genomes is None:
            self.genomes = {k: v[rows] for k, v in self.batch.items()}
        else:
            for k, v in self.batch.items():
                self.genomes[k][won] = v[rows[won]]
            self.sigma[parents] *= np.where(won, SUCCESS_GROWTH, SUCCESS_GROWTH ** (-1 / 4))[parents]
        self.batch = None

    def mutate(self) -> np.ndarray:
        """Each active cell's CPPN, `children` times, its weights moved by Gaussian noise (sigma times
        each weight's initial spread), drawn as canvases."""
        o = self.options
        cells = np.repeat(self.active(), o["children"])
        self.batch = {}
        for k, v in self.genomes.items():  # key by key, in the genome's order
            scale = (self.sigma[cells] * spread(k, o)).reshape(-1, *[1] * (v.ndim - 1))
            self.batch[k] = (v[cells] + self.rng.standard_normal(v[cells].shape) * scale).astype(np.float32)
        self.painted = []
        return self.draw(self.batch)

    def active(self) -> np.ndarray:
        """The cells that get children: those below `done`, or all once every one has reached it."""
        below = np.flatnonzero(self.archive.fitness < self.options["done"])
        return below if len(below) else np.arange(len(self.classes))

    def side(self, cell: int) -> int:
        """The side of the squares painted for `cell` now: p_selection over the evaluations after the
        pool, from where the class's squares began (0, or its last restart) to the end of `schedule`."""
        o = self.options
        lo, hi = o["window"]
        if o["sizes"] == "success":
            return square_side(self.p[cell], hi - lo)
        if o["sizes"] == "random":  # log-uniform between one pixel and p_init: every scale at every step
            share = np.exp(self.rng.uniform(np.log(1 / (hi - lo) ** 2), np.log(o["p_init"])))
            return square_side(share, hi - lo)
        left = o["schedule"] - o["pool"] - self.start[cell]
        return square_side(p_selection(o["p_init"], self.spent - self.start[cell], left), hi - lo)

    def champions(self) -> tuple[Population, np.ndarray]:
        return self.archive.champions(), self.archive.generation

    def pool(self, n: int) -> np.ndarray:
        """`n` random CPPN images as uint8 canvases (grey: the red channel)."""
        o = self.options
        genome = fixed_cppn.init(n, self.rng, hidden=o["cppn_hidden"])
        if o["cppn_evaluations"]:
            self.batch = genome
        return self.draw(genome)

    def draw(self, genome: dict[str, np.ndarray]) -> np.ndarray:
        o = self.options
        images = as_uint8(fixed_cppn.render(genome, o["resolution"], o["cppn_resolution"]))
        return np.ascontiguousarray(images[:, : o["channels"]])

    def paint(self) -> np.ndarray:
        """Each active cell's champion, `children` times, each with `squares` squares painted on it.
        Random numbers are drawn child by child, square by square: the corner (y, x), then the colour."""
        o = self.options
        cells = np.repeat(self.active(), o["children"])
        kids = self.archive.pool["canvas"][self.archive.elite[cells]]  # fancy indexing: a copy
        lo, hi = o["window"]
        self.painted = []
        for cell, kid in zip(cells, kids, strict=True):
            side, colours = self.side(cell), []
            for _ in range(o["squares"]):
                y, x = self.rng.integers(lo, hi - side + 1, 2)
                region = kid[:, y : y + side, x : x + side]  # a view: filled in place
                region[:] = self.fill(kid, region, cell, colours)
            self.painted.append((int(cell), colours))
        return kids

    def fill(self, kid: np.ndarray, region: np.ndarray, cell: int, colours: list[int]) -> np.ndarray:
        """What a square `region` of `kid` gets (`colours` collects the palette colours used):
        corners/learned: one palette colour; any: any colour; copy: another square of the same image
        (the texture the model already likes, spread); shift: each channel up or down by SHIFT (Square
        Attack's +-eps step, added to what is there); stripes: 1- or 2-pixel stripes of two colours."""
        o, side = self.options, region.shape[-1]
        if o["colours"] == "copy":
            lo, hi = o["window"]
            y, x = self.rng.integers(lo, hi - side + 1, 2)
            return kid[:, y : y + side, x : x + side].copy()
        if o["colours"] == "any":
            return self.rng.integers(0, 256, o["channels"]).astype(np.uint8)[:, None, None]
        if o["colours"] == "shift":
            signs = 2 * self.rng.integers(0, 2, o["channels"]) - 1
            return np.clip(region.astype(np.int16) + SHIFT * signs[:, None, None], 0, 255).astype(np.uint8)
        if o["colours"] == "stripes":
            a, b = self.rng.integers(0, len(self.palette), 2)
            width, across = self.rng.integers(1, 3), self.rng.integers(0, 2)
            odd = (np.arange(side) // width) % 2 == 1
            odd = odd[None, :] if across else odd[:, None]
            return np.where(odd[None], self.palette[b][:, None, None], self.palette[a][:, None, None])
        if o["colours"] == "learned":  # Thompson sampling: the best of one draw per colour
            colours.append(int(np.argmax(self.rng.beta(1 + self.wins[cell], 1 + self.losses[cell]))))
        else:
            colours.append(int(self.rng.integers(0, len(self.palette))))
        return self.palette[colours[-1]][:, None, None]

    # -- checkpointing: plain arrays, so np.savez/np.load need no pickle -----------------------------
    def state(self) -> dict[str, np.ndarray]:
        return {
            **self.archive.state(),
            "rng": np.array(json.dumps(self.rng.bit_generator.state)),
            "patch/spent": np.array(self.spent),
            "patch/start": self.start,
            "patch/stall": self.stall,
            "patch/p": self.p,
            "patch/wins": self.wins,
            "patch/losses": self.losses,
            "patch/sigma": self.sigma,
            **{f"cppn/{k}": v for k, v in (self.genomes or {}).items()},
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        archive = Archive.from_state(state)
        if archive.cells != len(self.classes) or archive.pool is None or "canvas" not in archive.pool:
            raise FoolbenchError(
                "the checkpoint holds no patch-search images for these target classes; start the run again"
            )
        if "patch/spent" not in state:
            raise FoolbenchError(
                "the checkpoint was written by an older patch search (before per-class schedules); "
                "start the run again"
            )
        self.archive = archive
        self.rng.bit_generator.state = json.loads(str(state["rng"]))
        self.spent = int(state["patch/spent"])
        self.start, self.stall = np.array(state["patch/start"]), np.array(state["patch/stall"])
        self.p = np.array(state["patch/p"])
        self.wins, self.losses = np.array(state["patch/wins"]), np.array(state["patch/losses"])
        self.sigma = np.array(state["patch/sigma"])
        genomes = {k[len("cppn/") :]: np.array(v) for k, v in state.items() if k.startswith("cppn/")}
        self.genomes = genomes or None


def plan(options: dict, evaluations: int) -> dict:
    """The [patch] options of a run given `evaluations` (`--evaluations N`): the squares shrink over
    those N, as over a protocol's budget, so a short run reaches the small squares too."""
    pool = options.get("pool", PatchSearch.DEFAULTS["pool"])
    if evaluations <= pool:
        raise FoolbenchError(
            f"--evaluations {evaluations} leaves no evaluations after the patch search's pool of {pool} "
            f"random CPPNs; give more than {pool}"
        )
    return {**options, "schedule": evaluations}


def build(model, classes, seed: int, tables: dict[str, dict]) -> PatchSearch:
    """The engine a patch preset describes: its [patch] options."""
    return PatchSearch(model, classes, seed, **tables.get("patch", {}))


# -- options ---------------------------------------------------------------------------------------
class Window:
    """[start, end): the rows and columns of the canvas the model sees, two whole numbers."""

    def check(self, name: str, value: Any) -> list[int] | None:
        if value is None:
            return None
        ok = isinstance(value, list | tuple) and len(value) == 2
        if not ok or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value):
            raise FoolbenchError(f"'{name}' must be [start, end], two whole numbers, got {value!r}")
        return [int(v) for v in value]


RULES = {
    "resolution": Int(2, 4096),
    "channels": Choice((1, 3)),
    "window": Window(),
    "pool": Int(1, 1_000_000),
    "children": Int(1, 10_000),
    "squares": Int(1, 1000),
    "colours": Choice(("corners", "any", "copy", "learned", "shift", "stripes")),
    "p_init": Float(0.0, 1.0, positive=True),
    "schedule": Int(1, 10**12),
    "restart": Int(0, 10**9),
    "sizes": Choice(("schedule", "success", "random")),
    "done": Float(0.0, 1.0, positive=True),
    "cppn_evaluations": Int(0, 10**12),
    "cppn_hidden": Int(4, 1024),
    "cppn_resolution": Int(2, 4096),
}


def visible_window(spec, resolution: int) -> list[int]:
    """[start, end) of the canvas rows and columns the model sees: its centre crop where it resizes
    and crops one view (256 -> 224: [16, 240]), else the whole canvas (ten crops see all of it).
    Squares painted outside it would be evaluations spent on pixels the model never sees."""
    if spec is None or spec.resize is None or spec.views > 1:
        return [0, resolution]
    scale = resolution / spec.resize  # canvas pixels per pixel of the resized image
    starts = [(spec.resize - side) // 2 for side in spec.size]
    lo = min(int(np.floor(start * scale)) for start in starts)
    hi = max(int(np.ceil((start + side) * scale)) for start, side in zip(starts, spec.size, strict=True))
    return [max(lo, 0), min(hi, resolution)]


def check_options(given: dict, model=None) -> dict:
    """The [patch] options over the defaults (resolution and channels: the model's, when it is
    given); unknown names, bad values and a window outside the canvas are errors naming them."""
    check_table(given, RULES, "patch")
    o = {**PatchSearch.DEFAULTS, **given}
    spec = getattr(model, "spec", None)
    if o["resolution"] is None and spec is not None:
        o["resolution"] = int(spec.resize or max(spec.size))  # resized to the model untouched
    if o["channels"] is None and spec is not None:
        o["channels"] = spec.channels if spec.channels in (1, 3) else 3
    o = {k: (v if v is None else RULES[k].check(f"patch.{k}", v)) for k, v in o.items()}
    if o["cppn_hidden"] % 4:
        raise FoolbenchError(
            f"'patch.cppn_hidden' must be a multiple of 4 (sin, tanh, Gaussian, abs units), got {o['cppn_hidden']}"
        )
    if o["schedule"] <= o["pool"]:
        raise FoolbenchError(
            f"'patch.schedule' ({o['schedule']}) must exceed 'patch.pool' ({o['pool']}): it counts the "
            "pool's evaluations too; set it to the run's evaluation budget"
        )
    if o["resolution"] is not None:
        o["window"] = o["window"] or visible_window(spec, o["resolution"])
        lo, hi = o["window"]
        if not 0 <= lo < hi - 1 < o["resolution"]:
            raise FoolbenchError(
                f"'patch.window' {o['window']} is not inside the {o['resolution']}-pixel canvas; give "
                f"[start, end] with 0 <= start, start + 2 <= end <= {o['resolution']}"
            )
    return o
