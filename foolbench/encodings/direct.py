"""Direct encoding: one gene in [0, 1] per pixel and channel (paper, "Direct encoding").

Also home of the real-valued variation operators (Deb's bounded polynomial mutation, SBX), which the
CPPN encoding reuses for its weights.
"""

import math
from typing import Any, ClassVar

import numpy as np

from foolbench.encodings.colour import hls_to_rgb
from foolbench.errors import FoolbenchError
from foolbench.options import Bool, Choice, Float, Int, with_defaults

Population = dict[str, np.ndarray]
SBX_BLOCK_GENES = 2**21


# ---------------------------------------------------------------- variation operators


def bernoulli_indices(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `n` independent coin flips with success probability `rate` that came up heads.

    Draws geometric gaps between successes instead of one number per gene, so the cost scales with
    the number of chosen genes (rate * n), not with n: this is what keeps mutation of 256x256x3
    genomes cheap.
    """
    if rate <= 0.0 or n == 0:
        return np.empty(0, dtype=np.int64)
    if rate >= 1.0:
        return np.arange(n, dtype=np.int64)
    log_miss = math.log1p(-rate)
    expected = n * rate
    batch = int(expected + 6.0 * math.sqrt(expected) + 16)
    parts, last = [], -1
    while last < n:
        gaps = (np.log(1.0 - rng.random(batch)) * (1.0 / log_miss)).astype(np.int64) + 1  # >= 0: floor
        idx = last + np.cumsum(gaps)
        parts.append(idx)
        last = int(idx[-1])
    idx = np.concatenate(parts)
    return idx[idx < n]


def polynomial_mutation(x: np.ndarray, u: np.ndarray, low: float, high: float, eta: float) -> np.ndarray:
    """Deb's bounded polynomial mutation (NSGA-II; DEAP's `mutPolynomialBounded`) of values `x`.

    `u` holds one uniform [0, 1) number per value: below 0.5 the value moves down, above it up. The
    perturbation shrinks near a bound so results stay in [low, high]; eta (distribution index) sets
    how local the jump is (15 in the paper). Computed in float32, powers as exp/log, and the two
    sides blended arithmetically: numpy's `where` on a random mask is several times slower than
    the whole formula.
    """
    x = np.asarray(x, dtype=np.float32)
    u = np.asarray(u, dtype=np.float32)
    one, span, power = np.float32(1.0), np.float32(high - low), np.float32(eta + 1.0)
    side = np.sign(u - np.float32(0.5))  # -1 down, +1 up (0 at u == 0.5, where neither side moves)
    position = (x - np.float32(low)) / span
    # 1 - delta_1 = 1 - position going down, 1 - delta_2 = position going up
    xy = position + (side < 0).astype(np.float32) * (one - position - position)
    share = np.minimum(u, one - u)  # u going down, 1 - u going up
    twice = share + share
    val = twice + (one - twice) * _pow(xy, power)
    moved = x - side * (_pow(val, one / power) - one) * span  # delta_q = +-(val ** (1 / power) - 1)
    return np.clip(moved, low, high, out=moved)


def _pow(base: np.ndarray, exponent: float) -> np.ndarray:
    """base ** exponent for base >= 0 (0 ** positive = 0) via exp/log, numpy's fast vectorised path."""
    with np.errstate(divide="ignore"):
        return np.exp(np.float32(exponent) * np.log(base))


