"""Colour conversion shared by the encodings.

The paper's released code reads a 3-gene pixel (direct encoding) or the 3 CPPN outputs as H, L, S
and converts them to RGB with OpenCV before the network sees them. We convert with the same
formulas as Python's `colorsys.hls_to_rgb`, vectorised over whole image batches.
"""

import numpy as np
import torch

PIXELS_PER_BLOCK = 2**20


def hls_to_rgb(hls: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Convert images `[B, 3, H, W]` (channels H, L, S, all in [0, 1]) to RGB `[B, 3, H, W]` float32.

    Equals `colorsys.hls_to_rgb` per pixel. Runs in torch over blocks of images because a batch of
    400 ImageNet-sized images through plain numpy temporaries cost seconds, more than the CPPNs.
    `out` (float32, C-contiguous, may be `hls` itself) receives the result, sparing a large allocation.
    """
    if hls.ndim != 4 or hls.shape[1] != 3:
        raise ValueError(f"hls_to_rgb expects [B, 3, H, W], got shape {hls.shape}")
    source = torch.from_numpy(np.ascontiguousarray(hls, dtype=np.float32))
    rgb = torch.empty_like(source) if out is None else torch.from_numpy(out)
    step = max(1, PIXELS_PER_BLOCK // (hls.shape[2] * hls.shape[3]))
    for start in range(0, len(source), step):
        _convert(source[start : start + step], rgb[start : start + step])
    return rgb.numpy()


def _convert(hls: torch.Tensor, rgb: torch.Tensor) -> None:
    """colorsys's formulas on a block; its four-piece hue ramp is `clip(min(6 h, 4 - 6 h), 0, 1)`."""
    hue, light, sat = hls[:, 0].clone(), hls[:, 1], hls[:, 2]  # clone: `rgb` may overwrite `hls`
    m2 = torch.where(light <= 0.5, light * (1.0 + sat), light + sat - light * sat)
    m1 = 2.0 * light - m2
    m2 -= m1
    for channel, offset in enumerate((1.0 / 3.0, 0.0, -1.0 / 3.0)):
        shifted = hue + offset
        shifted -= shifted.floor()  # hue modulo 1, as colorsys
        shifted *= 6.0
        ramp = torch.minimum(shifted, 4.0 - shifted).clamp_(0.0, 1.0)
        torch.addcmul(m1, m2, ramp, out=rgb[:, channel])
