"""CPPN encoding (paper, "Indirect encoding: CPPN"), a whole population at once.

A population is stored TensorNEAT-style as padded arrays over a fixed slot layout, so the search can
index, concatenate and `np.savez` it like any other genome dict:

- slots `0..3` are the inputs x, y, d, bias; the next `n_out` slots are the outputs; the remaining
  `max_hidden` slots hold hidden nodes (alive or free);
- `alive` bool [P, N], `act` int8 [P, N] (activation id, -1 for inputs and free slots),
  `conn` bool [P, N, N] with `conn[p, dst, src]`, `weight` float32 [P, N, N] (0 where no connection),
  `order` float64 [P, N]: inputs 0, outputs 1, hidden nodes strictly between (free slots 0).

A connection src->dst may exist only if `order[src] < order[dst]`, which makes every network
feed-forward by construction: inputs are sources, outputs are sinks, cycles cannot form.
"""

import contextlib
import functools
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch

from foolbench.encodings.colour import hls_to_rgb
from foolbench.encodings.direct import Population, bernoulli_indices, polynomial_mutation
from foolbench.errors import FoolbenchError
from foolbench.options import Choice, Float, Int, with_defaults

N_INPUTS = 4
ACTIVATIONS = ("sine", "sigmoid", "gaussian", "identity")
NO_ACTIVATION = -1
RENDER_BUDGET_BYTES = 64 * 2**20
# Renders with fewer (needed nodes x pixels) than this run on one torch thread (see `render_outputs`).
SERIAL_RENDER_ELEMENTS = 2**23
# From this resolution on, nodes of x only, y only or neither are computed on one line of pixels;
# below it the extra passes cost more than they save (28x28: 23% slower, 256x256: 10% faster).
LINE_RESOLUTION = 64
KEYS = ("alive", "act", "conn", "weight", "order")


class CPPNEncoding:
    """CPPN genomes (padded arrays, see the module docstring) rendered to images by torch on the CPU."""

    name = "cppn"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "resolution": 28,
        "channels": 1,
        "max_hidden": 64,
        "add_connection": 0.5,
        "delete_connection": 0.3,
        "add_node": 0.5,
        "delete_node": 0.2,
        "weight_rate": 0.1,
        "eta_m": 15.0,
        "weight_range": 10.0,
        "activation_rate": 0.1,
        "coordinates": "normalised",
    }
    PROBABILITIES = ("add_connection", "delete_connection", "add_node", "delete_node")

    RULES: ClassVar[dict] = {
        "resolution": Int(1),
        "channels": Choice((1, 3)),
        "max_hidden": Int(0, 1024),
        **{key: Float(0.0, 1.0) for key in PROBABILITIES},
        "weight_rate": Float(0.0, 1.0),
        "eta_m": Float(0.0),
        "weight_range": Float(0.0, positive=True),
        "activation_rate": Float(0.0, 1.0),
        "coordinates": Choice(("normalised", "pixel")),
    }

    def __init__(self, **options: Any) -> None:
        self.options = with_defaults(options, self.DEFAULTS, self.RULES, "encoding")
        self.resolution, self.channels = self.options["resolution"], self.options["channels"]
        self.first_hidden = N_INPUTS + self.channels
        self.n_nodes = self.first_hidden + self.options["max_hidden"]

    def init(self, n: int, rng: np.random.Generator) -> Population:
        """Inputs fully connected to the outputs with uniform weights, no hidden nodes (as the paper)."""
        n_nodes, outputs, limit = (
            self.n_nodes,
            slice(N_INPUTS, self.first_hidden),
            self.options["weight_range"],
        )
        alive = np.zeros((n, n_nodes), dtype=bool)
        alive[:, : self.first_hidden] = True
        act = np.full((n, n_nodes), NO_ACTIVATION, dtype=np.int8)
        act[:, outputs] = rng.integers(0, len(ACTIVATIONS), (n, self.channels))
        conn = np.zeros((n, n_nodes, n_nodes), dtype=bool)
        conn[:, outputs, :N_INPUTS] = True
        weight = np.zeros((n, n_nodes, n_nodes), dtype=np.float32)
        weight[:, outputs, :N_INPUTS] = rng.uniform(-limit, limit, (n, self.channels, N_INPUTS))
        order = np.zeros((n, n_nodes), dtype=np.float64)
        order[:, outputs] = 1.0
        return {"alive": alive, "act": act, "conn": conn, "weight": weight, "order": order}

    def vary(
        self, parents: Population, rng: np.random.Generator, generation: int, in_place: bool = False
    ) -> Population:
        """Mutate a copy of every parent, or the parents themselves when `in_place` (see
        `Encoding.vary`); no crossover for CPPNs, and `generation` is unused here.

        Each structural mutation hits each child independently with its probability and is applied
        to all the children it hits at once.
        """
        self._check(parents)
        opts = self.options
        pop = {key: parents[key] if in_place else parents[key].copy() for key in KEYS}
        # The operators see only the leading slots that hold nodes, plus one free slot for add_node
        # (views, so they write into `pop`): the same draws and results, on ~10x fewer elements.
        used = leading_slots(pop, spare=1)
        mutate_weights(used, rng, opts["weight_rate"], opts["eta_m"], opts["weight_range"])
        mutate_activations(pop, rng, opts["activation_rate"])
        count = len(pop["alive"])
        hit = {key: np.flatnonzero(rng.random(count) < opts[key]) for key in self.PROBABILITIES}
        add_connection(used, hit["add_connection"], rng, opts["weight_range"])
        delete_connection(used, hit["delete_connection"], rng)
        add_node(used, hit["add_node"], rng, self.first_hidden)
        delete_node(used, hit["delete_node"], rng, self.first_hidden)
        return pop

    def render(self, pop: Population) -> np.ndarray:
        """Images float32 `[B, C, H, W]` in [0, 1]; with 3 channels the outputs are H, L, S -> RGB."""
        self._check(pop)
        images = render_outputs(pop, self.resolution, self.options["coordinates"], self.channels)
        return hls_to_rgb(images, out=images) if self.channels == 3 else images

    def _check(self, pop: Population) -> None:
        """Refuse genomes made with another `channels`/`max_hidden` (e.g. loaded from another run)."""
        missing = [key for key in KEYS if key not in pop]
        if missing or pop["alive"].shape[1:] != (self.n_nodes,):
            got = f"missing {missing}" if missing else f"{pop['alive'].shape[1]} node slots"
            raise FoolbenchError(
                f"CPPN population does not match this encoding ({got}; expected {self.n_nodes} node slots "
                f"= 4 inputs + {self.channels} outputs + max_hidden {self.options['max_hidden']})"
            )


