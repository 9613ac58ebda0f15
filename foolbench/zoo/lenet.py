"""The paper's MNIST networks and the one training loop they share.

`LeNet` is Caffe's LeNet, the network the paper fools. `MLP` is a second architecture for the
transfer experiment. `train_classifier` is generic over the number of classes and takes plain
arrays, so the retraining defence can reuse it with an extra "fooling image" class.

Training is deterministic for a seed on a given machine: initialisation draws from
`torch.manual_seed(seed)` (see `seeded`) and shuffling and augmentation from their own generator.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class LeNet(nn.Module):
    """Caffe's LeNet: conv 20@5x5, max-pool 2, conv 50@5x5, max-pool 2, fc 500, ReLU, fc K (28x28 input)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class MLP(nn.Module):
    """A fully connected 784-512-512-K ReLU network: same task as LeNet, different architecture."""

    def __init__(self, num_classes: int = 10, in_features: int = 28 * 28, hidden: int = 512):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


def seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """`factory()` with its initial weights drawn from `seed`, leaving the global RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def as_images(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W] digits or float [N, H, W] / [N, C, H, W] in [0, 1] -> float32 [N, C, H, W] in [0, 1]."""
    t = torch.as_tensor(np.asarray(x))
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    return t.unsqueeze(1) if t.ndim == 3 else t


def random_shift(batch: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Each image moved by up to `max_shift` pixels in x and y, zero filled: cheap MNIST augmentation."""
    n, c, h, w = batch.shape
    padded = F.pad(batch, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n, 1, 1, 1), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n, 1, 1, 1), generator=generator)
    rows = dy + torch.arange(h).view(1, 1, h, 1)
    cols = dx + torch.arange(w).view(1, 1, 1, w)
    return padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows, cols]


def train_classifier(
    module: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    seed: int = 0,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 3e-3,
    max_shift: int = 2,
    progress: bool = False,
) -> dict:
    """Train `module` in place with Adam and a one-cycle learning rate; returns facts for the model card.

    `x` as for `as_images`, `y` int class indices (any number of classes the module outputs).
    Random shifts of up to `max_shift` pixels (0: none) let 4,000 digits reach LeNet's >= 97%.
    """
    images, labels = as_images(x), torch.as_tensor(np.asarray(y), dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch)
    module.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for i in range(0, len(images), batch_size):
            batch = order[i : i + batch_size]
            inputs = random_shift(images[batch], generator, max_shift) if max_shift else images[batch]
            loss = F.cross_entropy(module(inputs), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        if progress:
            print(
                f"  epoch {epoch + 1}/{epochs}: loss {total / len(images):.4f}", file=sys.stderr, flush=True
            )
    module.eval()
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": f"Adam, one-cycle lr peaking at {lr}",
        "augmentation": f"random shifts of up to {max_shift} px" if max_shift else "none",
        "train_size": len(images),
        "final_loss": round(total / len(images), 6),
        "train_seconds": round(time.perf_counter() - start, 1),
    }


@torch.no_grad()
def predict_logits(module: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    module.eval()
    images = as_images(x)
    return torch.cat([module(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def accuracy(module: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Top-1 accuracy of `module` on the given images and labels."""
    predicted = predict_logits(module, x).argmax(1).numpy()
    return float((predicted == np.asarray(y)).mean())
