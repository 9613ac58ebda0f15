"""Gradient ascent on the pixels (the paper's third method), with the regularisers it studied.

One image per target class starts from seeded noise (uniform in [0, 1], the same start as the direct
encoding) and climbs the gradient of its class's softmax probability, all classes in one batch (run
in chunks of the model's batch size, which gives the same result: in eval mode images do not
interact). A step moves each image by `lr` times its gradient divided by the gradient's root mean
square over the image's pixels, so `lr` is the typical change of a pixel per step whatever the
scale of the gradient (raw probability gradients vanish near 0 and 1). Then, in the paper's order:
clip to [0, 1]; L2 decay (multiply by 1 - decay); a Gaussian blur every `blur_every` steps; the
pseudo-L1 step (pixels whose norm across channels is among the lowest `l1_percentile` percent are
set to 0).

An ask/tell engine (`foolbench.search.engine`): `ask` takes the gradient step and proposes the new
images (genomes of a direct encoding, so rendering them is the identity), the shared evaluator
scores them 8-bit quantised, as the runner saves them, and `tell` keeps each class's best image.
White-box: the engine holds the model to take gradients, never to score.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from foolbench.encodings import Population
from foolbench.encodings.direct import DirectEncoding
from foolbench.errors import FoolbenchError
from foolbench.options import Choice, Float, Int, check_table
from foolbench.search.archive import EMPTY, Archive

OBJECTIVES = ("probability", "logit")
GRADIENT_BATCH = 64  # model inputs (images x crops) per backward pass on the CPU, unless --batch-size says


class GradientAscent:
    """State: the current images, each class's best image so far, the generator, the counters."""

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "steps": 300,  # the budget (the runner's generations); kept here for the manifest
        "lr": 0.01,
        "resolution": None,  # None: the model's input size
        "channels": None,  # None: the model's channels
        "decay": 0.0,
        "blur_every": 0,
        "blur_radius": 0.0,
        "l1_percentile": 0.0,
        "objective": "probability",
    }

    def __init__(self, model, classes, seed: int, **options: Any):
        self.classes = np.asarray(classes, dtype=np.int64)
        self.rng = np.random.default_rng(seed)
        self.generation = -1  # -1: not started; 0: the starting noise has been scored
        self.nonfinite = 0  # gradients that were NaN or infinite (the image then stays where it is)
        self.options = check_options(options, model)
        self.encoding = DirectEncoding(
            resolution=self.options["resolution"], channels=self.options["channels"], colour="rgb"
        )
        self.images: np.ndarray | None = None  # float32 [n, C, H, W] in [0, 1], row i for class i
        self.best_fitness = np.full(len(self.classes), EMPTY)  # class i's best score so far
        self.best_generation = np.full(len(self.classes), -1, dtype=np.int64)
        self.best_images: np.ndarray | None = None  # the image that scored it
        self.module = differentiable(model, self.options["objective"])
        self.device = device_of(model)
        self.batch = gradient_batch(model)

    @property
    def fitness(self) -> np.ndarray:
        return self.best_fitness

    # -- one step ----------------------------------------------------------------------------------
    def ask(self) -> Population:
        """The seeded noise (first call), else one regularised gradient step for every class at once."""
        if self.generation < 0:
            images = self.encoding.init(len(self.classes), self.rng)["genes"]
        else:
            images = self._regularise(self._ascend(self.images), self.generation + 1)
        return {"genes": images}

    def tell(self, pop: Population, fitness: np.ndarray) -> int:
        """Image i competes for class i only: keep it where it beats that class's best so far."""
        self.images = pop["genes"]
        self.generation += 1
        own = fitness[np.arange(len(self.classes)), np.arange(len(self.classes))]
        wins = own > self.best_fitness
        if self.best_images is None:
            self.best_images = np.zeros_like(self.images)
        self.best_images[wins] = self.images[wins]
        self.best_fitness = np.where(wins, own, self.best_fitness)
        self.best_generation = np.where(wins, self.generation, self.best_generation)
        return int(wins.sum())

    def champions(self) -> tuple[Population, np.ndarray]:
        return {"genes": self.best_images}, self.best_generation

    def gradients(self, images: np.ndarray) -> np.ndarray:
        """d objective(image i, class i) / d pixels, for every image (float32, like the images)."""
        out = np.empty_like(images)
        for s in range(0, len(images), self.batch):
            x = torch.from_numpy(np.ascontiguousarray(images[s : s + self.batch])).to(self.device)
            x.requires_grad_(True)
            targets = torch.from_numpy(self.classes[s : s + self.batch]).to(self.device)
            score = objective_scores(self.module, x, targets)
            (grad,) = torch.autograd.grad(score.sum(), x)
            out[s : s + self.batch] = grad.detach().float().cpu().numpy()
        return out

    def _ascend(self, images: np.ndarray) -> np.ndarray:
        grad = self.gradients(images).reshape(len(images), -1).astype(np.float64)
        rms = np.sqrt(np.mean(grad * grad, axis=1))
        finite = np.isfinite(grad).all(axis=1)
        self.nonfinite += int((~finite).sum())
        move = finite & (rms > 0)  # a zero or broken gradient leaves that image where it is
        step = np.zeros_like(grad)
        step[move] = grad[move] / rms[move, None] * self.options["lr"]
        return np.clip(images + step.reshape(images.shape).astype(np.float32), 0.0, 1.0)

    def _regularise(self, images: np.ndarray, step: int) -> np.ndarray:
        o = self.options
        if o["decay"] > 0:
            images = images * np.float32(1.0 - o["decay"])
        if o["blur_every"] > 0 and step % o["blur_every"] == 0:
            images = gaussian_blur(images, o["blur_radius"])
        if o["l1_percentile"] > 0:
            images = pseudo_l1(images, o["l1_percentile"])
        return np.clip(images, 0.0, 1.0).astype(np.float32, copy=False)

    # -- checkpointing: plain arrays, so np.savez/np.load need no pickle -----------------------------
    def state(self) -> dict[str, np.ndarray]:
        out = {
            "gradient/best_fitness": self.best_fitness,
            "gradient/best_generation": self.best_generation,
            "gradient/nonfinite": np.array(self.nonfinite),
            "rng": np.array(json.dumps(self.rng.bit_generator.state)),
        }
        if self.images is not None:
            out["gradient/images"] = self.images
            out["gradient/best_images"] = self.best_images
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.rng.bit_generator.state = json.loads(str(state["rng"]))
        images = state.get("gradient/images")
        self.images = None if images is None else np.array(images, dtype=np.float32)
        if "gradient/best_fitness" not in state and "archive/fitness" in state:
            state = _from_archive_format(state)
        self.best_fitness = np.array(state["gradient/best_fitness"])
        self.best_generation = np.array(state["gradient/best_generation"])
        best = state.get("gradient/best_images")
        self.best_images = None if best is None else np.array(best, dtype=np.float32)
        self.nonfinite = int(state.get("gradient/nonfinite", 0))
        n = len(self.classes)
        if len(self.best_fitness) != n or (
            images is not None and (len(self.images) != n or self.best_images is None)
        ):
            raise FoolbenchError(
                "the checkpoint holds no images for these target classes; it was not written by this "
                "gradient run — start the run again"
            )


