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

The engine offers the runner the interface of `MapElites`: `model`, `encoding` (a direct encoding,
so `render` of the archive's `{"genes": images}` gives the images), `classes`, `archive` (one cell
per target class; image i competes only for class i), `generation` (steps done; 0 = the noise
scored), `evaluations` (images scored), `nonfinite`, `step`, `stats`, `state` and `load_state`.
Every image in the archive was scored by `model.probs` on its 8-bit quantised form, exactly what
the runner saves as PNG and re-scores.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from foolbench.encodings.direct import (
    DirectEncoding,
    as_choice,
    as_float,
    as_int,
)
from foolbench.errors import FoolbenchError
from foolbench.search.map_elites import SearchEngine, quantise

OBJECTIVES = ("probability", "logit")
GRADIENT_BATCH = 64  # model inputs (images x crops) per backward pass, for memory


class GradientAscent(SearchEngine):
    """State: the current images, the archive, the generator, the step and evaluation counters."""

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
        super().__init__(classes, seed)
        self.options = check_options(options, model)
        self.model = model
        self.encoding = DirectEncoding(
            resolution=self.options["resolution"], channels=self.options["channels"], colour="rgb"
        )
        self.images: np.ndarray | None = None  # float32 [n, C, H, W] in [0, 1], row i for class i
        self.module = differentiable(model)
        self.device = _module_device(self.module)
        views = getattr(getattr(model, "spec", None), "views", 1)
        self.batch = max(1, min(GRADIENT_BATCH, getattr(model, "batch_size", GRADIENT_BATCH)) // views)

    # -- one step ----------------------------------------------------------------------------------
    def step(self) -> int:
        """Score the noise (first call), else one regularised gradient step for every class at once."""
        if self.generation < 0:
            self.images = self.encoding.init(len(self.classes), self.rng)["genes"]
        else:
            self.images = self._regularise(self._ascend(self.images), self.generation + 1)
        fitness = self.evaluate(self.images)
        self.generation += 1
        return self.archive.insert({"genes": self.images}, fitness, self.generation)

    def evaluate(self, images: np.ndarray) -> np.ndarray:
        """Fitness [n, n]: image i's probability of class i on the diagonal, -inf elsewhere, so that
        the archive's multi-cell insertion lets image i compete for its own class only."""
        n = len(images)
        probs = self.model.probs(quantise(images))[np.arange(n), self.classes]
        bad = ~np.isfinite(probs)
        if bad.any():
            self.nonfinite += int(bad.sum())
            probs = np.where(bad, 0.0, probs)
        self.evaluations += n
        fitness = np.full((n, n), -np.inf)
        fitness[np.arange(n), np.arange(n)] = probs
        return fitness

    def gradients(self, images: np.ndarray) -> np.ndarray:
        """d objective(image i, class i) / d pixels, for every image (float32, like the images)."""
        out = np.empty_like(images)
        for s in range(0, len(images), self.batch):
            x = torch.from_numpy(np.ascontiguousarray(images[s : s + self.batch])).to(self.device)
            x.requires_grad_(True)
            targets = torch.from_numpy(self.classes[s : s + self.batch]).to(self.device)
            score = objective_scores(self.module, x, targets, self.options["objective"])
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

    # -- checkpointing: the base state plus the current images ------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        out = super().state()
        if self.images is not None:
            out["gradient/images"] = self.images
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        super().load_state(state)
        images = state.get("gradient/images")
        self.images = None if images is None else np.array(images, dtype=np.float32)
        if self.generation >= 0 and (self.images is None or len(self.images) != len(self.classes)):
            raise FoolbenchError(
                "the checkpoint holds no images for these target classes; it was not written by this "
                "gradient run — start the run again"
            )


# -- options ---------------------------------------------------------------------------------------
def check_options(given: dict, model=None) -> dict:
    """The [gradient] options merged over the defaults; unknown names and bad values are errors."""
    unknown = sorted(set(given) - set(GradientAscent.DEFAULTS))
    if unknown:
        known = ", ".join(GradientAscent.DEFAULTS)
        raise FoolbenchError(f"unknown gradient option {unknown[0]!r} (known: {known})")
    o = {**GradientAscent.DEFAULTS, **given}
    spec = getattr(model, "spec", None)
    if o["resolution"] is None:
        o["resolution"] = max(spec.size) if spec is not None else 28
    if o["channels"] is None:
        o["channels"] = spec.channels if spec is not None and spec.channels in (1, 3) else 3
    out = {
        "steps": as_int("steps", o["steps"], 0),
        "lr": as_float("lr", o["lr"], 0.0, 100.0, positive=True),
        "resolution": as_int("resolution", o["resolution"], 1, 4096),
        "channels": as_choice("channels", as_int("channels", o["channels"], 1, 3), (1, 3)),
        "decay": as_float("decay", o["decay"], 0.0, 0.99),
        "blur_every": as_int("blur_every", o["blur_every"], 0),
        "blur_radius": as_float("blur_radius", o["blur_radius"], 0.0, 100.0),
        "l1_percentile": as_float("l1_percentile", o["l1_percentile"], 0.0, 99.0),
        "objective": as_choice("objective", o["objective"], OBJECTIVES),
    }
    if (out["blur_every"] > 0) != (out["blur_radius"] > 0):
        raise FoolbenchError(
            f"options blur_every={out['blur_every']} and blur_radius={out['blur_radius']} go together: "
            "set both above 0 to blur, or both to 0"
        )
    return out


# -- the model as a differentiable function ---------------------------------------------------------
def differentiable(model) -> torch.nn.Module:
    """`model.torch_module()` in eval mode with frozen weights, on the device torch models use.

    Raises the model's one-line FoolbenchError where it has no PyTorch form (it names the attacks
    that still work).
    """
    from foolbench.models.torch_model import device

    module = model.torch_module().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module.to(device())


def _module_device(module: torch.nn.Module) -> torch.device:
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def objective_scores(module, x: torch.Tensor, targets: torch.Tensor, objective: str) -> torch.Tensor:
    """One score per image: its target's softmax probability, or (objective 'logit') its logit."""
    rows = torch.arange(len(targets), device=targets.device)
    if objective == "probability":
        return module(x)[rows, targets]
    return _logits(module, x)[rows, targets]


def _logits(module, x: torch.Tensor) -> torch.Tensor:
    """Pre-softmax scores where the model has them; for a model that outputs probabilities, their
    log (a logit up to a constant shared by the classes); for an ensemble, the members' mean."""
    from foolbench.models.preprocess import preprocess
    from foolbench.models.torch_model import ProbabilityModule

    if isinstance(module, ProbabilityModule) and module.output_kind == "logits":
        z = module.net(preprocess(x, module.spec))
        if module.spec.views > 1:
            z = z.reshape(x.shape[0], module.spec.views, -1).mean(1)
        return z
    members = getattr(module, "members", None)
    if isinstance(members, torch.nn.ModuleList):
        return torch.stack([_logits(m, x) for m in members]).mean(0)
    return torch.log(module(x).clamp_min(1e-30))


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
