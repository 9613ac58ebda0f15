"""A fixed-topology CPPN: one network shape for the whole population, so it renders as batched matrices.

The paper's CPPNs grow their topology by mutation (`encodings/cppn.py`); this one is a plain
multi-layer perceptron of the pixel coordinates, the "rich" random CPPN that gives the patch search
(`search/patch.py`) its start images: textured colour fields the model already half-believes, which
painted squares then build on (from flat grey or stripes the same search stays near 10 %). The same
code renders with gradients when given tensors that require them (Mordvintsev et al.,
"Differentiable Image Parameterizations", Distill 2018).

Genome (population on axis 0), float32:
  w0 [P, 4, H], b0 [P, H]                  inputs x, y, d, 1 (each times `INPUT_SCALE`) -> hidden 1
  w1 [P, H, H], b1 [P, H]; w2 [P, H, H], b2 [P, H]   hidden layers 2 and 3
  wo [P, H, 3], bo [P, 3]                  -> RGB through a sigmoid
The hidden units of every layer form 4 equal blocks: sin, tanh, Gaussian exp(-h^2), |h| - 1.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from foolbench.models.preprocess import resize

INPUT_SCALE = 3.0  # x and y span [-3, 3]: a few periods of the sine units across the image
GAIN = (
    2.0  # weight scale (measured: gain 1 starts from smoother images and reaches 25 % where 2 reaches 87 %)
)
RENDER_CHUNK = 25  # genomes per batched render, for memory (P x H x pixels floats per layer)


def init(n: int, rng: np.random.Generator, hidden: int = 16, gain: float = GAIN) -> dict[str, np.ndarray]:
    """`n` random genomes: weights N(0, (2 gain / sqrt(fan_in))^2), hidden biases N(0, 1/4)."""

    def normal(shape, fan_in, scale):
        return (rng.standard_normal(shape) * (scale / np.sqrt(fan_in))).astype(np.float32)

    return {
        "w0": normal((n, 4, hidden), 4, gain * 2.0),
        "b0": np.zeros((n, hidden), np.float32),
        "w1": normal((n, hidden, hidden), hidden, gain * 2.0),
        "b1": normal((n, hidden), 1, 0.5),
        "w2": normal((n, hidden, hidden), hidden, gain * 2.0),
        "b2": normal((n, hidden), 1, 0.5),
        "wo": normal((n, hidden, 3), hidden, 2.0),
        "bo": np.zeros((n, 3), np.float32),
    }


def planes(res: int, device=None) -> torch.Tensor:
    """[4, res*res] on `device` (default the CPU): the inputs x, y, d (distance from the centre), 1,
    each times INPUT_SCALE. Computed on the CPU and copied, so every device draws from the same
    numbers."""
    if device is None or torch.device(device).type == "cpu":
        return _cpu_planes(res)
    return _planes_on(res, torch.device(device))


@functools.cache
def _cpu_planes(res: int) -> torch.Tensor:
    t = torch.linspace(-1.0, 1.0, res)
    gy, gx = torch.meshgrid(t, t, indexing="ij")
    d = torch.sqrt(gx**2 + gy**2)
    return (torch.stack([gx, gy, d, torch.ones_like(d)]).reshape(4, -1) * INPUT_SCALE).contiguous()


@functools.cache
def _planes_on(res: int, device: torch.device) -> torch.Tensor:
    return _cpu_planes(res).to(device)


def _activate(h: torch.Tensor) -> torch.Tensor:
    """h [P, units, pixels], units in 4 contiguous blocks: sin, tanh, exp(-h^2), |h| - 1."""
    a, b, c, d = torch.chunk(h, 4, dim=1)
    return torch.cat([torch.sin(a), torch.tanh(b), torch.exp(-c * c), d.abs() - 1.0], 1)


def draw(genome: dict[str, torch.Tensor], res: int) -> torch.Tensor:
    """[P, 3, res, res] in (0, 1) from torch tensors (differentiable when they require grad)."""
    g = genome
    h = _activate(torch.einsum("pch,cn->phn", g["w0"], planes(res, g["w0"].device)) + g["b0"][:, :, None])
    h = _activate(torch.baddbmm(g["b1"][:, :, None], g["w1"].transpose(1, 2), h))
    h = _activate(torch.baddbmm(g["b2"][:, :, None], g["w2"].transpose(1, 2), h))
    out = torch.sigmoid(torch.baddbmm(g["bo"][:, :, None], g["wo"].transpose(1, 2), h))
    return out.reshape(out.shape[0], 3, res, res)


def upsample(images: torch.Tensor, res: int) -> torch.Tensor:
    """Bilinear resize to res x res: drawing at a lower resolution and resizing is 4x cheaper at
    128 -> 256 and gives the same pictures (the patterns are smooth). On a GPU a fixed-kernel
    resize, whose backward pass is deterministic (`models.preprocess.resize`)."""
    return resize(images, (res, res), antialias=False)


def render(genome: dict[str, np.ndarray], res: int, draw_res: int) -> np.ndarray:
    """float32 [P, 3, res, res] in [0, 1]: drawn at `draw_res`, resized to `res`, in chunks."""
    n = len(genome["w0"])
    out = np.empty((n, 3, res, res), np.float32)
    with torch.no_grad():
        for s in range(0, n, RENDER_CHUNK):
            part = {
                k: torch.from_numpy(np.ascontiguousarray(v[s : s + RENDER_CHUNK])) for k, v in genome.items()
            }
            out[s : s + RENDER_CHUNK] = upsample(draw(part, draw_res), res).numpy()
    return out
