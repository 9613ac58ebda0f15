"""CPPN encoding (paper, "Indirect encoding: CPPN"), a whole population at once.

Genomes are padded arrays over a fixed slot layout, with their mutation operators, in
`cppn_genome`; `cppn_render` turns them into images. This module is the encoding that the search
uses: init, vary, render.
"""

from typing import Any, ClassVar

import numpy as np

from foolbench.encodings.colour import hls_to_rgb
from foolbench.encodings.cppn_genome import (
    ACTIVATIONS,
    KEYS,
    N_INPUTS,
    NO_ACTIVATION,
    add_connection,
    add_node,
    delete_connection,
    delete_node,
    leading_slots,
    mutate_activations,
    mutate_weights,
)
from foolbench.encodings.cppn_render import render_outputs
from foolbench.encodings.direct import Population
from foolbench.errors import FoolbenchError
from foolbench.options import Choice, Float, Int, with_defaults


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
