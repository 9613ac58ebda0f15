"""The variation operators against their definitions: values worked out by hand from the formulas,
and the CPPN mutation probabilities observed over many children.

Through the public encodings (`make_encoding(...).vary`), so the tests hold whatever module the
operators live in.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from foolbench.encodings import make_encoding
from foolbench.encodings.direct import polynomial_mutation


class ConstantRng:
    """A generator whose every uniform draw is `u` and whose permutations are the identity, so the
    operator's result can be worked out by hand. Crossover pairs are then rows (0, 1), (2, 3), ..."""

    def __init__(self, u: float):
        self.u = u

    def random(self, size=None, dtype=np.float64):
        return self.u if size is None else np.full(size, self.u, dtype=dtype)

    def permutation(self, n: int) -> np.ndarray:
        return np.arange(n)


# Simulated binary crossover as sferes2's `evo_float` SBX (Deb's NSGA-II code) on [0, 1], eta_c = 10,
# for parents y1 < y2 and one uniform number u per gene:
#   beta1 = 1 + 2 y1 / (y2 - y1),  beta2 = 1 + 2 (1 - y2) / (y2 - y1)
#   alpha = 2 - beta ** -(eta_c + 1)
#   betaq = (u alpha) ** (1 / (eta_c + 1))            if u <= 1 / alpha
#         = (1 / (2 - u alpha)) ** (1 / (eta_c + 1))   otherwise
#   c1 = (y1 + y2 - betaq(beta1) (y2 - y1)) / 2,  c2 = (y1 + y2 + betaq(beta2) (y2 - y1)) / 2
# Worked out for (y1, y2) = (0.2, 0.6), u = 0.25: beta1 = 2, alpha1 = 2 - 2**-11 = 1.99951172,
# u <= 1/alpha1, betaq1 = (0.25 * 1.99951172) ** (1/11) = 0.93891007, c1 = (0.8 - 0.4 * 0.93891007) / 2
# = 0.212218; beta2 = 3, alpha2 = 2 - 3**-11 = 1.99999435, betaq2 = 0.93893067, c2 = 0.587786.
# With u = 0.9 both betas take the second branch (u > 1/alpha); near the bounds (0.05, 0.9) the two
# betas differ, so the children are not symmetric about the parents' mean.
SBX_CASES = {
    0.25: {(0.2, 0.6): (0.212218, 0.587786), (0.05, 0.9): (0.081685, 0.872230)},
    0.9: {(0.2, 0.6): (0.168535, 0.631511), (0.05, 0.9): (0.019342, 0.950913)},
}


@pytest.mark.parametrize("u", sorted(SBX_CASES))
def test_sbx_children_are_debs_formula(u):
    cases = SBX_CASES[u]
    pairs = [*cases, (0.5, 0.5)]  # equal genes do not cross (sferes2: |y1 - y2| <= epsilon)
    genes = np.array([[p[0] for p in pairs], [p[1] for p in pairs]], dtype=np.float32)
    genes[:, 1] = genes[::-1, 1]  # parent order does not matter: SBX uses min and max
    encoding = make_encoding(
        "direct", resolution=1, channels=1, mutation_rate=0.0, crossover=True, crossover_rate=1.0, eta_c=10.0
    )
    children = encoding.vary({"genes": genes.reshape(2, 1, 1, -1)}, ConstantRng(u), 0)["genes"]
    children = children.reshape(2, -1)
    for gene, (parents, expected) in enumerate(cases.items()):
        # a fair coin decides which child takes c1: compare the pair of children as a set
        assert sorted(children[:, gene]) == pytest.approx(expected, abs=2e-6), (u, parents)
    assert children[:, -1].tolist() == [0.5, 0.5]


def test_sbx_crosses_only_with_its_rate():
    encoding = make_encoding(
        "direct", resolution=1, channels=1, mutation_rate=0.0, crossover=True, crossover_rate=0.5
    )
    genes = np.array([0.2, 0.6], dtype=np.float32).reshape(2, 1, 1, 1)
    # the pair crosses when its uniform draw is below the rate: 0.25 crosses, 0.75 copies the parents
    assert sorted(encoding.vary({"genes": genes}, ConstantRng(0.25), 0)["genes"].ravel()) == pytest.approx(
        [0.212218, 0.587786], abs=2e-6
    )
    np.testing.assert_array_equal(encoding.vary({"genes": genes}, ConstantRng(0.75), 0)["genes"], genes)


