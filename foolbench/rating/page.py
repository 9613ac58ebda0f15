"""The rating page: one HTML file (`page.html`, package data) for both ways of rating.

The page's script reads a JSON configuration embedded in it: served by `foolbench rate` it fetches
the images from the local server and posts each answer there; written by `foolbench rate --static`
it carries every image inside itself (data URIs), keeps answers in the browser's storage and
downloads them as a CSV with ratings.csv's columns. Labels reach the page only as JSON data and
enter it only as text (`textContent`), never as HTML.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import json
import re
from pathlib import Path

from foolbench.errors import FoolbenchError
from foolbench.fileio import write_text
from foolbench.rating.deck import NONE, Deck
from foolbench.rating.store import COLUMNS

PLACEHOLDER = "__CONFIG__"


def template() -> str:
    return importlib.resources.files("foolbench.rating").joinpath("page.html").read_text(encoding="utf-8")


def render(config: dict) -> str:
    """The page with `config` embedded as JSON that cannot end its script element, allowed to run its
    own script only (a Content-Security-Policy naming that script's hash), wherever it is opened."""
    text = json.dumps(config, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    policy = (
        f"default-src 'none'; script-src '{script_hash()}'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'"
    )
    return template().replace("__POLICY__", policy).replace(PLACEHOLDER, text)


def script_hash() -> str:
    """The CSP hash of the page's one executable script, so the server can allow that script only."""
    body = re.search(r"<script>(.*?)</script>", template(), flags=re.S).group(1)
    return "sha256-" + base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode()


def deck_id(deck: Deck) -> str:
    """Names the deck in the browser's storage and seeds each rater's order."""
    return hashlib.sha256("\n".join(sorted(i.id for i in deck.items)).encode()).hexdigest()[:16]


def server_config(deck: Deck, token: str) -> dict:
    return {
        "mode": "server",
        "token": token,
        "none": NONE,
        "count": len(deck.items),
        "deck_id": deck_id(deck),
    }


def static_config(deck: Deck) -> dict:
    items = [
        {
            "id": item.id,
            "src": "data:image/png;base64," + base64.b64encode(item.png).decode("ascii"),
            "options": item.options,
            "record": item.record(),
        }
        for item in deck.items
    ]
    return {
        "mode": "static",
        "none": NONE,
        "count": len(items),
        "deck_id": deck_id(deck),
        "columns": COLUMNS,
        "items": items,
    }


def write_static(deck: Deck, path: str | Path) -> Path:
    """One self-contained page (no server, no network) that rates `deck` in any browser."""
    path = Path(path)
    if path.is_dir():
        raise FoolbenchError(
            f"--static {path} is a folder; name the HTML file to write, e.g. {path}/rate.html"
        )
    write_text(path, render(static_config(deck)))
    return path