def _from_archive_format(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Checkpoints written before the engine kept its own per-class best (foolbench 0.1.0 up to the
    ask/tell engines) held it as a class archive, with one image per cell: read them too."""
    archive = Archive.from_state(state)
    out = {"gradient/best_fitness": archive.fitness, "gradient/best_generation": archive.generation}
    if archive.pool is not None and (archive.elite >= 0).all():
        out["gradient/best_images"] = archive.pool["genes"][archive.elite]
    return {**state, **out}


def build(model, classes, seed: int, tables: dict[str, dict]) -> GradientAscent:
    """The engine a gradient preset describes: its [gradient] options."""
    return GradientAscent(model, classes, seed, **tables.get("gradient", {}))


# -- options ---------------------------------------------------------------------------------------
RULES = {
    "steps": Int(0, 10_000_000),
    "lr": Float(0.0, 100.0, positive=True),
    "resolution": Int(1, 4096),
    "channels": Choice((1, 3)),
    "decay": Float(0.0, 0.99),
    "blur_every": Int(0, 1_000_000),
    "blur_radius": Float(0.0, 100.0),
    "l1_percentile": Float(0.0, 99.0),
    "objective": Choice(OBJECTIVES),
}


def check_options(given: dict, model=None) -> dict:
    """The [gradient] options merged over the defaults (resolution and channels: the model's);
    unknown names and bad values are errors naming them."""
    check_table(given, RULES, "gradient")
    o = {**GradientAscent.DEFAULTS, **given}
    spec = getattr(model, "spec", None)
    if o["resolution"] is None:
        o["resolution"] = max(spec.size) if spec is not None else 28
    if o["channels"] is None:
        o["channels"] = spec.channels if spec is not None and spec.channels in (1, 3) else 3
    out = check_table(o, RULES, "gradient")
    if (out["blur_every"] > 0) != (out["blur_radius"] > 0):
        raise FoolbenchError(
            f"'gradient.blur_every' ({out['blur_every']}) and 'gradient.blur_radius' ({out['blur_radius']}) "
            "go together: set both above 0 to blur, or both to 0"
        )
    return out


# -- the model as a differentiable function ---------------------------------------------------------
# objective -> what the module outputs; "log-probability" is gradient-cppn's (not a preset choice)
OUTPUT_OF = {"probability": "probs", "logit": "logits", "log-probability": "log_probs"}


def differentiable(model, objective: str = "probability") -> torch.nn.Module:
    """The model's `torch_module` for the objective (probabilities, or logits), in eval mode with
    frozen weights, on the model's device (`device_of`).

    Raises the model's one-line FoolbenchError where it has no PyTorch form (it names the attacks
    that still work).
    """
    module = model.torch_module(OUTPUT_OF[objective]).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module.to(device_of(model))


def device_of(model) -> torch.device:
    """The device the model's adapter owns: every tensor an engine makes for it goes there."""
    return getattr(model, "device", None) or torch.device("cpu")


def gradient_batch(model) -> int:
    """Images per backward pass, each image being 10 inputs with ten-crop evaluation: the batch size
    the user gave (--batch-size), else the model's on a GPU, else GRADIENT_BATCH model inputs (for
    memory on the CPU). Images do not interact in eval mode, so results do not depend on it."""
    views = getattr(getattr(model, "spec", None), "views", 1)
    inputs = getattr(model, "batch_size", GRADIENT_BATCH)
    given = getattr(getattr(model, "options", None), "batch_size", None)
    if not given and device_of(model).type == "cpu":
        inputs = min(GRADIENT_BATCH, inputs)
    return max(1, inputs // views)


def objective_scores(module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One score per image: what the module outputs (probability or logit) for its target class."""
    return module(x)[torch.arange(len(targets), device=targets.device), targets]


# -- regularisers ----------------------------------------------------------------------------------
def gaussian_blur(images: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur with standard deviation `radius` pixels (edges replicated), channel by channel."""
    half = max(1, math.ceil(3.0 * radius))
    taps = np.arange(-half, half + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (taps / radius) ** 2)
    kernel = torch.from_numpy((kernel / kernel.sum()).astype(np.float32))
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    n, c, h, w = x.shape
    x = x.reshape(n * c, 1, h, w)
    x = F.conv2d(F.pad(x, (half, half, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, half, half), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x.reshape(n, c, h, w).numpy()


def pseudo_l1(images: np.ndarray, percentile: float) -> np.ndarray:
    """Zero every pixel whose norm across channels is among the lowest `percentile` % of its image
    (at least that share; ties at the threshold are zeroed too)."""
    n, c, h, w = images.shape
    norms = np.sqrt(np.sum(images.astype(np.float32) ** 2, axis=1)).reshape(n, h * w)
    k = math.ceil(percentile / 100.0 * h * w)
    if k == 0:
        return images
    threshold = np.partition(norms, k - 1, axis=1)[:, k - 1]
    keep = (norms > threshold[:, None]).reshape(n, 1, h, w)
    return images * keep
