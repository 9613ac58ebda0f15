"""`write_report`: run directories (and transfer, defence, baseline folders) in, a report folder out.

OUT/
  index.html                     everything below on one self-contained page, headline first
  headline.csv, headline.md      one line per experiment: ours, the paper's, budgets, verdict (headline.py)
  runs.csv, runs.md              one row per run (its summary.json)
  classes.csv, classes.md        one row per run x class (its results.csv)
  transfer_<key>.csv/.md         each transfer folder's table;  defence_<key>.csv/.md;  baselines.csv/.md
  plots/*.png                    the headline's bar pairs, one small-multiples plot per section,
                                 transfer heatmaps, defence iterations
  galleries/*.png                champion grids (a section's, a run's, the champions that transfer)
  report.json                    what was read and written

The page: the headline (table, verdict rule, bar pairs), the sections in the paper's order (see
sections.py), then every run folded under "All runs".

All inputs are read and checked before the first file is written, every file is written atomically
and index.html last, so a bad input leaves OUT untouched and a killed report never leaves a
half-written page. Files are named from safe_name()'d run-folder names, never from labels.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from foolbench import __version__, rundir
from foolbench.errors import FoolbenchError
from foolbench.fileio import atomic_path, read_json, write_json, write_text
from foolbench.images import load_png
from foolbench.report import html, people, plots, tables
from foolbench.report.collect import GALLERY_LIMIT, Defence, Inputs, Run, Transfer, collect
from foolbench.report.gallery import gallery
from foolbench.report.headline import RULE, Line, budget_text
from foolbench.report.sections import (
    Section,
    arrange,
    defence_title,
    find_run,
    headline_transfers,
    transfer_title,
)
from foolbench.text import percent, safe_name

OPEN_CLASSES = 20  # per-class tables up to this long are shown open, longer ones folded
GALLERY_COLUMNS = 10  # 10 tiles of 108 px: one row for MNIST's digits, within the page's 1130 px
GALLERY_TILE = 108
SECTION_GALLERY = 20  # champions a section shows per group; a run's full gallery is under "All runs"
TRANSFER_GALLERY = 10
PANELS = (
    "One panel per attack and model: a thin line per seed, their median bold, and the paper's figure "
    "at its budget (◆)."
)


def write_report(
    paths: Sequence[str | Path],
    out: str | Path = "report",
    title: str = "foolbench report",
    note: str = "",
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Read every result under `paths`, write tables, plots, galleries and OUT/index.html; return its path.

    `note` is a sentence the page shows under the headline (the `paper` command says its scale there)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FoolbenchError(f"{out} is a file; --out must be a folder")
    inputs = collect(paths, warn)
    rated = people.read(inputs.runs, inputs.ratings)
    sections = arrange(inputs)
    writer = _Writer(out)
    writer.people, writer.runs = rated, inputs.runs
    for t in headline_transfers(inputs.transfers):
        writer.transfer_images[t.key] = _transfer_champions(t, inputs.runs)
    lines = [line for s in sections for line in s.lines]
    parts = [_headline(lines, note, writer)]
    links = [(s.key, s.title) for s in sections]
    if rated is not None:
        links.append(("people", people.TITLE))
    if inputs.runs:
        links.append(("runs", f"All runs ({len(inputs.runs)})"))
        writer.table(tables.runs_table(inputs.runs), "runs")
        writer.table(tables.classes_table(inputs.runs), "classes")
    parts.append(html.nav(links))
    shown: set[str] = set()  # runs whose gallery a section shows in full
    for s in sections:
        parts.append(SECTIONS[s.kind](s, writer, shown))
    if rated is not None:
        parts.append(people.section(rated, inputs.runs, writer))
    if inputs.runs:
        parts.append(_all_runs(sections, writer, shown))
    index = writer.page(title, _subtitle(inputs), parts)
    writer.finish(inputs)
    return index


def _subtitle(inputs: Inputs) -> str:
    parts = [f"{len(inputs.runs)} run{'s' * (len(inputs.runs) != 1)}"]
    for items, name in (
        (inputs.transfers, "transfer"),
        (inputs.defences, "defence"),
        (inputs.baselines, "baseline"),
    ):
        if items:
            parts.append(f"{len(items)} {name} result{'s' * (len(items) != 1)}")
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"{', '.join(parts)} · written {when} by foolbench {__version__}"


# -- the headline ------------------------------------------------------------------------------------
def _headline(lines: list[Line], note: str, writer: _Writer) -> str:
    records = tables.headline_table(lines)
    body = [html.paragraph(note)] if note else []
    if not lines:
        body.append(html.paragraph("Nothing here has a figure to compare: no finished run or result."))
        return html.section("headline", "Headline", "\n".join(body))
    writer.table(records, "headline", markdown=tables.headline_markdown(records))
    body.append(tables.headline_html(records))
    body.append(html.paragraph(RULE, "rule"))
    png = writer.path("plots/headline.png")
    plots.headline_chart(lines, png)
    body.append(html.figure(png, "ours vs the paper, one bar pair per experiment"))
    return html.section("headline", "Headline", "\n".join(body))


# -- sections ----------------------------------------------------------------------------------------
def _runs_section(section: Section, writer: _Writer, shown: set) -> str:
    """An evolution or gradient section: what the paper found, our runs, their curves, their champions."""
    refs = [line.reference for line in section.lines]
    said = dict.fromkeys(
        f"{ref.model}: {ref.text} ({budget_text(ref.budget, ref.unit)})" for ref in refs if ref is not None
    )
    body = [html.paragraph("The paper: " + "; ".join(said) + ".")] if said else []
    body.append(tables.to_html(tables.section_runs(section.runs)))
    png = writer.path(f"plots/{section.key}.png")
    plots.panels(section.groups, png, refs)
    body.append(html.figure(png, f"median confidence over the budget: {section.title}", PANELS))
    for group in section.groups:
        run = group.first
        seed = f", seed {run.seed}" if run.seed is not None else ""
        body.append(_gallery(run, writer, SECTION_GALLERY, f"{group.title}{seed}", shown))
        body.append(_lookalikes(run))
        if people.run_line(writer.people, run):
            body.append(html.paragraph(people.run_line(writer.people, run)))
    return html.section(section.key, section.title, "\n".join(body))


def _lookalikes(run: Run) -> str:
    """The run's champions above their nearest real images of the class, where the run measured it."""
    png = Path(run.path) / rundir.LOOKALIKES
    share = run.summary.get("lookalike_share")
    if not png.is_file() or share is None:
        return ""
    return html.figure(
        png,
        f"champions beside their nearest real images: {run.title}",
        f"Each champion above its nearest real image of the target class (correlation distance d against "
        f"the class's threshold). {share:.0%} of the champions look like a real image of their class: "
        "a proxy for a reader's judgement, not a replacement for it.",
    )


