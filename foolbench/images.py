"""The 8-bit image: what is scored is exactly what is saved.

Every confidence foolbench reports is that of an image as a PNG stores it, 8 bits per channel. This
module decides that rounding once: `quantise` (float images rounded to the 8-bit grid, for
scoring), `as_uint8` and `to_uint8` (the same rounding, as bytes), and the PNG files themselves
(`save_png`, `load_png`). Images are float32 `[C, H, W]` (one) or `[B, C, H, W]` (a batch) in [0, 1].
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from foolbench.errors import FoolbenchError
from foolbench.fileio import atomic_path

# Batches with more values than this are quantised by torch on all cores; smaller ones by numpy,
# whose single thread leaves nothing spinning when the model's threads start on the batch.
TORCH_QUANTISE_VALUES = 2**20


def quantise(images: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Round to the 8-bit values a PNG stores, so what is scored is exactly what is saved.

    float32 `round(x * 255) / 255`, halves to even (numpy's `rint`, torch's `round`: the same
    values). `in_place` reuses a float32 batch the caller owns, such as a fresh render.
    """
    images = np.asarray(images)
    own = in_place and images.dtype == np.float32 and images.flags.c_contiguous
    if images.size <= TORCH_QUANTISE_VALUES:
        out = images if own else np.empty(images.shape, dtype=np.float32)
        np.multiply(images, np.float32(255.0), out=out, dtype=np.float32)
        np.rint(out, out=out)
        out /= np.float32(255.0)
        return out
    import torch

    source = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    out = source if own else torch.empty_like(source)
    torch.mul(source, 255.0, out=out).round_().div_(255.0)
    return out.numpy()


def as_uint8(images: np.ndarray) -> np.ndarray:
    """The 8-bit values of float images in [0, 1], same shape, rounded as `quantise` rounds."""
    return np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """One image [C,H,W] float in [0,1] -> [H,W] or [H,W,3] uint8 (Pillow's layout)."""
    arr = as_uint8(image)
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write one image [C,H,W] as an 8-bit PNG (grey for 1 channel, RGB for 3), atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format="PNG")


def load_png(path: str | os.PathLike, channels: int) -> np.ndarray:
    """A PNG as float32 [C,H,W] in [0,1] with the given channel count."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise FoolbenchError(
            f"{path} is not a readable image ({type(e).__name__}); replace or remove the file"
        ) from None
    arr /= np.float32(255.0)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)
