"""Behaviour of the genome encodings: determinism, operators, and the CPPN renderer vs a slow reference."""

import colorsys
import json

import numpy as np
import pytest
import torch
from test_paper_settings import CPPN, DEVIATIONS, DIRECT, SBX_OPTION

from foolbench.encodings import concat, cppn_genome, cppn_render, make_encoding, size, take
from foolbench.encodings.colour import hls_to_rgb
from foolbench.encodings.cppn_genome import N_INPUTS, pick_true
from foolbench.encodings.cppn_render import render_outputs
from foolbench.encodings.direct import (
    bernoulli_indices,
    mutation_rate_at,
    polynomial_mutation,
    sbx_crossover,
)
from foolbench.errors import FoolbenchError

REFERENCE_ACTIVATIONS = (
    np.sin,
    lambda x: 2.0 / (1.0 + np.exp(-x)) - 1.0,
    lambda x: np.exp(-(x**2)),
    lambda x: np.clip(x, -3.0, 3.0) / 3.0,
)


def evolve(encoding, n: int, generations: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A population after `generations` rounds of variation (so CPPNs have grown hidden nodes)."""
    rng = np.random.default_rng(seed)
    pop = encoding.init(n, rng)
    for generation in range(generations):
        pop = encoding.vary(pop, rng, generation)
    return pop


def reference_outputs(
    pop: dict[str, np.ndarray], resolution: int, coordinates: str, n_out: int
) -> np.ndarray:
    """Obviously-correct CPPN evaluation: per genome, per node in `order`, sums over sources in float64."""
    norm = np.linspace(-1.0, 1.0, resolution)
    grid_y, grid_x = np.meshgrid(norm, norm, indexing="ij")
    dist = np.sqrt(grid_x**2 + grid_y**2)
    if coordinates == "pixel":
        grid_y, grid_x = np.meshgrid(np.arange(resolution), np.arange(resolution), indexing="ij")
    images = np.zeros((len(pop["alive"]), n_out, resolution, resolution))
    for p in range(len(pop["alive"])):
        alive, act, conn, weight, order = (pop[key][p] for key in ("alive", "act", "conn", "weight", "order"))
        values = {0: grid_x, 1: grid_y, 2: dist, 3: np.ones_like(dist)}
        for node in sorted(np.flatnonzero(alive[N_INPUTS:]) + N_INPUTS, key=lambda n: order[n]):
            total = np.zeros_like(dist)
            for src in np.flatnonzero(conn[node]):
                total = total + float(weight[node, src]) * values[src]
            values[node] = REFERENCE_ACTIVATIONS[act[node]](total)
        for k in range(n_out):
            images[p, k] = np.clip(np.abs(values[N_INPUTS + k]), 0.0, 1.0)
    return images


def assert_feed_forward(pop: dict[str, np.ndarray], n_out: int) -> None:
    """The CPPN invariants that keep every genome a valid feed-forward network."""
    alive, act, conn, weight, order = (pop[key] for key in ("alive", "act", "conn", "weight", "order"))
    first_hidden = N_INPUTS + n_out
    genome, dst, src = np.nonzero(conn)
    assert (order[genome, src] < order[genome, dst]).all()
    assert alive[genome, src].all() and alive[genome, dst].all()
    assert not conn[:, :N_INPUTS, :].any(), "inputs must have no incoming connections"
    assert not conn[:, :, N_INPUTS:first_hidden].any(), "outputs must have no outgoing connections"
    assert alive[:, :first_hidden].all()
    assert (order[:, :N_INPUTS] == 0).all() and (order[:, N_INPUTS:first_hidden] == 1).all()
    hidden_order = order[:, first_hidden:][alive[:, first_hidden:]]
    assert ((hidden_order > 0) & (hidden_order < 1)).all()
    assert (weight[~conn] == 0).all()
    needs_act = alive.copy()
    needs_act[:, :N_INPUTS] = False
    assert ((act >= 0) & (act < 4))[needs_act].all() and (act[~needs_act] == -1).all()


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("name", ["direct", "cppn"])
def test_unknown_option_is_rejected_by_name(name: str) -> None:
    with pytest.raises(FoolbenchError, match="mutaton_rate"):
        make_encoding(name, mutaton_rate=0.1)


@pytest.mark.parametrize(
    ("name", "options", "culprit"),
    [
        ("direct", {"mutation_rate": 1.5}, "mutation_rate"),
        ("direct", {"channels": 2}, "channels"),
        ("direct", {"colour": "hls", "channels": 1}, "colour"),
        ("direct", {"crossover": 1}, "crossover"),
        ("cppn", {"weight_range": 0}, "weight_range"),
        ("cppn", {"add_node": -0.1}, "add_node"),
        ("cppn", {"coordinates": "polar"}, "coordinates"),
        ("cppn", {"max_hidden": 2.5}, "max_hidden"),
    ],
)
def test_out_of_range_option_is_rejected(name: str, options: dict, culprit: str) -> None:
    with pytest.raises(FoolbenchError, match=culprit):
        make_encoding(name, **options)


def test_unknown_encoding_is_rejected() -> None:
    with pytest.raises(FoolbenchError, match="pixels"):
        make_encoding("pixels")


# every option an encoding records in the manifest, with the defaults (the paper's) filled in
RESOLVED = {
    "direct": {"resolution": 16, "channels": 3, "colour": "rgb", **DIRECT, **SBX_OPTION},
    "cppn": {"resolution": 16, "channels": 3, **CPPN, **DEVIATIONS},
}


@pytest.mark.parametrize("name", ["direct", "cppn"])
def test_options_are_resolved_and_json_serialisable(name: str) -> None:
    encoding = make_encoding(name, resolution=np.int64(16), channels=np.int64(3), eta_m=15)
    assert encoding.options == RESOLVED[name]
    # plain Python types (numpy integers converted, integer reals made floats): the manifest's JSON
    assert json.loads(json.dumps(encoding.options)) == encoding.options
    assert type(encoding.options["resolution"]) is int and type(encoding.options["eta_m"]) is float
    assert encoding.resolution == 16 and encoding.channels == 3


# ---------------------------------------------------------------- determinism and rendering

ENCODINGS = [
    ("direct", {"resolution": 12}),
    ("direct", {"resolution": 12, "channels": 3, "colour": "hls", "crossover": True}),
    ("cppn", {"resolution": 12}),
    ("cppn", {"resolution": 12, "channels": 3, "coordinates": "pixel"}),
]


@pytest.mark.parametrize(("name", "options"), ENCODINGS)
def test_same_seed_same_genomes_and_images(name: str, options: dict) -> None:
    encoding = make_encoding(name, **options)
    first, second = evolve(encoding, 20, 10, seed=3), evolve(encoding, 20, 10, seed=3)
    assert first.keys() == second.keys()
    for key in first:
        assert np.array_equal(first[key], second[key]), key
    assert np.array_equal(encoding.render(first), encoding.render(second))
    other = evolve(encoding, 20, 10, seed=4)
    assert not np.array_equal(encoding.render(first), encoding.render(other))


@pytest.mark.parametrize(("name", "options"), ENCODINGS)
def test_render_shape_dtype_range(name: str, options: dict) -> None:
    encoding = make_encoding(name, **options)
    pop = evolve(encoding, 7, 5)
    images = encoding.render(pop)
    assert images.shape == (7, encoding.channels, 12, 12)
    assert images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.std() > 0.0


@pytest.mark.parametrize(("name", "options"), ENCODINGS)
def test_vary_leaves_parents_untouched_and_keeps_count(name: str, options: dict) -> None:
    encoding = make_encoding(name, **options)
    parents = evolve(encoding, 9, 3)
    before = {key: value.copy() for key, value in parents.items()}
    children = encoding.vary(parents, np.random.default_rng(1), 3)
    assert size(children) == 9
    assert all(np.array_equal(parents[key], before[key]) for key in parents)
    assert any(not np.array_equal(children[key], parents[key]) for key in parents)


@pytest.mark.parametrize(("name", "options"), ENCODINGS)
def test_vary_in_place_makes_the_same_children(name: str, options: dict) -> None:
    encoding = make_encoding(name, **options)
    parents = evolve(encoding, 9, 3)
    copied = encoding.vary(parents, np.random.default_rng(1), 3)
    given_up = {key: value.copy() for key, value in parents.items()}
    in_place = encoding.vary(given_up, np.random.default_rng(1), 3, in_place=True)
    assert all(np.array_equal(copied[key], in_place[key]) for key in copied)


@pytest.mark.parametrize(("name", "options"), ENCODINGS)
def test_empty_population_passes_through(name: str, options: dict) -> None:
    encoding = make_encoding(name, **options)
    empty = encoding.init(0, np.random.default_rng(0))
    assert size(encoding.vary(empty, np.random.default_rng(0), 0)) == 0
    assert encoding.render(empty).shape == (0, encoding.channels, 12, 12)


def test_hls_to_rgb_equals_colorsys() -> None:
    rng = np.random.default_rng(0)
    hls = rng.random((3, 3, 8, 8)).astype(np.float32)
    hls[0, 2] = 0.0  # grey pixels (s == 0)
    hls[1, 1, :4] = 0.5  # the l <= 0.5 branch boundary
    hls[2, 0, :, :2] = 1.0  # hue 1 wraps to hue 0
    rgb = hls_to_rgb(hls)
    expected = np.zeros_like(rgb)
    for b, i, j in np.ndindex(3, 8, 8):
        expected[b, :, i, j] = colorsys.hls_to_rgb(*(float(v) for v in hls[b, :, i, j]))
    np.testing.assert_allclose(rgb, expected, atol=1e-6)
    assert rgb.dtype == np.float32


def test_direct_hls_render_converts_genes() -> None:
    encoding = make_encoding("direct", resolution=4, channels=3, colour="hls")
    pop = encoding.init(2, np.random.default_rng(0))
    np.testing.assert_array_equal(encoding.render(pop), hls_to_rgb(pop["genes"]))


# ---------------------------------------------------------------- direct-encoding operators


def test_bernoulli_indices_are_unique_sorted_and_about_rate() -> None:
    rng = np.random.default_rng(0)
    idx = bernoulli_indices(200_000, 0.1, rng)
    assert (np.diff(idx) > 0).all() and idx[0] >= 0 and idx[-1] < 200_000
    assert abs(len(idx) / 200_000 - 0.1) < 0.005
    assert len(bernoulli_indices(10, 0.0, rng)) == 0 and len(bernoulli_indices(10, 1.0, rng)) == 10
    assert len(bernoulli_indices(0, 0.5, rng)) == 0


def test_polynomial_mutation_stays_in_bounds_and_is_local() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros(1000), np.ones(1000), rng.random(10_000)])
    for low, high in ((0.0, 1.0), (-10.0, 10.0)):
        scaled = low + (high - low) * x
        mutated = polynomial_mutation(scaled, rng.random(len(x)), low, high, 15.0)
        assert (mutated >= low).all() and (mutated <= high).all()
        assert np.median(np.abs(mutated - scaled)) < 0.1 * (high - low)  # eta 15 makes small jumps
        assert (mutated[:1000] > low).mean() > 0.4  # values at a bound still move inwards


def test_direct_mutation_touches_about_rate_of_genes() -> None:
    encoding = make_encoding("direct", resolution=28, rate_halving=None)
    parents = encoding.init(200, np.random.default_rng(0))
    children = encoding.vary(parents, np.random.default_rng(1), 5000)
    changed = children["genes"] != parents["genes"]
    assert abs(changed.mean() - 0.1) < 0.005
    assert children["genes"].dtype == np.float32
    assert children["genes"].min() >= 0.0 and children["genes"].max() <= 1.0


def test_rate_halving() -> None:
    assert mutation_rate_at(0.1, 1000, 0) == mutation_rate_at(0.1, 1000, 999) == 0.1
    assert mutation_rate_at(0.1, 1000, 1000) == 0.05 and mutation_rate_at(0.1, 1000, 2500) == 0.025
    assert mutation_rate_at(0.1, None, 5000) == mutation_rate_at(0.1, 0, 5000) == 0.1
    encoding = make_encoding("direct", resolution=28)  # paper default: halve every 1000 generations
    parents = encoding.init(200, np.random.default_rng(0))
    changed = encoding.vary(parents, np.random.default_rng(1), 2000)["genes"] != parents["genes"]
    assert abs(changed.mean() - 0.025) < 0.003


def test_sbx_keeps_bounds_and_moves_only_differing_genes() -> None:
    rng = np.random.default_rng(0)
    genes = rng.random((11, 1, 8, 8)).astype(np.float32)
    genes[:, :, 0, 0] = 0.25  # identical in every parent: crossover cannot change it
    genes[:3, :, 1] = 0.0
    genes[3:6, :, 1] = 1.0
    children = sbx_crossover(genes, rng, 1.0, 10.0)
    assert children.shape == genes.shape and children.dtype == np.float32
    assert children.min() >= 0.0 and children.max() <= 1.0
    assert (children[:, :, 0, 0] == 0.25).all()
    changed = (children != genes).reshape(11, -1).mean(axis=1)
    # every gene where the two parents differ, in the 10 rows of 5 pairs; the 11th row is copied
    assert (np.sort(changed)[1:] > 0.9).all() and np.sort(changed)[0] == 0.0
    np.testing.assert_array_equal(sbx_crossover(genes, rng, 0.0, 10.0), genes)


def test_direct_without_variation_copies_parents() -> None:
    encoding = make_encoding("direct", resolution=5, mutation_rate=0.0, crossover=True, crossover_rate=0.0)
    parents = encoding.init(6, np.random.default_rng(0))
    np.testing.assert_array_equal(
        encoding.vary(parents, np.random.default_rng(1), 0)["genes"], parents["genes"]
    )


# ---------------------------------------------------------------- CPPN


def test_cppn_init_matches_the_paper() -> None:
    encoding = make_encoding("cppn", channels=3)
    pop = encoding.init(50, np.random.default_rng(0))
    assert pop["conn"].sum(axis=(1, 2)).tolist() == [12] * 50  # 4 inputs x 3 outputs
    assert not pop["alive"][:, N_INPUTS + 3 :].any()
    weights = pop["weight"][pop["conn"]]
    assert weights.min() >= -10 and weights.max() <= 10 and weights.std() > 3
    assert_feed_forward(pop, 3)


@pytest.mark.parametrize("channels", [1, 3])
def test_cppn_mutation_keeps_networks_feed_forward(channels: int) -> None:
    encoding = make_encoding("cppn", channels=channels, max_hidden=12)
    rng = np.random.default_rng(0)
    pop = encoding.init(40, rng)
    for generation in range(60):
        pop = encoding.vary(pop, rng, generation)
        assert_feed_forward(pop, channels)
    hidden = pop["alive"][:, N_INPUTS + channels :].sum(axis=1)
    assert hidden.max() == 12 and hidden.mean() > 2  # grew, up to the capacity


def test_cppn_add_node_is_a_no_op_at_capacity() -> None:
    encoding = make_encoding(
        "cppn", max_hidden=3, add_node=1.0, add_connection=0.0, delete_connection=0.0, delete_node=0.0,
        weight_rate=0.0, activation_rate=0.0,
    )  # fmt: skip
    full = evolve(encoding, 10, 3)
    assert full["alive"].all()  # each generation split one connection into a new node
    again = encoding.vary(full, np.random.default_rng(5), 3)
    assert all(np.array_equal(again[key], full[key]) for key in full)


def test_pick_true_is_uniform_over_true_entries() -> None:
    mask = np.zeros((30_000, 6), dtype=bool)
    mask[:, [1, 2, 5]] = True
    mask[0] = False
    pick, found = pick_true(mask, np.random.default_rng(0))
    assert not found[0] and found[1:].all()
    counts = np.bincount(pick[1:], minlength=6)
    assert counts[[0, 3, 4]].sum() == 0
    assert np.abs(counts[[1, 2, 5]] / 29_999 - 1 / 3).max() < 0.02


@pytest.mark.parametrize("line_resolution", [0, 10**6], ids=["line-nodes-on-a-line", "all-nodes-full"])
@pytest.mark.parametrize(("channels", "coordinates"), [(1, "normalised"), (3, "pixel")])
def test_cppn_render_equals_reference(channels: int, coordinates: str, line_resolution, monkeypatch) -> None:
    monkeypatch.setattr(cppn_render, "LINE_RESOLUTION", line_resolution)  # both render paths, same images
    encoding = make_encoding("cppn", resolution=10, channels=channels, coordinates=coordinates)
    grown = evolve(encoding, 24, 50)
    pop = concat([grown, encoding.init(4, np.random.default_rng(9)), take(grown, [0])])  # deep and flat mixed
    assert pop["alive"][:, N_INPUTS + channels :].sum(axis=1).max() >= 5
    expected = reference_outputs(pop, 10, coordinates, channels)
    for budget in (2**28, 10 * 8 * 100):  # one chunk, and a few genomes per chunk
        exact = render_outputs(pop, 10, coordinates, channels, budget_bytes=budget, dtype=torch.float64)
        # Computed in float64 and rounded to float32 on return: 1e-6 checks the algorithm itself.
        np.testing.assert_allclose(exact, expected, atol=1e-6, rtol=0)
    # The float32 default loses ~1e-7 of |sum of weight * input|, which reaches ~200 with pixel coordinates.
    tolerance = 1e-5 if coordinates == "normalised" else 1e-4
    images = encoding.render(pop)
    reference_images = hls_to_rgb(expected.astype(np.float32)) if channels == 3 else expected
    np.testing.assert_allclose(images, reference_images, atol=tolerance, rtol=0)


def test_cppn_render_without_any_hidden_node_and_empty_networks() -> None:
    encoding = make_encoding("cppn", resolution=6, max_hidden=0)
    pop = encoding.init(3, np.random.default_rng(0))
    pop["conn"][1] = False
    pop["weight"][1] = 0.0
    expected = reference_outputs(pop, 6, "normalised", 1)
    np.testing.assert_allclose(encoding.render(pop), expected, atol=1e-5, rtol=0)


def test_cppn_render_restores_torch_threads_and_does_not_depend_on_them() -> None:
    encoding = make_encoding("cppn", resolution=10)  # small: rendered on one thread, then restored
    pop = evolve(encoding, 12, 20)
    before = torch.get_num_threads()
    try:
        images = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            images[threads] = encoding.render(pop)
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(images[1], images[2])


def test_cppn_operators_on_leading_slots_equal_the_full_arrays() -> None:
    """vary() runs the operators on views cut to the used node slots; they must change the genomes
    exactly as on the full padded arrays (same random draws, same picks, writes reach the genomes)."""
    cppn = cppn_genome
    encoding = make_encoding("cppn", resolution=8)
    pop = evolve(encoding, 30, 15)
    assert cppn.leading_slots(pop, spare=1)["conn"].shape[1] < encoding.n_nodes  # the cut is real
    rows = np.arange(0, 30, 2)
    operators = [
        lambda p, rng: cppn.mutate_weights(p, rng, 0.5, 15.0, 10.0),
        lambda p, rng: cppn.add_connection(p, rows, rng, 10.0),
        lambda p, rng: cppn.delete_connection(p, rows, rng),
        lambda p, rng: cppn.add_node(p, np.arange(30), rng, encoding.first_hidden),
        lambda p, rng: cppn.delete_node(p, rows, rng, encoding.first_hidden),
    ]
    for operator in operators:
        full, cut = ({key: value.copy() for key, value in pop.items()} for _ in range(2))
        operator(full, np.random.default_rng(1))
        operator(cppn.leading_slots(cut, spare=1), np.random.default_rng(1))
        assert any(not np.array_equal(full[key], pop[key]) for key in pop)  # the operator did something
        for key in pop:
            np.testing.assert_array_equal(cut[key], full[key])


def test_cppn_render_rejects_a_population_of_another_shape() -> None:
    pop = make_encoding("cppn", max_hidden=8).init(2, np.random.default_rng(0))
    with pytest.raises(FoolbenchError, match="max_hidden"):
        make_encoding("cppn", max_hidden=4).render(pop)


# ---------------------------------------------------------------- population helpers


@pytest.mark.parametrize("name", ["direct", "cppn"])
def test_take_concat_roundtrip(name: str, tmp_path) -> None:
    encoding = make_encoding(name, resolution=8)
    pop = evolve(encoding, 10, 4)
    rebuilt = concat([take(pop, np.arange(4)), take(pop, slice(4, 7)), take(pop, [7, 8, 9])])
    assert size(rebuilt) == 10 and size(take(pop, [])) == 0 and size({}) == 0
    assert all(np.array_equal(rebuilt[key], pop[key]) for key in pop)
    np.savez(tmp_path / "pop.npz", **pop)
    with np.load(tmp_path / "pop.npz") as loaded:
        assert all(np.array_equal(loaded[key], pop[key]) for key in pop)
    subset = take(pop, np.array([True, False] * 5))
    assert size(subset) == 5 and np.array_equal(subset[next(iter(pop))], pop[next(iter(pop))][::2])


def test_concat_refuses_different_encodings() -> None:
    direct = make_encoding("direct", resolution=4).init(2, np.random.default_rng(0))
    cppn = make_encoding("cppn", resolution=4).init(2, np.random.default_rng(0))
    with pytest.raises(FoolbenchError):
        concat([direct, cppn])
