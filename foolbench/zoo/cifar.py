"""The zoo's CIFAR-10 network and how it trains: the `Task` that the shared recipes run on CIFAR-10.

`AirNet` is the network of airbench94 (Keller Jordan's CIFAR-10 speed-run, 94 % in 10 epochs) at half
its width (32/128/128 channels instead of 64/256/256, a quarter of the multiply-adds), so that it
trains on two CPU cores: a frozen 2x2 whitening convolution initialised from the training images'
patch covariance, three conv-pool-BatchNorm-GELU groups, a max-pool and a linear layer. Its training
is airbench's too: Nesterov SGD with decoupled hyperparameters, BatchNorm biases at 64x the learning
rate, a warm-up then linear decay, lookahead averaging every 5 steps, random flips and 2-pixel
translations. One change, on purpose: no label smoothing. Smoothing caps a model's confidence (at
0.2, near 82 %), and a fooling benchmark's plain reference must be as confident as plainly trained
models are; the card's noise figures show it.

The network takes pixels in [0, 1] and normalises them itself, so adversarial radii, outliers and
attacks all live in the image's own [0, 1] space (card: mean 0, std 1).

Builds run on one thread (`THREADS`): the number of threads changes the order in which floats are
summed, and a build must give the same bytes wherever it runs (on the same torch and CPU type).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from foolbench.data.cifar10 import CLASSES, Cifar10Data
from foolbench.models.card import ModelCard
from foolbench.zoo.outliers import outlier_mix
from foolbench.zoo.training import Recipe

MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10 training set, per channel (airbench's)
STD = (0.2470, 0.2435, 0.2616)
WIDTHS = (32, 128, 128)
SHAPE = (3, 32, 32)
THREADS = 1
WHITEN_IMAGES = 5000  # the first training images whose 2x2 patches set the whitening layer
WHITEN_BIAS_EPOCHS = 3  # the whitening layer's bias trains this long, then is frozen (airbench)
WHITEN_EPS = 5e-4  # added to each eigenvalue: a direction's gain is at most 1 / sqrt(WHITEN_EPS) (~45)
BN_MOMENTUM = 0.4  # torch's convention (airbench's 0.6 is the share kept)
SCALE = 1 / 9  # logits = linear layer / 9 (airbench)
MOMENTUM = 0.85
WEIGHT_DECAY = 0.0153  # per 1,024 examples, decoupled from the learning rate (airbench)
BIAS_SCALER = 64.0
WARMUP = 0.23  # share of the steps over which the learning rate rises from 0.2 to 1 of its peak
FINAL_LR = 0.07  # ... then falls linearly to this share of it
LOOKAHEAD_EVERY = 5
CHECK_IMAGES = 500  # test images the ONNX file is compared with PyTorch on


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with a fixed scale of 1 (only the bias learns), airbench's."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-12, momentum=BN_MOMENTUM)
        self.weight.requires_grad_(False)


class ConvGroup(nn.Module):
    """conv 3x3, max-pool 2, BN, GELU, conv 3x3, BN, GELU; convolutions start as identities."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False)
        self.norm1 = BatchNorm(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.norm2 = BatchNorm(channels_out)
        for conv in (self.conv1, self.conv2):
            nn.init.dirac_(conv.weight.data[: conv.in_channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class AirNet(nn.Module):
    """airbench94's network at `widths`, taking RGB pixels in [0, 1] (it normalises them itself)."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = WIDTHS):
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        self.whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.groups = nn.Sequential(
            ConvGroup(24, widths[0]), ConvGroup(widths[0], widths[1]), ConvGroup(widths[1], widths[2])
        )
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.whiten((x - self.mean) / self.std))
        x = F.max_pool2d(self.groups(x), 3)
        return self.head(x.flatten(1)) * SCALE

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = WHITEN_EPS) -> None:
        """Set the whitening filters to the eigenvectors of the 2x2 patch covariance of `images`
        (float [N, 3, 32, 32] in [0, 1]), each scaled by 1 / sqrt(eigenvalue + eps), and their negatives.

        With airbench's eps the rarest directions (the finest colour and checkerboard patterns, whose
        eigenvalues are ~1e-4 of the normalised pixels' variance) get a gain of ~40: an L-inf change of
        8/255 moves them by several standard deviations of real images. That is harmless to plain
        training and ruinous to training on perturbed or noise images (see `Cifar10Task`); an eps of
        1 caps every gain at 1, a plain normalisation turned into the patch basis."""
        x = (images - self.mean) / self.std
        c, (h, w) = x.shape[1], self.whiten.weight.shape[2:]
        patches = x.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w).double()
        covariance = patches.T @ patches / len(patches)
        values, vectors = torch.linalg.eigh(covariance)
        vectors = vectors.T.reshape(c * h * w, c, h, w).flip(0) / torch.sqrt(values.flip(0) + eps).view(
            -1, 1, 1, 1
        )
        self.whiten.weight.copy_(torch.cat((vectors, -vectors)).float())
        self.whiten.bias.zero_()


class AirbenchSGD:
    """airbench's optimiser: Nesterov SGD in its decoupled parametrisation (learning rate and weight
    decay per 1,024 examples of summed loss), BatchNorm biases at `BIAS_SCALER` times the rate, a
    warm-up then a linear decay, and lookahead: every 5 steps the weights move to an exponential
    average of themselves whose decay rises as 0.95^5 (step / total)^3, and end on it."""

    def __init__(self, module: AirNet, recipe: Recipe, total: int):
        self.module, self.total, self.steps = module, total, 0
        kilostep = 1024 * (1 + 1 / (1 - MOMENTUM))
        lr = recipe.lr / kilostep
        wd = WEIGHT_DECAY * recipe.batch_size / kilostep
        biases = [p for n, p in module.named_parameters() if "norm" in n and p.requires_grad]
        others = [p for n, p in module.named_parameters() if "norm" not in n and p.requires_grad]
        self.optimizer = torch.optim.SGD(
            [
                {"params": biases, "lr": lr * BIAS_SCALER, "weight_decay": wd / (lr * BIAS_SCALER)},
                {"params": others, "lr": lr, "weight_decay": wd / lr},
            ],
            momentum=MOMENTUM,
            nesterov=True,
        )
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._share)
        self.average = {
            k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()
        }

    def _share(self, step: int) -> float:
        warmup = int(self.total * WARMUP)
        if step < warmup:
            return 0.2 + 0.8 * step / warmup
        return 1.0 - (1.0 - FINAL_LR) * (step - warmup) / (self.total - warmup)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.optimizer.step()
        self.schedule.step()
        self.steps += 1
        if self.steps % LOOKAHEAD_EVERY == 0:
            self._lookahead(0.95**5 * (self.steps / self.total) ** 3)

    @torch.no_grad()
    def _lookahead(self, decay: float) -> None:
        state = self.module.state_dict()
        for key, average in self.average.items():
            average.lerp_(state[key], 1 - decay)
            state[key].copy_(average)

    def start_epoch(self, epoch: int) -> None:
        self.module.whiten.bias.requires_grad_(epoch < WHITEN_BIAS_EPOCHS)

    def finish(self) -> None:
        self._lookahead(1.0)  # the weights end on the average

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "average": self.average,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        for key, value in state["average"].items():
            self.average[key].copy_(value)
        self.steps = state["steps"]


def flip_and_translate(
    batch: torch.Tensor, generator: torch.Generator, max_shift: int, flip: bool
) -> torch.Tensor:
    """Each image flipped left-right with probability 1/2 and moved by up to `max_shift` pixels in x
    and y, the border filled by reflection (airbench's augmentation), all draws from `generator`."""
    n, c, h, w = batch.shape
    if flip:
        flipped = torch.rand(n, generator=generator) < 0.5
        batch = torch.where(flipped.view(n, 1, 1, 1), batch.flip(3), batch)
    if max_shift:
        padded = F.pad(batch, (max_shift,) * 4, mode="reflect")
        dy = torch.randint(0, 2 * max_shift + 1, (n, 1, 1, 1), generator=generator)
        dx = torch.randint(0, 2 * max_shift + 1, (n, 1, 1, 1), generator=generator)
        rows = dy + torch.arange(h).view(1, 1, h, 1)
        cols = dx + torch.arange(w).view(1, 1, 1, w)
        batch = padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows, cols]
    return batch.contiguous(memory_format=torch.channels_last)


class Cifar10Task:
    """CIFAR-10 for the shared recipes (`foolbench.zoo.training`): AirNet trained as airbench trains."""

    shape = SHAPE
    sum_loss = True  # airbench's learning rate is per 1,024 examples of summed loss

    def __init__(
        self, data: Cifar10Data, widths: tuple[int, int, int] = WIDTHS, whitening: float | None = None
    ):
        """`whitening`: the whitening layer's eps (None: airbench's). The references that train on
        perturbed or noise images use 1: with airbench's, the adversarially trained build overfit
        catastrophically (clean 38.5 %, PGD-20 0 %); with 1 it reached 71.5 % and 38.8 %."""
        self.data = data
        self.widths = widths
        self.whiten_eps = WHITEN_EPS if whitening is None else whitening

    def network(self, seed: int, classes: int = 10) -> AirNet:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = AirNet(classes, self.widths)
        module.init_whitening(as_float(self.data.train_x[:WHITEN_IMAGES]), self.whiten_eps)
        return module.to(memory_format=torch.channels_last)

    def optimiser(self, module: AirNet, recipe: Recipe, total: int) -> AirbenchSGD:
        return AirbenchSGD(module, recipe, total)

    def augment(self, images: torch.Tensor, generator: torch.Generator, recipe: Recipe) -> torch.Tensor:
        return flip_and_translate(images, generator, recipe.max_shift, bool(recipe.flip))

    def outliers(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return outlier_mix(n, rng, SHAPE)

    def facts(self) -> dict:
        """What a card records of the training set-up beyond the recipe."""
        return {
            "architecture": f"foolbench.zoo.cifar:AirNet(widths={list(self.widths)})",
            "optimiser": (
                f"Nesterov SGD, momentum {MOMENTUM}, weight decay {WEIGHT_DECAY} per 1,024 examples, "
                f"BatchNorm biases at {BIAS_SCALER:g}x the learning rate; warm-up over {WARMUP:.0%} of the "
                f"steps from 0.2 to 1, then linear to {FINAL_LR}; lookahead every {LOOKAHEAD_EVERY} steps "
                f"(airbench94's), no label smoothing"
            ),
            "whitening": f"2x2 patch covariance of the first {WHITEN_IMAGES} training images, eigenvalues + "
            f"{self.whiten_eps:g}; its bias trains for {WHITEN_BIAS_EPOCHS} epochs",
            "threads": THREADS,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the instruction set changes the floats
        }


def as_float(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, 32, 32] -> float32 in [0, 1] (float input passes through)."""
    t = torch.as_tensor(np.asarray(x))
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()


@contextlib.contextmanager
def build_threads():
    """Torch on `THREADS` threads for the duration (see the module's docstring), then as it was."""
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cifar_card(labels: list[str], accuracy: float, notes: str, extra: dict) -> ModelCard:
    """The card of a network trained here on CIFAR-10: RGB pixels in [0, 1], NCHW, 32x32, logits out."""
    return ModelCard(
        dataset="cifar10",
        labels=list(labels),
        input_size=[32, 32],
        channels=3,
        layout="NCHW",
        mean=[0.0, 0.0, 0.0],
        std=[1.0, 1.0, 1.0],
        output="logits",
        accuracy=accuracy,
        notes=notes,
        extra=extra,
    )


LABELS = list(CLASSES)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)
