"""Gradient ascent through a differentiable CPPN (Mordvintsev et al., "Differentiable Image
Parameterizations", Distill 2018): the white-box counterpart of the patch search, beyond the paper.

The paper's gradient ascent moves pixels, and its images are noise-like. Here each target class
owns one fixed-topology CPPN (`encodings/fixed_cppn.py`) and Adam moves the CPPN's weights along
the gradient of log p(class) of the image it draws (a log-softmax: finite where p underflows
float32), so the images keep the paper's CPPN look:
regular, smooth, repeating patterns. The gradient is taken through the model's PyTorch form, as
the pixel gradient engine does (`gradient.differentiable`); the shared evaluator scores the 8-bit
images, as the runner saves them.

State: the CPPN weights, Adam's moments and step count, each class's best image so far, the
generator (used only for the random start).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import torch

from foolbench.encodings import Population, fixed_cppn
from foolbench.errors import FoolbenchError
from foolbench.images import as_uint8
from foolbench.options import Choice, Float, Int, check_table
from foolbench.search.archive import EMPTY
from foolbench.search.gradient import device_of, differentiable, gradient_batch, objective_scores
from foolbench.search.patch import Canvases

SECTION = "gradient-cppn"


class CPPNGradient:
    """One CPPN per target class, all climbing at once; image i competes for class i only."""

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "steps": 100,  # the budget (the runner's generations)
        "lr": 0.01,  # Adam's step size on the CPPN weights
        "resolution": None,  # None: the model's input size
        "channels": None,  # None: the model's channels
        "cppn_hidden": 16,
        "cppn_resolution": 128,
    }

    def __init__(self, model, classes, seed: int, **options: Any):
        self.classes = np.asarray(classes, dtype=np.int64)
        self.options = check_options(options, model)
        o = self.options
        self.encoding = Canvases(o["resolution"], o["channels"])
        self.rng = np.random.default_rng(seed)
        self.generation = -1  # -1: not started; 0: the random CPPNs have been scored
        self.nonfinite = 0  # images whose gradient was NaN or infinite (their CPPN then stays put)
        self.device = device_of(model)  # the CPPNs, their inputs and the targets live with the model
        genome = fixed_cppn.init(len(self.classes), self.rng, hidden=o["cppn_hidden"])
        self.params = {k: torch.tensor(v, device=self.device, requires_grad=True) for k, v in genome.items()}
        self.adam = torch.optim.Adam(list(self.params.values()), lr=o["lr"])
        self.best_fitness = np.full(len(self.classes), EMPTY)
        self.best_generation = np.full(len(self.classes), -1, dtype=np.int64)
        self.best_images: np.ndarray | None = None
        self.module = differentiable(model, "log-probability")
        self.batch = gradient_batch(model)

    @property
    def fitness(self) -> np.ndarray:
        return self.best_fitness

    def ask(self) -> Population:
        """The random CPPNs' images (first call), else the images after one Adam step for every class."""
        if self.generation >= 0:
            self._ascend()
        with torch.no_grad():
            return {"canvas": as_uint8(self._draw(self.params).cpu().numpy())}

    def tell(self, pop: Population, fitness: np.ndarray) -> int:
        self.generation += 1
        n = len(self.classes)
        own = fitness[np.arange(n), np.arange(n)]
        wins = own > self.best_fitness
        if self.best_images is None:
            self.best_images = np.zeros_like(pop["canvas"])
        self.best_images[wins] = pop["canvas"][wins]
        self.best_fitness = np.where(wins, own, self.best_fitness)
        self.best_generation = np.where(wins, self.generation, self.best_generation)
        return int(wins.sum())

    def champions(self) -> tuple[Population, np.ndarray]:
        return {"canvas": self.best_images}, self.best_generation

    def _draw(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        o = self.options
        images = fixed_cppn.upsample(fixed_cppn.draw(params, o["cppn_resolution"]), o["resolution"])
        return images[:, : o["channels"]]

    def _ascend(self) -> None:
        """One Adam step on every CPPN's weights towards log p(its class), in chunks for memory."""
        self.adam.zero_grad()
        targets = torch.from_numpy(self.classes).to(self.device)
        for s in range(0, len(self.classes), self.batch):
            part = {k: v[s : s + self.batch] for k, v in self.params.items()}
            log_p = objective_scores(self.module, self._draw(part), targets[s : s + self.batch])
            (-log_p).sum().backward()
        finite = torch.ones(len(self.classes), dtype=torch.bool, device=self.device)
        for v in self.params.values():
            finite &= torch.isfinite(v.grad).reshape(len(v), -1).all(dim=1)
        self.nonfinite += int((~finite).sum())
        for v in self.params.values():  # a broken gradient leaves that class's CPPN where it is
            v.grad.masked_fill_(~finite.view(-1, *[1] * (v.dim() - 1)), 0.0)
        self.adam.step()

    # -- checkpointing: plain arrays, so np.savez/np.load need no pickle -----------------------------
    def state(self) -> dict[str, np.ndarray]:
        out = {f"{SECTION}/{k}": v.detach().cpu().numpy().copy() for k, v in self.params.items()}
        for k, v in zip(self.params, self.adam.param_groups[0]["params"], strict=True):
            for name, value in self.adam.state.get(v, {}).items():
                out[f"{SECTION}/adam/{k}/{name}"] = value.detach().cpu().numpy().copy()
        out |= {
            f"{SECTION}/best_fitness": self.best_fitness,
            f"{SECTION}/best_generation": self.best_generation,
            f"{SECTION}/nonfinite": np.array(self.nonfinite),
            "rng": np.array(json.dumps(self.rng.bit_generator.state)),
        }
        if self.best_images is not None:
            out[f"{SECTION}/best_images"] = self.best_images
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if f"{SECTION}/w0" not in state or len(state[f"{SECTION}/best_fitness"]) != len(self.classes):
            raise FoolbenchError(
                "the checkpoint holds no CPPNs for these target classes; it was not written by this "
                "gradient-cppn run — start the run again"
            )
        with torch.no_grad():
            for k, v in self.params.items():
                v.copy_(torch.from_numpy(np.array(state[f"{SECTION}/{k}"])))
        saved = self.adam.state_dict()
        for i, k in enumerate(self.params):
            moments = {
                name: torch.from_numpy(np.array(state[f"{SECTION}/adam/{k}/{name}"]))
                for name in ("step", "exp_avg", "exp_avg_sq")
                if f"{SECTION}/adam/{k}/{name}" in state
            }
            if moments:
                saved["state"][i] = moments
        self.adam.load_state_dict(saved)  # puts each moment where Adam keeps it (its weight's device)
        self.best_fitness = np.array(state[f"{SECTION}/best_fitness"])
        self.best_generation = np.array(state[f"{SECTION}/best_generation"])
        best = state.get(f"{SECTION}/best_images")
        self.best_images = None if best is None else np.array(best)
        self.nonfinite = int(state[f"{SECTION}/nonfinite"])
        self.rng.bit_generator.state = json.loads(str(state["rng"]))


def build(model, classes, seed: int, tables: dict[str, dict]) -> CPPNGradient:
    """The engine a gradient-cppn preset describes: its [gradient-cppn] options."""
    return CPPNGradient(model, classes, seed, **tables.get(SECTION, {}))


# -- options ---------------------------------------------------------------------------------------
RULES = {
    "steps": Int(0, 10_000_000),
    "lr": Float(0.0, 100.0, positive=True),
    "resolution": Int(2, 4096),
    "channels": Choice((1, 3)),
    "cppn_hidden": Int(4, 1024),
    "cppn_resolution": Int(2, 4096),
}


def check_options(given: dict, model=None) -> dict:
    """The [gradient-cppn] options over the defaults (resolution and channels: the model's)."""
    check_table(given, RULES, SECTION)
    o = {**CPPNGradient.DEFAULTS, **given}
    spec = getattr(model, "spec", None)
    if o["resolution"] is None and spec is not None:
        o["resolution"] = int(spec.resize or max(spec.size))
    if o["channels"] is None and spec is not None:
        o["channels"] = spec.channels if spec.channels in (1, 3) else 3
    o = {k: (v if v is None else RULES[k].check(f"{SECTION}.{k}", v)) for k, v in o.items()}
    if o["cppn_hidden"] % 4:
        raise FoolbenchError(
            f"'{SECTION}.cppn_hidden' must be a multiple of 4 (sin, tanh, Gaussian, abs units), "
            f"got {o['cppn_hidden']}"
        )
    return o
