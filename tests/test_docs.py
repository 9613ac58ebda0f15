"""The repository is self-contained: the design notes and the paper's settings that the README and
tests cite are in docs/, and nothing points at folders outside the repository, which a user's clone
does not have."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = (".py", ".md", ".toml", ".cfg", ".txt", ".html", "Makefile")
OUTSIDE = re.compile(r"\.\./" + "shared" + r"|/work/" + "shared")  # split so this file does not match itself


def project_files():
    for folder in ("foolbench", "tests", "benchmarks", "attacks", "docs", "zoo"):
        yield from (p for p in (ROOT / folder).rglob("*") if p.is_file() and p.name.endswith(TEXT))
    yield from (p for p in ROOT.iterdir() if p.is_file() and p.name.endswith(TEXT))


def test_nothing_points_outside_the_repository():
    hits = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in project_files()
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not hits, f"these lines point outside the repository: {hits}"


def test_docs_the_readme_and_tests_cite_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"docs/[A-Z]+\.md", readme))
    cited |= set(re.findall(r"docs/[A-Z]+\.md", (ROOT / "tests" / "test_paper_settings.py").read_text()))
    assert {"docs/DESIGN.md", "docs/PAPER.md"} <= cited
    for doc in cited:
        assert (ROOT / doc).is_file(), doc


def test_design_lists_the_layers_the_layer_test_enforces():
    """docs/DESIGN.md's layer table names every module of every layer tests/test_layers.py holds."""
    from tests.test_layers import LAYERS

    design = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    rows = [line for line in design.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == len(LAYERS)
    for row, modules in zip(rows, LAYERS, strict=True):
        assert re.findall(r"`(\w+)`", row.split("|")[2]) == modules, row


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation but hyphens and
    underscores dropped, spaces as hyphens, repeats numbered -1, -2, ... (headings in code blocks
    are not headings)."""
    anchors, seen, fenced = set(), {}, False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            anchors.add(f"{slug}-{count}" if count else slug)
            seen[slug] = count + 1
    return anchors


def test_every_link_to_a_section_finds_it():
    """A `(#anchor)` link in the README or another doc names a heading of that file, as GitHub
    renders it: a renamed heading must take its links along."""
    broken = []
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "zoo" / "README.md"]:
        text = path.read_text(encoding="utf-8")
        anchors = heading_anchors(text)
        broken += [f"{path.name}#{a}" for a in re.findall(r"\]\(#([^)\s]+)\)", text) if a not in anchors]
    assert not broken, f"these links name no heading: {broken}"