def _gallery(run: Run, writer: _Writer, limit: int, name: str, shown: set | None = None) -> str:
    """The run's most confident champions (up to `limit`), in class order, with label and confidence."""
    conf = run.results["confidence"].to_numpy()
    order = sorted(range(len(run.gallery)), key=lambda i: -conf[run.gallery_rows[i]])[:limit]
    order.sort()
    labels = run.results["label"]
    images = [run.gallery[i] for i in order]
    captions = [f"{labels[run.gallery_rows[i]]}\n{percent(conf[run.gallery_rows[i]])}" for i in order]
    png = writer.path(f"galleries/{run.key}{'' if len(order) == len(run.gallery) else '-top'}.png")
    if png not in writer.drawn:
        gallery(images, captions, png, tile=GALLERY_TILE, columns=GALLERY_COLUMNS)
        writer.drawn.add(png)
    whole = len(order) == len(run.results)
    if shown is not None and whole:
        shown.add(run.key)
    note = "" if whole else f" The {len(order)} most confident of {len(run.results)} classes."
    return html.figure(png, f"champions of {run.title}", f"{name}: the champion of each class.{note}")


def _transfer_section(section: Section, writer: _Writer, shown: set) -> str:
    from foolbench.transfer_stats import STATISTICS

    experiments = {str(t.root): t.experiment for t in section.transfers if t.experiment}  # in page order
    said = [f"{e.get('description', '')}. {e.get('paper', '')}".strip(". ") for e in experiments.values()]
    body = [html.paragraph(text + ".") for text in said if text]
    body.append(
        html.paragraph(
            "Champion PNGs evolved against each source model, scored by each target model (the target's "
            "confidence for the champion's class); the diagonal is the model they were evolved on."
        )
    )
    titles = [transfer_title(t) for t in section.transfers]
    body.append(tables.to_html(tables.transfer_summary(section.transfers, titles)))
    for t in headline_transfers(section.transfers):
        heatmaps = []
        for statistic in ("fraction_at_99", "median_confidence"):
            if statistic in t.matrices:
                png = writer.path(f"plots/transfer_{t.key}_{safe_name(statistic)}.png")
                plots.transfer_heatmap(t.matrices[statistic], STATISTICS.get(statistic, statistic), png)
                heatmaps.append(html.figure(png, f"transfer heatmap: {statistic}"))
        parts = [html.grid(heatmaps)] if heatmaps else []
        parts.append(_transfer_gallery(t, writer))
        body.append(html.section(f"transfer-{t.key}", transfer_title(t), "\n".join(parts), level=3))
    every = [
        html.paragraph(str(t.path), "path") + tables.to_html(tables.transfer_table(t))
        for t in section.transfers
    ]
    for t in section.transfers:
        writer.table(tables.transfer_table(t), f"transfer_{t.key}")
    body.append(html.details(f"Every transfer table ({len(section.transfers)})", "\n".join(every)))
    return html.section(section.key, section.title, "\n".join(body))


