"""Rendering CPPN populations to images: every network of a population evaluated on every pixel,
in batched torch operations (see `render_outputs`). The genome layout is `cppn_genome`'s."""

import contextlib
import functools
from collections.abc import Iterator

import numpy as np
import torch

from foolbench.encodings.cppn_genome import (
    ACTIVATIONS,
    BIAS,
    IDENTITY,
    N_INPUTS,
    D,
    Edges,
    X,
    Y,
    edge_list,
    leading_slots,
)
from foolbench.encodings.direct import Population

RENDER_BUDGET_BYTES = 64 * 2**20
# Renders with fewer (needed nodes x pixels) than this run on one torch thread (see `render_outputs`).
SERIAL_RENDER_ELEMENTS = 2**23
# From this resolution on, nodes of x only, y only or neither are computed on one line of pixels;
# below it the extra passes cost more than they save (28x28: 23% slower, 256x256: 10% faster).
LINE_RESOLUTION = 64


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
