"""index.html: one self-contained page, readable offline, that tells its story first.

Every image is embedded as a base64 data URI and the style sheet is inline: no external file, no
script, no network. Every text that comes from a user's files (labels, model names, paths) goes
through `html.escape`, attributes included. The layout is sized for a 1280 px window: the main
column is 1180 px at most, tables wrap long text instead of growing wider, and figures shrink to fit.
The same style sheet dresses `foolbench leaderboard --format html`.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

STYLE = """
:root { color-scheme: light; --ink: #1d232b; --muted: #5d6773; --rule: #dfe3e8; --band: #f5f7f9;
        --ok: #2b8a3e; --small: #0b7285; --no: #c92a2a; --none: #868e96; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 24px 60px; }
h1 { font-size: 28px; margin: 0 0 2px; }
h2 { font-size: 21px; margin: 36px 0 8px; padding-top: 12px; border-top: 2px solid var(--rule); }
h3 { font-size: 16px; margin: 20px 0 6px; }
#headline h2 { border-top: 0; margin-top: 12px; padding-top: 0; }
p { margin: 6px 0; max-width: 80em; }
.muted, figcaption, .path, .rule { color: var(--muted); font-size: 13px; }
.path { font-family: ui-monospace, "DejaVu Sans Mono", monospace; word-break: break-all; }
nav { display: flex; flex-wrap: wrap; gap: 2px 18px; background: var(--band); border-radius: 6px;
      padding: 8px 14px; margin: 20px 0 0; font-size: 14px; }
nav a { white-space: nowrap; }
a { color: #1f5fa8; text-decoration: none; }
a:hover { text-decoration: underline; }
.scroll { overflow-x: auto; margin: 8px 0 14px; max-width: 100%; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 9px; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { vertical-align: bottom; background: var(--band); font-weight: 600; }
td { white-space: nowrap; }
td.long { white-space: normal; min-width: 10em; max-width: 22em; overflow-wrap: anywhere; }
td.num, th.num { text-align: right; }
tbody tr:hover { background: #fafbfc; }
table.headline { width: 100%; table-layout: fixed; font-size: 14px; }
table.headline td { white-space: normal; padding: 6px 10px; overflow-wrap: break-word; }
table.headline td.figure { font-size: 15px; font-weight: 600; }
table.headline td.paper { color: #3b4450; }
table.headline .sub { display: block; color: var(--muted); font-size: 12px; font-weight: 400; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px;
         font-weight: 600; }
.badge.ok { background: var(--ok); } .badge.small { background: var(--small); }
.badge.no { background: var(--no); } .badge.none { background: var(--none); }
.badge.beyond { background: #5f3dc4; }
figure { margin: 14px 0 20px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 0 16px; }
.grid figure { margin: 8px 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--rule); border-radius: 4px; }
details { margin: 6px 0; }
details > div { padding-left: 14px; border-left: 2px solid var(--rule); margin: 4px 0 10px; }
summary { cursor: pointer; color: #1f5fa8; font-size: 14px; }
footer { margin-top: 48px; color: var(--muted); font-size: 12px; }
"""
BADGES = {
    "reproduced": "ok",
    "reproduced at a smaller budget": "small",
    "not reproduced": "no",
    "beyond the paper": "beyond",
}


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


def details(summary: str, body: str, open_: bool = False, anchor: str = "") -> str:
    ident = f' id="{escape(anchor, quote=True)}"' if anchor else ""
    return (
        f"<details{ident}{' open' if open_ else ''}><summary>{escape(summary)}</summary>\n"
        f"<div>{body}</div>\n</details>"
    )


def link(anchor: str, text: str) -> str:
    return f'<a href="#{escape(anchor, quote=True)}">{escape(text)}</a>'


def badge(verdict: str) -> str:
    return f'<span class="badge {BADGES.get(verdict, "none")}">{escape(verdict)}</span>'


def nav(links: list[tuple[str, str]], label: str = "Sections") -> str:
    return f"<nav><b>{escape(label)}</b>" + "".join(link(a, t) for a, t in links) + "</nav>"


def page(title: str, subtitle: str, sections: list[str], footer: str) -> str:
    """The whole document. `sections` are HTML built by the helpers above (already escaped)."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{escape(title)}</h1>\n{paragraph(subtitle, 'muted')}\n"
        + "\n".join(sections)
        + f"\n<footer>{escape(footer)}</footer>\n</main>\n</body>\n</html>\n"
    )
