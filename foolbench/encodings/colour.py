"""Colour conversion shared by the encodings.

The paper's released code reads a 3-gene pixel (direct encoding) or the 3 CPPN outputs as H, L, S
and converts them to RGB with OpenCV before the network sees them. We convert with the formulas of
Python's `colorsys.hls_to_rgb`, vectorised over whole image batches.
"""

import numpy as np
import torch

# Pixels converted per block: small enough that a block's planes and temporaries stay in the CPU's
# cache between the passes, large enough that torch's per-op cost is negligible.
PIXELS_PER_BLOCK = 2**18
# Where each channel's hue ramp peaks: red at hue 0 (and 1), green at 1/3, blue at 2/3.
_CENTRES = (0.5, 1.0 / 3.0, 2.0 / 3.0)  # red's is the centre of the wrap-around: see `_convert`


def hls_to_rgb(hls: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Convert images `[B, 3, H, W]` (channels H, L, S, all in [0, 1]) to RGB `[B, 3, H, W]` float32.

    Equals `colorsys.hls_to_rgb` per pixel (to float32 rounding). Runs in torch over blocks of
    pixels because a batch of 400 ImageNet-sized images through plain numpy temporaries costs
    seconds, more than the CPPNs. `out` (float32, C-contiguous, may be `hls` itself) receives the
    result, sparing a large allocation.
    """
    if hls.ndim != 4 or hls.shape[1] != 3:
        raise ValueError(f"hls_to_rgb expects [B, 3, H, W], got shape {hls.shape}")
    source = torch.from_numpy(np.ascontiguousarray(hls, dtype=np.float32))
    rgb = torch.empty_like(source) if out is None else torch.from_numpy(out)
    if source.numel() == 0:
        return rgb.numpy()
    in_place = out is not None and np.may_share_memory(out, hls)  # a bounds check; exactness not needed
    flat_src = source.view(len(source), 3, -1)
    flat_rgb = rgb.view(len(rgb), 3, -1)
    pixels = flat_src.shape[2]
    images = max(1, PIXELS_PER_BLOCK // max(pixels, 1))
    columns = min(pixels, PIXELS_PER_BLOCK) or 1
    for start in range(0, len(source), images):
        for col in range(0, pixels, columns):
            block = (slice(start, start + images), slice(None), slice(col, col + columns))
            _convert(flat_src[block], flat_rgb[block], in_place)
    return rgb.numpy()


def _convert(hls: torch.Tensor, rgb: torch.Tensor, in_place: bool) -> None:
    """colorsys's formulas on a block `[b, 3, n]`, rewritten to need fewer passes over the pixels.

    colorsys: m2 = l (1 + s) if l <= 0.5 else l + s - l s, m1 = 2 l - m2, and each channel is
    m1 + (m2 - m1) ramp(hue + offset), the ramp rising over 1/6 of the hue circle, flat at 1 over
    1/3, falling over 1/6, 0 elsewhere. With c = s min(l, 1 - l) that is m2 = l + c, m1 = l - c and
    channel = l + c (2 ramp - 1), where 2 ramp - 1 = clip(3 - 12 d, -1, 1) and d is the distance
    of the hue to the channel's peak (0, 1/3, 2/3) around the circle. For red, the distance to
    0 or 1 is 1/2 - |hue - 1/2|; for green and blue the plain |hue - peak| gives the same clipped
    value, as a distance that wraps around is >= 1/3 either way.
    """
    hue, light, sat = hls[:, 0], hls[:, 1], hls[:, 2]
    half_chroma = torch.minimum(light, 1.0 - light).mul_(sat)
    if in_place:  # the blue and green results overwrite saturation and lightness, then red the hue
        light = light.clone()
    for channel in (2, 1, 0):
        ramp = torch.sub(hue, _CENTRES[channel]).abs_()
        if channel == 0:  # 3 - 12 (1/2 - |hue - 1/2|)
            ramp.mul_(12.0).sub_(3.0)
        else:
            ramp = torch.rsub(ramp, 3.0, alpha=12.0)
        torch.addcmul(light, half_chroma, ramp.clamp_(-1.0, 1.0), out=rgb[:, channel])
