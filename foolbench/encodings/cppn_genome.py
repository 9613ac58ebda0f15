"""CPPN genomes, a whole population at once: the padded layout and the mutation operators.

A population is stored TensorNEAT-style as padded arrays over a fixed slot layout, so the search can
index, concatenate and `np.savez` it like any other genome dict:

- slots `0..3` are the inputs x, y, d, bias; the next `n_out` slots are the outputs; the remaining
  `max_hidden` slots hold hidden nodes (alive or free);
- `alive` bool [P, N], `act` int8 [P, N] (activation id, -1 for inputs and free slots),
  `conn` bool [P, N, N] with `conn[p, dst, src]`, `weight` float32 [P, N, N] (0 where no connection),
  `order` float64 [P, N]: inputs 0, outputs 1, hidden nodes strictly between (free slots 0).

A connection src->dst may exist only if `order[src] < order[dst]`, which makes every network
feed-forward by construction: inputs are sources, outputs are sinks, cycles cannot form. The
operators mutate in place and draw all their randomness from the generator they are given.
"""

import numpy as np

from foolbench.encodings.direct import Population, bernoulli_indices, polynomial_mutation

N_INPUTS = 4
X, Y, D, BIAS = range(N_INPUTS)
ACTIVATIONS = ("sine", "sigmoid", "gaussian", "identity")
IDENTITY = ACTIVATIONS.index("identity")
NO_ACTIVATION = -1
KEYS = ("alive", "act", "conn", "weight", "order")
Edges = tuple[np.ndarray, ...]


def edge_list(conn: np.ndarray) -> Edges:
    """All connections of `conn [P, N, N]` as (genome, dst, src), sorted by (genome, dst, src).

    `flatnonzero` + `divmod` is several times faster than a 3-d `nonzero` on these sparse masks.
    """
    n_nodes = conn.shape[1]
    genome, pair = np.divmod(np.flatnonzero(conn), n_nodes * n_nodes)
    dst, src = np.divmod(pair, n_nodes)
    return genome, dst, src


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