# ---------------------------------------------------------------- mutation operators (in place)


def pick_true(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pick one True column uniformly at random in every row of a `[k, M]` mask, all rows at once.

    Returns (column index, row had any True). Uses one uniform number per row, turned into a rank
    among the row's True entries (listed row by row by `nonzero`), so no per-row Python loop is needed.
    """
    rows, cols = np.nonzero(mask)
    count = np.bincount(rows, minlength=len(mask))
    first = np.cumsum(count) - count
    rank = np.minimum(np.floor(rng.random(len(mask)) * count).astype(np.int64), np.maximum(count - 1, 0))
    found = count > 0
    pick = np.zeros(len(mask), dtype=np.int64)
    pick[found] = cols[first[found] + rank[found]]
    return pick, found


def _flat_pairs(matrices: np.ndarray) -> np.ndarray:
    """`[k, N, N]` -> `[k, N*N]` (also for k == 0), so a pair is picked as one flat index `dst * N + src`."""
    return matrices.reshape(len(matrices), -1 if len(matrices) else matrices.shape[1] * matrices.shape[2])


def leading_slots(pop: Population, spare: int = 0) -> Population:
    """Views of `pop` cut to the node slots up to the last one alive in any genome, plus `spare`.

    Connections only join alive nodes and `add_node` fills the first free slot, so the tail of the
    padded arrays is empty: scanning it (most of the [P, N, N] masks) changes nothing.
    """
    alive = np.flatnonzero(pop["alive"].any(axis=0))
    if not len(alive):  # an empty population
        return pop
    used = min(pop["alive"].shape[1], int(alive[-1]) + 1 + spare)
    return {
        key: value[:, :used, :used] if key in ("conn", "weight") else value[:, :used]
        for key, value in pop.items()
    }


def mutate_weights(pop: Population, rng: np.random.Generator, rate: float, eta: float, limit: float) -> None:
    """Polynomial mutation of each existing connection weight with probability `rate`, on [-limit, limit]."""
    genome, dst, src = edge_list(pop["conn"])
    chosen = bernoulli_indices(len(genome), rate, rng)
    at = (genome[chosen], dst[chosen], src[chosen])
    weights = pop["weight"]
    weights[at] = polynomial_mutation(weights[at], rng.random(len(chosen)), -limit, limit, eta)


def mutate_activations(pop: Population, rng: np.random.Generator, rate: float) -> None:
    """Redraw the activation of each alive non-input node with probability `rate`."""
    nodes = pop["alive"].copy()
    nodes[:, :N_INPUTS] = False
    candidates = np.flatnonzero(nodes)
    chosen = candidates[bernoulli_indices(len(candidates), rate, rng)]
    pop["act"].reshape(-1)[chosen] = rng.integers(0, len(ACTIVATIONS), len(chosen))


def add_connection(pop: Population, rows: np.ndarray, rng: np.random.Generator, limit: float) -> None:
    """Connect a random allowed pair (both alive, order increasing, not yet connected) in each row."""
    alive, order = pop["alive"][rows], pop["order"][rows]
    allowed = alive[:, :, None] & alive[:, None, :] & (order[:, None, :] < order[:, :, None])
    allowed &= ~pop["conn"][rows]
    pick, found = pick_true(_flat_pairs(allowed), rng)
    rows, (dst, src) = rows[found], np.divmod(pick[found], alive.shape[1])
    pop["conn"][rows, dst, src] = True
    pop["weight"][rows, dst, src] = rng.uniform(-limit, limit, len(rows))


def delete_connection(pop: Population, rows: np.ndarray, rng: np.random.Generator) -> None:
    """Remove one random existing connection from each row's genome."""
    pick, found = pick_true(_flat_pairs(pop["conn"][rows]), rng)
    rows, (dst, src) = rows[found], np.divmod(pick[found], pop["conn"].shape[1])
    pop["conn"][rows, dst, src] = False
    pop["weight"][rows, dst, src] = 0.0


def add_node(pop: Population, rows: np.ndarray, rng: np.random.Generator, first_hidden: int) -> None:
    """NEAT node insertion: split a random connection s->d into s->h (weight 1) and h->d (old weight).

    h takes the first free hidden slot and an order key drawn strictly between those of s and d, so
    the network stays feed-forward. A no-op for genomes with no free slot or no connection.
    """
    count, n_nodes = len(rows), pop["alive"].shape[1]
    free = ~pop["alive"][rows, first_hidden:]
    slot = first_hidden + free.argmax(axis=1)
    pick, found = pick_true(_flat_pairs(pop["conn"][rows]), rng)
    dst, src = np.divmod(pick, n_nodes)
    low, high = pop["order"][rows, src], pop["order"][rows, dst]
    order = low + (high - low) * rng.random(count)
    act = rng.integers(0, len(ACTIVATIONS), count)
    ok = free.any(axis=1) & found & (order > low) & (order < high)
    rows, slot, src, dst = rows[ok], slot[ok], src[ok], dst[ok]
    pop["alive"][rows, slot] = True
    pop["order"][rows, slot] = order[ok]
    pop["act"][rows, slot] = act[ok]
    pop["conn"][rows, slot, src] = True
    pop["weight"][rows, slot, src] = 1.0
    pop["conn"][rows, dst, slot] = True
    pop["weight"][rows, dst, slot] = pop["weight"][rows, dst, src]
    pop["conn"][rows, dst, src] = False
    pop["weight"][rows, dst, src] = 0.0


def delete_node(pop: Population, rows: np.ndarray, rng: np.random.Generator, first_hidden: int) -> None:
    """Remove one random alive hidden node and all its connections; its slot becomes free again."""
    pick, found = pick_true(pop["alive"][rows, first_hidden:], rng)
    rows, slot = rows[found], first_hidden + pick[found]
    pop["alive"][rows, slot] = False
    pop["act"][rows, slot] = NO_ACTIVATION
    pop["order"][rows, slot] = 0.0
    for key in ("conn", "weight"):
        pop[key][rows, slot, :] = 0
        pop[key][rows, :, slot] = 0


# ---------------------------------------------------------------- rendering

X, Y, D, BIAS = range(N_INPUTS)
IDENTITY = ACTIVATIONS.index("identity")
Edges = tuple[np.ndarray, ...]


@functools.cache
def input_planes(resolution: int, coordinates: str) -> torch.Tensor:
    """The 4 input rows `[4, resolution**2]` float64: x (along width), y (along height), d, bias.

    d always uses coordinates normalised to [-1, 1]; x and y are normalised too unless
    `coordinates == "pixel"`, where they are raw pixel indices as in the released code.
    Cached (every render of a run needs the same planes): callers copy it, never write to it.
    """
    norm = torch.linspace(-1.0, 1.0, resolution, dtype=torch.float64)
    grid_y, grid_x = torch.meshgrid(norm, norm, indexing="ij")
    dist = torch.sqrt(grid_x**2 + grid_y**2)
    if coordinates == "pixel":
        pixels = torch.arange(resolution, dtype=torch.float64)
        grid_y, grid_x = torch.meshgrid(pixels, pixels, indexing="ij")
    planes = torch.stack([grid_x, grid_y, dist, torch.ones_like(dist)])
    return planes.reshape(N_INPUTS, -1)


def edge_list(conn: np.ndarray) -> Edges:
    """All connections of `conn [P, N, N]` as (genome, dst, src), sorted by (genome, dst, src).

    `flatnonzero` + `divmod` is several times faster than a 3-d `nonzero` on these sparse masks.
    """
    n_nodes = conn.shape[1]
    genome, pair = np.divmod(np.flatnonzero(conn), n_nodes * n_nodes)
    dst, src = np.divmod(pair, n_nodes)
    return genome, dst, src


def needed_nodes(edges: Edges, shape: tuple[int, int], n_out: int) -> np.ndarray:
    """`[P, N]` bool: the outputs and every node with a path to an output (inputs excluded).

    Mutation leaves many hidden nodes dangling (their paths to the outputs deleted: 80% of them after
    150 generations); they cannot change the image, so they are not computed. Found by walking the
    edge list backwards from the outputs, one step per sweep (as many sweeps as the longest path).
    """
    genome, dst, src = edges
    dst_flat, src_flat = genome * shape[1] + dst, genome * shape[1] + src
    need = np.zeros(shape, dtype=bool)
    need[:, N_INPUTS : N_INPUTS + n_out] = True
    flat = need.reshape(-1)
    while True:
        reached = src_flat[flat[dst_flat]]
        reached = reached[~flat[reached]]
        if not len(reached):
            break
        flat[reached] = True
    need[:, :N_INPUTS] = False
    return need


def relax(edges: Edges, values: np.ndarray, reduce: np.ufunc, step: int = 0) -> np.ndarray:
    """In place, repeat `values[dst] = reduce(values[src] over dst's incoming edges) + step` until stable.

    `edges` (genome, dst, src) must be sorted by (genome, dst), as `edge_list` gives them. Sweeps run
    over the whole edge list at once; as the graph is acyclic, (longest path + 1) sweeps suffice.
    """
    genome, dst, src = edges
    if not len(genome):
        return values
    dst_flat, src_flat = genome * values.shape[1] + dst, genome * values.shape[1] + src
    starts = np.flatnonzero(np.diff(dst_flat, prepend=-1))
    targets = dst_flat[starts]
    flat = values.reshape(-1)
    while True:
        new = reduce.reduceat(flat[src_flat], starts) + step
        if np.array_equal(new, flat[targets]):
            return values
        flat[targets] = new


def node_depth(edges: Edges, computing: np.ndarray) -> np.ndarray:
    """Evaluation level `[P, N]` of the `computing` nodes, 1 + max level of their sources; others 0.

    Nodes of one level depend only on lower levels, so a whole level of a chunk of genomes is one
    batched gather-and-sum. `edges` (sorted, see `relax`) are the connections into computing nodes.
    """
    return relax(edges, computing.astype(np.int32), np.maximum, 1)


def input_dependence(edges: Edges, shape: tuple[int, int]) -> np.ndarray:
    """`[P, N]` bit mask of the inputs each node depends on: 1 x, 2 y, 4 d (0: a constant node)."""
    uses = np.zeros(shape, dtype=np.int8)
    uses[:, [X, Y, D]] = [1, 2, 4]
    return relax(edges, uses, np.bitwise_or)


def render_outputs(
    pop: Population,
    resolution: int,
    coordinates: str,
    n_out: int,
    budget_bytes: int = RENDER_BUDGET_BYTES,
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """Output-node images `[P, n_out, R, R]` float32, each pixel clip(|output|, 0, 1) as in the paper.

    Only the nodes with a path to an output matter. Those that depend on no input but the bias
    (constants), or on x only, or on y only, vary along one image axis at most: they are computed on a
    single line of R pixels, in float64. Constants are then folded into the bias weights of the nodes
    they feed, and line nodes that feed a full node or are outputs are broadcast to full rows.

    The other nodes are computed on all R*R pixels, in `dtype`, by chunks of genomes whose rows fit
    in `budget_bytes`. float32 is plenty for 8-bit images; float64 exists so the tests can check the
    algorithm exactly against a float64 reference.

    A small render (MNIST-sized: a few ms of work in ~100 small torch ops) runs on one torch thread:
    two threads gain little there, and when the cores are busy (other processes, or other thread
    pools in this one) every multi-threaded op can wait milliseconds for a descheduled thread, which
    made such renders 10-100x slower. The thread setting is restored on return.
    """
    edges = edge_list(leading_slots(pop)["conn"])
    need = needed_nodes(edges, pop["act"].shape, n_out)
    serial = int(need.sum()) * resolution**2 < SERIAL_RENDER_ELEMENTS
    with _one_thread() if serial else contextlib.nullcontext():
        return _render(pop, edges, need, resolution, coordinates, n_out, budget_bytes, dtype)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the block with one torch intra-op thread, then restore the caller's setting."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _render(
    pop: Population,
    edges: Edges,
    need: np.ndarray,
    resolution: int,
    coordinates: str,
    n_out: int,
    budget_bytes: int,
    dtype: torch.dtype,
) -> np.ndarray:
    """`render_outputs` given the population's `edge_list` and `needed_nodes`."""
    act, shape = pop["act"], pop["act"].shape
    keep = need[edges[0], edges[1]]
    edges = tuple(column[keep] for column in edges)
    weight = pop["weight"][edges].astype(np.float64)
    weight[act[edges[0], edges[1]] == IDENTITY] /= 3.0  # see `_activate`
    planes = input_planes(resolution, coordinates)
    if resolution >= LINE_RESOLUTION:
        uses = input_dependence(edges, shape)
        line = need & ((uses == 0) | (uses == 1) | (uses == 2))
        grid = planes.view(N_INPUTS, resolution, resolution)
        lines, line_row = _render_lines(line, act, edges, weight, grid)
        full = need & ~line
        edges = _fold_constants(full, need & (uses == 0), edges, weight, lines[line_row, 0].numpy())
    else:  # small images: every needed node on every pixel, in one pass of levels
        uses, line, full = np.zeros(shape, dtype=np.int8), np.zeros(shape, dtype=bool), need
        lines, line_row = torch.zeros((N_INPUTS, resolution), dtype=torch.float64), _input_rows(shape)
        edges = (*edges, weight)
    depth = node_depth(edges[:3], full)
    shown = np.zeros(shape, dtype=bool)  # line nodes needed as full rows: sources of full nodes, outputs
    shown[edges[0], edges[2]] = True
    shown[:, N_INPUTS : N_INPUTS + n_out] = True
    shown &= line

    pixels = resolution * resolution
    rows_per_genome = full.sum(axis=1) + shown.sum(axis=1)
    max_rows = max(budget_bytes // (pixels * dtype.itemsize), N_INPUTS + int(rows_per_genome.max(initial=0)))
    out = _empty((len(need), n_out, pixels), dtype)
    buffer = _empty((min(max_rows, N_INPUTS + int(rows_per_genome.sum())), pixels), dtype)
    buffer[:N_INPUTS] = planes
    nodes = [  # along x (and constants), along y, full; each as (genome, slot, where each genome starts)
        _by_genome(mask) for mask in (shown & (uses != 2), shown & (uses == 2), full)
    ]
    edge_bounds = np.searchsorted(edges[0], np.arange(len(need) + 1))
    for start, stop in _chunks(rows_per_genome, max_rows - N_INPUTS):
        (x_genome, x_slot), (y_genome, y_slot), (genome, slot) = (
            (node_genome[bound[start] : bound[stop]] - start, node_slot[bound[start] : bound[stop]])
            for node_genome, node_slot, bound in nodes
        )
        row_of, first = _input_rows((stop - start, shape[1])), N_INPUTS
        for along_x, node_genome, node_slot in ((True, x_genome, x_slot), (False, y_genome, y_slot)):
            count = len(node_genome)
            row_of[node_genome, node_slot] = np.arange(first, first + count)
            values = lines[torch.from_numpy(line_row[start + node_genome, node_slot])]
            values = values[:, None, :] if along_x else values[:, :, None]
            buffer[first : first + count].view(count, resolution, resolution).copy_(values)
            first += count
        key = depth[start + genome, slot] * len(ACTIVATIONS) + act[start + genome, slot]
        links = slice(edge_bounds[start], edge_bounds[stop])
        chunk_edges = (edges[0][links] - start, *(column[links] for column in edges[1:]))
        _evaluate((genome, slot, key), chunk_edges, row_of, first, buffer)
        rows = torch.from_numpy(row_of[:, N_INPUTS : N_INPUTS + n_out].reshape(-1))
        torch.index_select(buffer, 0, rows, out=out[start:stop].view(-1, pixels))
    out.abs_().clamp_(max=1.0)
    return out.numpy().astype(np.float32, copy=False).reshape(len(need), n_out, resolution, resolution)


def _fold_constants(
    full: np.ndarray, constant: np.ndarray, edges: Edges, weight: np.ndarray, value: np.ndarray
) -> Edges:
    """The connections into `full` nodes as (genome, dst, src, weight), sorted by (genome, dst).

    Those from `constant` nodes (whose `value [P, N]` is known) and from the bias input are summed
    into a single connection from the bias per node (none where that sum is 0).
    """
    n_nodes = full.shape[1]
    into = full[edges[0], edges[1]]
    genome, dst, src, weight = (column[into] for column in (*edges, weight))
    folded = (src == BIAS) | constant[genome, src]
    contribution = weight * np.where(src == BIAS, 1.0, value[genome, src])
    node = genome * n_nodes + dst
    bias = np.bincount(node[folded], weights=contribution[folded], minlength=full.size)
    biased = np.flatnonzero(bias)
    node = np.concatenate([node[~folded], biased])
    sort = np.argsort(node, kind="stable")
    src = np.concatenate([src[~folded], np.full(len(biased), BIAS)])[sort]
    weight = np.concatenate([weight[~folded], bias[biased]])[sort]
    return (*np.divmod(node[sort], n_nodes), src, weight)


def _render_lines(
    line: np.ndarray, act: np.ndarray, edges: Edges, weight: np.ndarray, grid: torch.Tensor
) -> tuple[torch.Tensor, np.ndarray]:
    """Values of the `line` nodes (no input but x or y) on one line of pixels, float64 `[rows, R]`.

    Row 0 holds x along the width, row 1 y along the height (what x-only and y-only nodes see), row 3
    the bias. Returns the rows and the row of every node `[P, N]`.
    """
    on_line = line[edges[0], edges[1]]
    genome, dst, src, weight = (column[on_line] for column in (*edges, weight))
    node_genome, node_slot = np.divmod(np.flatnonzero(line), line.shape[1])
    depth = node_depth((genome, dst, src), line)
    key = depth[node_genome, node_slot] * len(ACTIVATIONS) + act[node_genome, node_slot]
    lines = torch.zeros((N_INPUTS + len(key), grid.shape[1]), dtype=torch.float64)
    lines[X], lines[Y], lines[BIAS] = grid[X, 0], grid[Y, :, 0], 1.0
    row_of = _input_rows(line.shape)
    _evaluate((node_genome, node_slot, key), (genome, dst, src, weight), row_of, N_INPUTS, lines)
    return lines, row_of


def _by_genome(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The True entries of `mask [P, N]` as (genome, slot), and where each genome's entries start."""
    genome, slot = np.divmod(np.flatnonzero(mask), mask.shape[1])
    return genome, slot, np.searchsorted(genome, np.arange(len(mask) + 1))


def _input_rows(shape: tuple[int, int]) -> np.ndarray:
    """A `[P, N]` node -> buffer row table with the 4 inputs in rows 0-3."""
    row_of = np.zeros(shape, dtype=np.int64)
    row_of[:, :N_INPUTS] = np.arange(N_INPUTS)
    return row_of


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor in memory from numpy, whose allocator asks Linux for huge pages.

    A fresh 240 MB of torch.empty (400 images 224x224x3) page-faults 4 kB at a time when first
    written, ~4x slower than the writing itself; numpy's huge pages make that nearly free.
    """
    return torch.from_numpy(np.empty(shape, dtype=np.float64 if dtype == torch.float64 else np.float32))


def _chunks(rows_per_genome: np.ndarray, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive genome ranges whose node rows total at most `max_rows` (at least one genome each)."""
    cum = np.concatenate([[0], np.cumsum(rows_per_genome)])
    bounds, start = [], 0
    while start < len(rows_per_genome):
        stop = max(start + 1, int(np.searchsorted(cum, cum[start] + max_rows, side="right")) - 1)
        bounds.append((start, stop))
        start = stop
    return bounds


def _evaluate(
    nodes: tuple[np.ndarray, np.ndarray, np.ndarray],
    edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    row_of: np.ndarray,
    first: int,
    buffer: torch.Tensor,
) -> None:
    """Compute `nodes` into `buffer` rows from `first` on, recording their rows in `row_of [P, N]`.

    `nodes` (genome, slot, level * 4 + activation) are sorted by key into consecutive rows; `edges`
    (genome, dst, src, weight) are all the connections into them, from rows already in `row_of`. A
    level is one gather-and-weighted-sum of rows below it (`embedding_bag`, in effect a sparse CSR
    times dense product); each activation then writes a contiguous block of rows.
    """
    genome, slot, key = nodes
    sort = np.argsort(key, kind="stable")
    key = key[sort]
    row_of[genome[sort], slot[sort]] = np.arange(first, first + len(key))
    e_genome, e_dst, e_src, e_weight = edges
    dst = row_of[e_genome, e_dst]
    by_dst = np.argsort(dst, kind="stable")
    src = torch.from_numpy(row_of[e_genome, e_src][by_dst])
    values = torch.from_numpy(e_weight[by_dst]).to(buffer.dtype)
    bounds = np.searchsorted(dst[by_dst], np.arange(first, first + len(key) + 1))
    offsets = torch.from_numpy(bounds)
    groups = np.flatnonzero(np.diff(key, prepend=-1, append=-1))  # runs of equal key, then len(key)
    group_key = key[groups[:-1]]
    levels = np.flatnonzero(np.diff(group_key // len(ACTIVATIONS), prepend=-1, append=-1))
    groups, group_key, levels = groups.tolist(), group_key.tolist(), levels.tolist()
    for level_begin, level_end in zip(levels[:-1], levels[1:], strict=True):
        begin, end = groups[level_begin], groups[level_end]
        low, high = int(bounds[begin]), int(bounds[end])
        total = torch.nn.functional.embedding_bag(
            src[low:high],
            buffer[: first + begin],
            offsets[begin:end] - low,
            mode="sum",
            per_sample_weights=values[low:high],
        )
        for group in range(level_begin, level_end):
            lo, hi = groups[group], groups[group + 1]
            _activate(total[lo - begin : hi - begin], buffer[first + lo : first + hi], group_key[group] % 4)


def _activate(total: torch.Tensor, out: torch.Tensor, activation: int) -> None:
    """out = activation `activation` (index into ACTIVATIONS) of the weighted sums `total` (clobbered).

    Each activation costs one pass of its transcendental function plus at most two cheap ones.
    """
    if activation == 0:
        torch.sin(total, out=out)
    elif activation == 1:  # the logistic sigmoid rescaled to [-1, 1], 2 / (1 + exp(-x)) - 1
        torch.sigmoid(total, out=out)  # 3x faster than torch.tanh(x / 2), the same function
        torch.add(_MINUS_ONE, out, alpha=2.0, out=out)
    elif activation == 2:
        # exp(-x**2); below exp(-87) (about the smallest normal float32) exp's results are subnormal,
        # which makes it up to 10x slower, and they are negligible anyway.
        torch.exp(total.square_().clamp_(max=87.0).neg_(), out=out)
    else:  # the 1/3 is in the incoming weights (see `_render`)
        torch.clamp(total, -1.0, 1.0, out=out)


_MINUS_ONE = torch.tensor(-1.0)
