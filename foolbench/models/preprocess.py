"""Turn foolbench's canonical images into what a particular model wants.

Canonical images are float32 NCHW in [0,1] at the attack's own resolution. The model card says the
rest: channel count, input size, an optional resize of the shorter side followed by a centre crop
or the ten-crop of the paper's Caffe code, mean/std and NCHW vs NHWC. Everything is written in
torch so the very same code is differentiable for gradient ascent.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# ITU-R 601 luma weights: how a colour image becomes grey for a one-channel model.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class InputSpec:
    """The input a model's graph takes, as the adapter understood it."""

    channels: int
    size: tuple[int, int]  # (H, W)
    layout: str = "NCHW"
    flat: bool = False  # the graph takes [B, C*H*W] rows rather than images
    fixed_batch: int | None = None  # the graph only accepts this batch size
    resize: int | None = None
    crop: str = "center"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def views(self) -> int:
        """How many model inputs one image becomes: 10 with ten-crop, which needs a `resize` to crop
        from; a model without one is fed the whole image, resized to its input (one view)."""
        return 10 if self.crop == "ten" and self.resize is not None else 1

    def is_identity_for(self, shape: tuple[int, ...]) -> bool:
        """True when images of `shape` go into the model untouched (the fast path)."""
        return (
            shape[1] == self.channels
            and tuple(shape[2:]) == self.size
            and self.layout == "NCHW"
            and not self.flat
            and self.views == 1
            and _is_noop(self.mean, 0.0)
            and _is_noop(self.std, 1.0)
        )


def _is_noop(values, neutral: float) -> bool:
    return values is None or all(v == neutral for v in values)


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey images are repeated to colour; colour images become grey by luma."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1:
        return x.expand(-1, channels, -1, -1)
    if c == 3 and channels == 1:
        w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    raise ValueError(f"cannot turn {c}-channel images into {channels}-channel input")


def resize(x: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of [B, C, H, W] to `size` (half-pixel centres; `antialias` widens the kernel
    when shrinking).

    On the CPU this is `F.interpolate`. Elsewhere it is the same resize written as two products with
    fixed interpolation matrices: `F.interpolate`'s backward pass on CUDA adds into the gradient with
    atomics, in an order that changes from run to run, where a matrix product's does not. The two
    agree to a float32 rounding (tested), and on the CPU nothing changes.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[2:]) == size:
        return x
    if x.device.type == "cpu":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    return resize_by_matrices(x, size, antialias)


def resize_by_matrices(x: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """`resize` as rows @ x @ cols^T, with the interpolation weights `F.interpolate` itself uses."""
    rows = interpolation_matrix(x.shape[2], size[0], antialias).to(x.device, x.dtype)
    cols = interpolation_matrix(x.shape[3], size[1], antialias).to(x.device, x.dtype)
    return torch.matmul(torch.matmul(rows, x), cols.T)


@functools.cache
def interpolation_matrix(n_in: int, n_out: int, antialias: bool) -> torch.Tensor:
    """[n_out, n_in]: the weights of a 1-D bilinear resize from n_in to n_out samples, read off
    `F.interpolate` by resizing each unit vector (it resizes the two axes separately). The unit
    vectors are two pixels wide: with antialias, F.interpolate mishandles an axis of size 1."""
    units = torch.eye(n_in, dtype=torch.float32).reshape(n_in, 1, n_in, 1).expand(-1, -1, -1, 2)
    out = F.interpolate(
        units.contiguous(), size=(n_out, 2), mode="bilinear", align_corners=False, antialias=antialias
    )
    return out[:, 0, :, 0].T.contiguous()


def resize_and_crop(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Bring images to the model's size; with ten-crop, B images become B*10 views (image-major)."""
    h, w = spec.size
    if spec.resize is None:
        return resize(x, (h, w))
    short = min(x.shape[2:])
    if short != spec.resize:
        scale = spec.resize / short
        new = (max(h, round(x.shape[2] * scale)), max(w, round(x.shape[3] * scale)))
        x = resize(x, new)
    H, W = x.shape[2:]
    if spec.crop == "ten":
        return ten_crop(x, h, w)
    top, left = (H - h) // 2, (W - w) // 2
    return x[:, :, top : top + h, left : left + w]


def ten_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """4 corners + centre, each also mirrored, as Caffe's oversample: [B*10, C, h, w]."""
    H, W = x.shape[2:]
    corners = [(0, 0), (0, W - w), (H - h, 0), (H - h, W - w), ((H - h) // 2, (W - w) // 2)]
    crops = [x[:, :, t : t + h, left : left + w] for t, left in corners]
    crops += [c.flip(3) for c in crops]
    return torch.stack(crops, 1).reshape(-1, x.shape[1], h, w)


def normalise(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """(x - mean) / std per channel with one new tensor (the division runs in place on it)."""
    mean = None if _is_noop(spec.mean, 0.0) else spec.mean
    std = None if _is_noop(spec.std, 1.0) else spec.std
    as_x = {"dtype": x.dtype, "device": x.device}
    if mean is not None:
        x = torch.sub(x, torch.tensor(mean, **as_x).view(1, -1, 1, 1))
    if std is not None:
        divisor = torch.tensor(std, **as_x).view(1, -1, 1, 1)
        x = x.div_(divisor) if mean is not None else torch.div(x, divisor)
    return x


def to_layout(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    if spec.flat:
        return x.reshape(x.shape[0], -1)
    if spec.layout == "NHWC":
        return x.permute(0, 2, 3, 1).contiguous()
    return x


def preprocess(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Canonical images [B,C,H,W] in [0,1] -> the model's input tensor (B*views rows)."""
    x = match_channels(x, spec.channels)
    x = resize_and_crop(x, spec)
    x = normalise(x, spec)
    return to_layout(x, spec)
