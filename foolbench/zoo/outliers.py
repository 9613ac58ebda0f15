"""Images that are no digit: what outlier exposure trains on, and what the noise figures are measured on.

Three kinds, at a model's input shape (28x28 grey for MNIST, 3x32x32 colour for CIFAR-10), in [0, 1]
and drawn from foolbench's own encodings, never evolved
against a model (evolved images are what the benchmark attacks with, so training on them would
teach to the test):
- `uniform`: the direct encoding's random genomes, i.e. uniform noise per pixel;
- `smoothed`: uniform noise blurred by a Gaussian of sigma in [1, 2.5] and rescaled to the full
  [0, 1] range, the noise of Hein et al. (CVPR 2019), on which plain MNIST networks are confident
  (in colour each channel is blurred alike and the image is rescaled as a whole);
- `cppn`: random CPPNs, mutated 0..`CPPN_ROUNDS` times from the paper's initial networks, so
  that both the plain gradients of a fresh CPPN and the stripes and blobs of grown ones appear.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from foolbench.encodings import CPPNEncoding, DirectEncoding, take

KINDS = ("uniform", "smoothed", "cppn")
SIGMA_RANGE = (1.0, 2.5)
CPPN_ROUNDS = 20
MNIST_SHAPE = (1, 28, 28)  # channels, height = width


def outlier_images(
    kind: str, n: int, rng: np.random.Generator, shape: tuple[int, int, int] = MNIST_SHAPE
) -> np.ndarray:
    """`n` images float32 [n, *shape] in [0, 1] of one kind, drawn from `rng`."""
    channels, resolution, _ = shape
    if kind == "uniform":
        return DirectEncoding(resolution=resolution, channels=channels).init(n, rng)["genes"]
    if kind == "smoothed":
        return smoothed_noise(n, rng, shape)
    if kind == "cppn":
        return random_cppn_images(n, rng, shape)
    raise ValueError(f"unknown outlier kind {kind!r}; known: {', '.join(KINDS)}")


def outlier_mix(n: int, rng: np.random.Generator, shape: tuple[int, int, int] = MNIST_SHAPE) -> np.ndarray:
    """`n` images, a third of each kind, in random order."""
    counts = np.diff(np.linspace(0, n, len(KINDS) + 1).round().astype(int))
    images = np.concatenate([outlier_images(k, c, rng, shape) for k, c in zip(KINDS, counts, strict=True)])
    return images[rng.permutation(n)]


def smoothed_noise(n: int, rng: np.random.Generator, shape: tuple[int, int, int] = MNIST_SHAPE) -> np.ndarray:
    """Uniform noise, each image blurred with its own sigma (one grouped convolution), then stretched
    so that its darkest pixel is 0 and its brightest 1."""
    c, r, _ = shape
    noise = torch.from_numpy(rng.random((n, c, r, r), dtype=np.float32))
    sigma = torch.from_numpy(rng.uniform(*SIGMA_RANGE, n).astype(np.float32))
    radius = int(np.ceil(3 * SIGMA_RANGE[1]))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
    g = g / g.sum(1, keepdim=True)
    kernels = (g[:, :, None] * g[:, None, :])[:, None]  # [n, 1, k, k]
    if c > 1:  # every channel of an image blurred by the image's kernel
        kernels = kernels.repeat_interleave(c, dim=0)
    padded = F.pad(noise.reshape(1, n * c, r, r), (radius,) * 4, mode="reflect")
    blurred = F.conv2d(padded, kernels, groups=n * c).reshape(n, c, r, r)
    low = blurred.amin((1, 2, 3), keepdim=True)
    high = blurred.amax((1, 2, 3), keepdim=True)
    return ((blurred - low) / (high - low).clamp_min(1e-12)).numpy()


def random_cppn_images(
    n: int, rng: np.random.Generator, shape: tuple[int, int, int] = MNIST_SHAPE
) -> np.ndarray:
    """Random CPPN images; genome i is rendered after i mod (CPPN_ROUNDS + 1) rounds of mutation."""
    c, r, _ = shape
    encoding = CPPNEncoding(resolution=r, channels=c)
    pop = encoding.init(n, rng)
    rounds = np.arange(n) % (CPPN_ROUNDS + 1)
    images = np.empty((n, c, r, r), dtype=np.float32)
    for r in range(CPPN_ROUNDS + 1):
        if (rounds == r).any():
            images[rounds == r] = encoding.render(take(pop, rounds == r))
        if r < CPPN_ROUNDS:
            pop = encoding.vary(pop, rng, r, in_place=True)
    return images