def _transfer_champions(t: Transfer, runs: list[Run]) -> tuple[list, list]:
    """The champions that fool another model most, each with its confidence there (read before the
    report writes anything, like every other input)."""
    if t.images is None or t.images.empty or "source" not in t.images:
        return [], []
    cross = t.images[t.images["source"] != t.images["target"]].sort_values("confidence", ascending=False)
    cross = cross.drop_duplicates(["run", "file"]).head(TRANSFER_GALLERY)
    images, captions = [], []
    for row in cross.itertuples():
        run = find_run(str(row.run), runs)
        if run is None:
            continue  # the source run was not given to the report
        channels = 1 if run.gallery and run.gallery[0].shape[0] == 1 else 3
        images.append(load_png(run.path / str(row.file), channels))
        captions.append(f"{percent(row.confidence)} {row.label}\n{row.target}")
    return images, captions


def _transfer_gallery(t: Transfer, writer: _Writer) -> str:
    images, captions = writer.transfer_images.get(t.key, ([], []))
    if not images:
        return ""
    png = writer.path(f"galleries/transfer_{t.key}.png")
    gallery(images, captions, png, tile=GALLERY_TILE, columns=GALLERY_COLUMNS)
    return html.figure(
        png,
        f"champions that transfer: {t.key}",
        "The champions that fool another model most. Under each: its confidence and class on that model, "
        "and that model's name (not the one the image was evolved on).",
    )


def _defence_section(section: Section, writer: _Writer, shown: set) -> str:
    body = [
        html.paragraph(
            "Per iteration of the retraining defence (0: the model given; k: retrained with the fooling "
            "images of the iterations before as an extra class): the new champions' confidence, the share "
            "of them the model puts in its fooling class, and its accuracy on real images."
        )
    ]
    for d in section.defences:
        df = tables.defence_table(d)
        writer.table(df, f"defence_{d.key}")
        parts = [html.paragraph(str(d.path), "path"), tables.to_html(df)]
        png = writer.path(f"plots/defence_{d.key}.png")
        if plots.defence_curve(d, png):
            parts.append(html.figure(png, f"defence over iterations: {d.key}"))
        else:
            writer.written.discard(png)
        by_iteration = _defence_runs(d, section.owned, writer.runs)
        runs = {k: min(rs, key=lambda r: r.key) for k, rs in by_iteration.items()}
        for k in dict.fromkeys([*list(runs)[:1], *list(runs)[-1:]]):
            what = "the model given" if k == 0 else f"the model retrained {k} time{'s' * (k > 1)}"
            parts.append(_gallery(runs[k], writer, SECTION_GALLERY, f"Iteration {k}, against {what}", shown))
        body.append(html.section(f"defence-{d.key}", defence_title(d), "\n".join(parts), level=3))
    return html.section(section.key, section.title, "\n".join(body))


def _defence_runs(d: Defence, owned: list[Run], runs: list[Run]) -> dict[int, list[Run]]:
    """The defence's runs by iteration, in order: those in its iter-k folders, and the collected runs
    it reused from elsewhere (`foolbench paper` lets the first iteration take the search's own runs),
    which defence.json names by path."""
    by: dict[int, list[Run]] = {}
    for r in owned:
        if d.path.resolve() in r.path.resolve().parents and _iteration(r) is not None:
            by.setdefault(_iteration(r), []).append(r)
    for it in d.meta.get("iterations", []):
        found = [find_run(str(p), runs) for p in it.get("run_dirs", [])]
        if it.get("iteration") not in by and found and None not in found:
            by[it["iteration"]] = found
    return dict(sorted(by.items()))


def _iteration(run: Run) -> int | None:
    """k of the iter-k folder a defence run lives in."""
    for part in reversed(run.path.parts):
        if part.startswith("iter-") and part[5:].isdigit():
            return int(part[5:])
    return None


def _baseline_section(section: Section, writer: _Writer, shown: set) -> str:
    df = tables.baselines_table(section.baselines)
    writer.table(df, "baselines")
    body = html.paragraph(
        "Median top-1 confidence on real images, and whether the model's own confidence separates "
        "them from the fooling images (AUROC near 1: it does; near or below 0.5: it cannot)."
    )
    return html.section(section.key, section.title, body + tables.to_html(df.drop(columns="path")))


SECTIONS = {
    "evolution": _runs_section,
    "gradient": _runs_section,
    "transfer": _transfer_section,
    "defence": _defence_section,
    "baseline": _baseline_section,
}