# Deb's bounded polynomial mutation (DEAP's mutPolynomialBounded), eta_m = 15, on [low, high]:
#   d1 = (x - low) / (high - low), d2 = (high - x) / (high - low)
#   u < 0.5:  val = 2u + (1 - 2u) (1 - d1) ** 16,            dq = val ** (1/16) - 1
#   u >= 0.5: val = 2(1 - u) + 2(u - 0.5) (1 - d2) ** 16,    dq = 1 - val ** (1/16)
#   x' = x + dq (high - low)
# x = 0.3 on [0, 1], u = 0.2: val = 0.4 + 0.6 * 0.7**16 = 0.40199398, dq = 0.40199398**(1/16) - 1
# = -0.05536568, x' = 0.24463432. u = 0.8: val = 0.4 + 0.6 * 0.3**16 = 0.40000000, dq = 1 - 0.4**(1/16)
# = 0.05565921, x' = 0.35565921. A weight 4.0 on [-10, 10], u = 0.8: d2 = 0.3, so val = 0.40199398 and
# dq = 0.05536568 as in the first case, x' = 4 + 20 * 0.05536568 = 5.10731354.
@pytest.mark.parametrize(
    "x, u, low, high, expected",
    [(0.3, 0.2, 0.0, 1.0, 0.24463432), (0.3, 0.8, 0.0, 1.0, 0.35565921), (4.0, 0.8, -10.0, 10.0, 5.10731354)],
)
def test_polynomial_mutation_is_debs_formula(x, u, low, high, expected):
    moved = polynomial_mutation(np.array([x]), np.array([u]), low, high, 15.0)
    assert moved[0] == pytest.approx(expected, abs=2e-6)


# ---------------------------------------------------------------- the CPPN mutation probabilities

STRUCTURAL = ("add_connection", "delete_connection", "add_node", "delete_node")
CHILDREN = 4000


def within_binomial(hits: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """`hits` out of `n` is a plausible Binomial(n, p) draw: within `sigmas` standard deviations."""
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.fixture(scope="module")
def grown():
    """CPPNs with 3 hidden nodes each (three forced node splits), so every structural mutation has
    something to act on: free hidden slots, connections, hidden nodes, pairs not yet connected."""
    only_add_node = dict.fromkeys((*STRUCTURAL, "weight_rate", "activation_rate"), 0.0) | {"add_node": 1.0}
    encoding = make_encoding("cppn", max_hidden=8, **only_add_node)
    rng = np.random.default_rng(0)
    pop = encoding.init(CHILDREN, rng)
    for generation in range(3):
        pop = encoding.vary(pop, rng, generation)
    return pop


def hidden(pop) -> np.ndarray:
    return pop["alive"][:, -8:].sum(axis=1)


@pytest.mark.parametrize("mutation", STRUCTURAL)
def test_each_structural_mutation_hits_a_child_with_its_probability(grown, mutation):
    assert (hidden(grown) == 3).all()
    others = dict.fromkeys((*STRUCTURAL, "weight_rate", "activation_rate"), 0.0)
    del others[mutation]
    encoding = make_encoding("cppn", max_hidden=8, **others)  # `mutation` at its default
    p = encoding.options[mutation]
    children = encoding.vary(grown, np.random.default_rng(1), 0)
    connections = children["conn"].sum(axis=(1, 2)) - grown["conn"].sum(axis=(1, 2))
    nodes = hidden(children) - hidden(grown)
    hit = {
        "add_connection": (connections == 1) & (nodes == 0),
        "delete_connection": (connections == -1) & (nodes == 0),
        "add_node": (connections == 1) & (nodes == 1),  # s->d becomes s->h->d
        "delete_node": nodes == -1,
    }[mutation]
    changed = (children["conn"] != grown["conn"]).any(axis=(1, 2)) | (
        children["alive"] != grown["alive"]
    ).any(1)
    assert (changed == hit).all(), "a child changed in a way this mutation does not make"
    assert within_binomial(int(hit.sum()), CHILDREN, p), f"{mutation}: {hit.sum()} of {CHILDREN}, p = {p}"


def test_weights_and_activations_mutate_at_their_rates(grown):
    no_structure = dict.fromkeys(STRUCTURAL, 0.0)
    encoding = make_encoding("cppn", max_hidden=8, **no_structure)
    children = encoding.vary(grown, np.random.default_rng(2), 0)
    assert (children["conn"] == grown["conn"]).all()
    weights = grown["conn"]
    moved = int((children["weight"] != grown["weight"])[weights].sum())
    assert within_binomial(moved, int(weights.sum()), encoding.options["weight_rate"])
    nodes = grown["alive"].copy()
    nodes[:, :4] = False  # inputs have no activation
    redrawn = int((children["act"] != grown["act"])[nodes].sum())
    # a redraw picks one of the 4 activations uniformly, so 3 in 4 redraws change it
    assert within_binomial(redrawn, int(nodes.sum()), encoding.options["activation_rate"] * 3 / 4)
