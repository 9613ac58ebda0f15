"""index.html: one self-contained page, readable offline.

Every image is embedded as a base64 data URI and the style sheet is inline: no external file, no
script, no network. Every text that comes from a user's files (labels, model names, paths) goes
through `html.escape`, attributes included.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

STYLE = """
:root { color-scheme: light; --ink: #1d232b; --muted: #5d6773; --rule: #dfe3e8; --band: #f5f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1060px; margin: 0 auto; padding: 28px 24px 60px; }
h1 { font-size: 28px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 40px 0 8px; padding-top: 12px; border-top: 2px solid var(--rule); }
h3 { font-size: 16px; margin: 22px 0 6px; }
p { margin: 6px 0; }
.muted, figcaption, .path { color: var(--muted); font-size: 13px; }
.path { font-family: ui-monospace, "DejaVu Sans Mono", monospace; word-break: break-all; }
nav { display: flex; flex-wrap: wrap; gap: 4px 18px; background: var(--band); border-radius: 6px;
      padding: 10px 14px; margin: 16px 0; font-size: 14px; }
a { color: #1f5fa8; text-decoration: none; }
a:hover { text-decoration: underline; }
.scroll { overflow-x: auto; margin: 8px 0 14px; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 9px; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { vertical-align: bottom; }
th { background: var(--band); font-weight: 600; min-width: 4em; }
td { white-space: nowrap; }
td.long { white-space: normal; min-width: 11em; max-width: 20em; overflow-wrap: anywhere; }
td.num, th.num { text-align: right; }
tbody tr:hover { background: #fafbfc; }
figure { margin: 14px 0 20px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 0 16px; }
.grid figure { margin: 8px 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--rule); border-radius: 4px; }
img.pixels { image-rendering: pixelated; }
details { margin: 8px 0; }
summary { cursor: pointer; color: #1f5fa8; font-size: 14px; }
footer { margin-top: 48px; color: var(--muted); font-size: 12px; }
"""


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def figure(png: Path, alt: str, caption: str = "") -> str:
    """An embedded PNG; alt and caption are escaped."""
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return (
        f'<figure><img src="{data_uri(png)}" alt="{escape(alt, quote=True)}" '
        f'title="{escape(alt, quote=True)}">{cap}</figure>'
    )


def grid(figures: list[str]) -> str:
    """Figures side by side where the page is wide enough (transfer heatmaps)."""
    return '<div class="grid">' + "".join(figures) + "</div>"


def section(anchor: str, heading: str, body: str, level: int = 2) -> str:
    return f'<section id="{escape(anchor, quote=True)}">\n<h{level}>{escape(heading)}</h{level}>\n{body}\n</section>'


def paragraph(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{escape(text)}</p>' if cls else f"<p>{escape(text)}</p>"


def details(summary: str, body: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{escape(summary)}</summary>\n{body}\n</details>"


def page(title: str, subtitle: str, nav: list[tuple[str, str]], sections: list[str], footer: str) -> str:
    """The whole document. `sections` are HTML built by the helpers above (already escaped)."""
    links = "".join(f'<a href="#{escape(a, quote=True)}">{escape(t)}</a>' for a, t in nav)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{escape(title)}</h1>\n{paragraph(subtitle, 'muted')}\n"
        + (f"<nav>{links}</nav>\n" if links else "")
        + "\n".join(sections)
        + f"\n<footer>{escape(footer)}</footer>\n</main>\n</body>\n</html>\n"
    )