# -- every run, below the fold -------------------------------------------------------------------------
def _all_runs(sections: list[Section], writer: _Writer, shown: set) -> str:
    groups = []
    for s in sections:
        if s.runs:
            body = "\n".join(_run(run, writer, shown) for run in s.runs)
            groups.append(html.details(f"{s.title}: {len(s.runs)} run{'s' * (len(s.runs) != 1)}", body))
    intro = html.paragraph(
        "Each run's folder, figures, champions and per-class results. runs.csv and classes.csv beside "
        "this page hold the same numbers at full precision."
    )
    return html.section("runs", "All runs", intro + "\n".join(groups))


def _run(run: Run, writer: _Writer, shown: set) -> str:
    s = run.summary
    body = [
        html.paragraph(str(run.path), "path"),
        html.paragraph(
            f"median {percent(s['median_confidence'])} · mean {percent(s['mean_confidence'])} · "
            f"≥ 99%: {s.get('classes_at_99', '?')} of {s.get('classes', len(run.results))} classes · "
            f"{s['evaluations']:,} evaluations"
            + (f" in {s['seconds']:.1f} s" if isinstance(s.get("seconds"), int | float) else "")
        ),
    ]
    if people.run_line(writer.people, run):
        body.append(html.paragraph(people.run_line(writer.people, run)))
    if run.key not in shown:
        body.append(_gallery(run, writer, GALLERY_LIMIT, run.title))
    body.append(
        html.details(
            f"Per-class results ({len(run.results)} classes)",
            tables.to_html(_class_view(run)),
            open_=len(run.results) <= OPEN_CLASSES,
        )
    )
    return html.details(run.title, "\n".join(body), anchor=f"run-{run.key}")


def _class_view(run: Run) -> pd.DataFrame:
    keep = [
        c
        for c in ("class", "label", "confidence", "top1_label", "top1_confidence", "generation")
        if c in run.results
    ]
    members = [c for c in run.results.columns if c.startswith("confidence_")]
    return run.results[keep + members]


def _previous_files(record: Path) -> list:
    """The files an earlier report in OUT wrote (nothing, if its report.json is unreadable)."""
    try:
        files = read_json(record).get("files", []) if record.is_file() else []
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


# -- writing ------------------------------------------------------------------------------------------
class _Writer:
    """Knows OUT, records every file written, and at the end removes what an earlier report wrote there
    and this one did not (never anything else)."""

    def __init__(self, out: Path):
        self.out = out
        self.written: set[Path] = set()
        self.drawn: set[Path] = set()  # galleries already drawn (a run's may be shown twice)
        self.transfer_images: dict[str, tuple[list, list]] = {}  # read before anything is written
        self.people = None  # people's ratings of the runs (report/people.py), where there are any
        self.runs: list[Run] = []  # every collected run, for results that name runs by path

    def path(self, relative: str) -> Path:
        p = self.out / relative
        self.written.add(p)
        return p

    def table(self, df: pd.DataFrame, stem: str, markdown: str | None = None) -> None:
        with atomic_path(self.path(f"{stem}.csv")) as tmp:
            df.to_csv(tmp, index=False)
        if markdown is None:
            markdown = tables.to_markdown(df.drop(columns="path", errors="ignore"))
        write_text(self.path(f"{stem}.md"), markdown)

    def page(self, title: str, subtitle: str, sections: list[str]) -> Path:
        files = sorted(str(p.relative_to(self.out)) for p in self.written if p.suffix in (".csv", ".md"))
        footer = (
            "Beside this page: "
            + ", ".join(files)
            + ", plots/ and galleries/ (the same images as PNG files)."
        )
        index = self.path("index.html")
        write_text(index, html.page(title, subtitle, sections, footer))
        return index

    def finish(self, inputs: Inputs) -> None:
        record = self.out / "report.json"
        previous = _previous_files(record)
        self.written.add(record)
        names = sorted(str(p.relative_to(self.out)) for p in self.written)
        write_json(
            record,
            {
                "foolbench": __version__,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "runs": [str(r.path) for r in inputs.runs],
                "transfers": [str(t.path) for t in inputs.transfers],
                "defences": [str(d.path) for d in inputs.defences],
                "baselines": [str(b.path) for b in inputs.baselines],
                "skipped": [str(p) for p in inputs.skipped],
                "gallery_limit": GALLERY_LIMIT,
                "files": names,
            },
        )
        for name in set(previous) - set(names):
            stale = (self.out / str(name)).resolve()
            if stale.parent in (
                self.out.resolve(),
                (self.out / "plots").resolve(),
                (self.out / "galleries").resolve(),
            ):
                stale.unlink(missing_ok=True)
