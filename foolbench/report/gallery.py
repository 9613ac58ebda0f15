"""Galleries of champion images (the PNGs themselves belong to `foolbench.images`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from foolbench.fileio import atomic_path
from foolbench.images import to_uint8


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
