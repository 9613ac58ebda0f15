"""The class archive: multi-cell insertion, strict improvement, uniform parents, exact checkpoints."""

from __future__ import annotations

import numpy as np

from foolbench.search.archive import Archive, confidence_stats


def pop_of(values):
    """A population whose genome i is just the number values[i] (easy to trace through the pool)."""
    return {"g": np.asarray(values, dtype=np.float64)[:, None]}


def genome_of(archive, cell):
    return float(archive.champion(cell)["g"][0, 0])


def test_one_child_takes_every_cell_it_beats():
    a = Archive(3)
    fit = np.array([[0.5, 0.1, 0.7], [0.2, 0.9, 0.1]])
    assert a.insert(pop_of([10, 20]), fit, generation=0) == 3
    assert [genome_of(a, c) for c in range(3)] == [10, 20, 10]
    assert len(a.pool["g"]) == 2  # the image holding two cells is stored once
    np.testing.assert_array_equal(a.fitness, [0.5, 0.9, 0.7])


def test_only_strictly_higher_replaces_a_champion():
    a = Archive(2)
    a.insert(pop_of([1]), np.array([[0.5, 0.5]]), 0)
    assert a.insert(pop_of([2]), np.array([[0.5, 0.6]]), 1) == 1
    assert genome_of(a, 0) == 1 and genome_of(a, 1) == 2
    np.testing.assert_array_equal(a.generation, [0, 1])


def test_pool_drops_genomes_that_hold_no_cell():
    a = Archive(2)
    a.insert(pop_of([1, 2]), np.array([[0.5, 0.1], [0.1, 0.5]]), 0)
    a.insert(pop_of([3]), np.array([[0.9, 0.9]]), 1)
    assert a.pool["g"].ravel().tolist() == [3.0]


def test_parents_come_uniformly_from_occupied_cells(rng):
    a = Archive(4)
    a.insert(pop_of([7, 8]), np.array([[0.9, 0.9, 0.9, 0.1], [0.1, 0.1, 0.1, 0.8]]), 0)
    parents = a.sample(4000, rng)["g"].ravel()
    # genome 7 holds three of the four cells, so it is drawn about three times as often
    assert abs((parents == 7).mean() - 0.75) < 0.03


def test_state_round_trip_is_exact(rng):
    a = Archive(5)
    for gen in range(4):
        a.insert(pop_of(rng.random(6)), rng.random((6, 5)), gen)
    b = Archive.from_state(a.state())
    for key, value in a.state().items():
        np.testing.assert_array_equal(b.state()[key], value)


def test_confidence_stats_count_thresholds():
    s = confidence_stats(np.array([0.99999, 0.995, 0.95, 0.5]))
    assert (s["classes_at_9999"], s["classes_at_99"], s["classes_at_90"]) == (1, 2, 3)
    assert s["median_confidence"] == np.median([0.99999, 0.995, 0.95, 0.5])
