"""Image files: champion PNGs (8-bit, what every reported confidence refers to) and galleries."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from foolbench.errors import FoolbenchError
from foolbench.io import atomic_path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def percent(confidence: float) -> str:
    """Confidence as a percentage rounded down, so 99.995% never shows as 100.00%."""
    return f"{math.floor(confidence * 10000) / 100:.2f}%"


def safe_name(label: str, limit: int = 40) -> str:
    """A label made fit for a file name: no path characters, no spaces, bounded length."""
    name = _UNSAFE.sub("_", label).strip("._")[:limit]
    return name or "class"


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[C,H,W] float in [0,1] -> [H,W] or [H,W,3] uint8, rounding as `quantise` does."""
    arr = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def save_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format="PNG")


def load_png(path: Path, channels: int) -> np.ndarray:
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


def gallery(
    images: list[np.ndarray], captions: list[str], path: Path, tile: int = 160, columns: int = 10
) -> None:
    """A grid of images with a two-line caption under each, like the paper's figures."""
    columns = max(1, min(columns, len(images)))
    rows = max(1, -(-len(images) // columns))
    font = ImageFont.load_default(size=12)
    cap_h = 34
    sheet = Image.new("RGB", (columns * tile, rows * (tile + cap_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x, y = (i % columns) * tile, (i // columns) * (tile + cap_h)
        pic = Image.fromarray(to_uint8(image)).convert("RGB")
        resample = Image.NEAREST if pic.width < tile // 2 else Image.BILINEAR
        sheet.paste(pic.resize((tile - 8, tile - 8), resample), (x + 4, y + 4))
        for j, line in enumerate(caption.split("\n")[:2]):
            draw.text(
                (x + 4, y + tile + 2 + 15 * j), _fit(draw, line, font, tile - 8), fill="black", font=font
            )
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Shorten a caption line with an ellipsis until it fits the tile."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