def sbx_crossover(genes: np.ndarray, rng: np.random.Generator, rate: float, eta: float) -> np.ndarray:
    """Simulated binary crossover bounded to [0, 1], as the released code (sferes2's `evo_float` SBX).

    Parents are shuffled into pairs; each pair crosses with probability `rate`; within a crossing
    pair every gene where the parents differ crosses (Deb's NSGA-II code, from which sferes2's is
    taken, would cross each with probability 0.5), one uniform number per gene serving both children,
    whose values are then swapped by a fair coin. With an odd count the unpaired parent is copied.
    Children keep their parents' rows, so the output has the same shape as the input. Pairs are
    processed a block at a time to bound the float32 temporaries for 256x256x3 genomes.
    """
    out = genes.copy()
    flat = out.reshape(len(out), int(np.prod(out.shape[1:])))
    perm = rng.permutation(len(out))
    half = len(out) // 2
    crossing = rng.random(half) < rate
    first, second = perm[:half][crossing], perm[half : 2 * half][crossing]
    block = max(1, SBX_BLOCK_GENES // max(flat.shape[1], 1))
    for start in range(0, len(first), block):
        rows_a, rows_b = first[start : start + block], second[start : start + block]
        flat[rows_a], flat[rows_b] = _sbx_pairs(flat[rows_a], flat[rows_b], rng, eta)
    return out


def _sbx_pairs(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, eta: float
) -> tuple[np.ndarray, np.ndarray]:
    """SBX children of parent rows `a` and `b` (float32, same shape), gene by gene."""
    u = rng.random(a.shape, dtype=np.float32)
    swap = rng.random(a.shape, dtype=np.float32) < 0.5
    y1, y2 = np.minimum(a, b), np.maximum(a, b)
    diff = y2 - y1
    chosen = diff > 0
    diff[~chosen] = 1.0  # keeps the formulas finite where nothing crosses; those genes are not used
    c1 = np.clip(0.5 * (y1 + y2 - _sbx_spread(1.0 + 2.0 * y1 / diff, u, eta) * diff), 0.0, 1.0)
    c2 = np.clip(0.5 * (y1 + y2 + _sbx_spread(1.0 + 2.0 * (1.0 - y2) / diff, u, eta) * diff), 0.0, 1.0)
    child_a = np.where(chosen, np.where(swap, c2, c1), a)
    child_b = np.where(chosen, np.where(swap, c1, c2), b)
    return child_a, child_b


def _sbx_spread(beta: np.ndarray, u: np.ndarray, eta: float) -> np.ndarray:
    """SBX spread factor beta_q for the bounded variant (alpha accounts for the distance to a bound)."""
    alpha = 2.0 - _pow(beta, -(eta + 1.0))
    inside = u <= 1.0 / alpha
    base = np.where(inside, u * alpha, 1.0 / (2.0 - u * alpha))
    return _pow(base, 1.0 / (eta + 1.0))


def mutation_rate_at(rate: float, halving: int | None, generation: int) -> float:
    """Per-gene mutation probability at `generation`: the paper halves it every `halving` generations.

    `halving` of 0 or None keeps it fixed, as the released code does.
    """
    if not halving:
        return rate
    return rate * 0.5 ** (max(generation, 0) // halving)


# ---------------------------------------------------------------- the encoding


class DirectEncoding:
    """Genome `{"genes": float32 [B, C, H, W] in [0, 1]}`; the image is the genes themselves."""

    name = "direct"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "resolution": 28,
        "channels": 1,
        "colour": "rgb",
        "mutation_rate": 0.1,
        "rate_halving": 1000,
        "eta_m": 15.0,
        "crossover": False,
        "crossover_rate": 0.5,
        "eta_c": 10.0,
    }

    RULES: ClassVar[dict] = {
        "resolution": Int(1),
        "channels": Choice((1, 3)),
        "colour": Choice(("rgb", "hls")),
        "mutation_rate": Float(0.0, 1.0),
        "rate_halving": Int(0, none=True),  # 0 or None: a fixed rate, as the released code
        "eta_m": Float(0.0),
        "crossover": Bool(),
        "crossover_rate": Float(0.0, 1.0),
        "eta_c": Float(0.0),
    }

    def __init__(self, **options: Any) -> None:
        self.options = with_defaults(options, self.DEFAULTS, self.RULES, "encoding")
        self.resolution, self.channels = self.options["resolution"], self.options["channels"]
        if self.options["colour"] == "hls" and self.channels != 3:
            raise FoolbenchError("'encoding.colour' = 'hls' needs channels = 3")

    def init(self, n: int, rng: np.random.Generator) -> Population:
        """Uniform random genes in [0, 1) (the paper's random start, before scaling by 255)."""
        shape = (n, self.channels, self.resolution, self.resolution)
        return {"genes": rng.random(shape, dtype=np.float32)}

    def vary(
        self, parents: Population, rng: np.random.Generator, generation: int, in_place: bool = False
    ) -> Population:
        """Optional SBX crossover between shuffled parent pairs, then polynomial mutation of each child
        (`in_place`: see `Encoding.vary`)."""
        opts = self.options
        genes = parents["genes"].astype(np.float32, copy=False)
        if opts["crossover"]:
            genes = sbx_crossover(genes, rng, opts["crossover_rate"], opts["eta_c"])
        elif genes is parents["genes"] and not in_place:  # (astype already made a new array otherwise)
            genes = genes.copy()
        rate = mutation_rate_at(opts["mutation_rate"], opts["rate_halving"], generation)
        flat = genes.reshape(-1)
        idx = bernoulli_indices(flat.size, rate, rng)
        flat[idx] = polynomial_mutation(flat[idx], rng.random(len(idx)), 0.0, 1.0, opts["eta_m"])
        return {"genes": genes}

    def render(self, pop: Population) -> np.ndarray:
        """Images float32 `[B, C, H, W]` in [0, 1]: a copy of the genes, or their HLS->RGB conversion."""
        genes = pop["genes"]
        if self.options["colour"] == "hls":
            return hls_to_rgb(genes)
        return genes.astype(np.float32, copy=True)
