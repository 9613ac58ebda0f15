"""The README's picture of a report's headline: the page's title and headline section as headless
Chromium draws them in a 1280 px window, cropped and reduced to a small palette PNG.

    python reports/screenshot.py reports/paper/index.html reports/paper/headline.png

Everything but the title and the headline is hidden by a style sheet added to a temporary copy of
the page (the page is self-contained, so the copy renders the same); nothing is fetched.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ONLY_HEADLINE = "<style>main > :not(h1):not(#headline) { display: none !important; }</style></head>"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]


def screenshot(page: Path, out: Path, width: int = 1280, colours: int = 64) -> Path:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(
            page.read_text(encoding="utf-8").replace("</head>", ONLY_HEADLINE, 1), encoding="utf-8"
        )
        shot = Path(tmp) / "shot.png"
        subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={tmp}/profile", f"--window-size={width},4000",
             f"--screenshot={shot}", copy.as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        with Image.open(shot) as img:
            image = img.convert("RGB")
    ink = np.flatnonzero((np.asarray(image).min(axis=2) < 250).any(axis=1))
    image = image.crop((0, 0, width, min(image.height, int(ink[-1]) + 24)))
    image.quantize(colours).save(out, optimize=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    print(screenshot(args.page, args.out, args.width))
