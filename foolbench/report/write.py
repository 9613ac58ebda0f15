"""`write_report`: run directories (and transfer, defence, baseline folders) in, a report folder out.

OUT/
  index.html                     everything below on one self-contained page
  runs.csv, runs.md              one row per run (its summary.json)
  classes.csv, classes.md        one row per run x class (its results.csv)
  transfer_<key>.csv/.md         each transfer folder's table;  defence_<key>.csv/.md;  baselines.csv/.md
  <lead>.csv/.md                 tables a caller puts first (the `paper` command's comparison)
  plots/*.png, galleries/*.png   curves, distribution, heatmaps, defence; one champion grid per run
  report.json                    what was read and written

All inputs are read and checked before the first file is written, every file is written atomically
and index.html last, so a bad input leaves OUT untouched and a killed report never leaves a
half-written page. Files are named from safe_name()'d run-folder names, never from labels.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from foolbench import __version__
from foolbench.errors import FoolbenchError
from foolbench.fileio import atomic_path, read_json, write_json, write_text
from foolbench.report import html, plots, tables
from foolbench.report.collect import GALLERY_LIMIT, Inputs, Run, collect
from foolbench.report.gallery import gallery
from foolbench.text import percent, safe_name

Lead = tuple[str, pd.DataFrame, str]
RUNS_HIDDEN = (
    "run",
    "path",
    "generations",
    "evaluations_to_first_99",
    "nonfinite_scores",
)  # in CSV, not on the page
OPEN_CLASSES = 20  # per-class tables up to this long are shown open, longer ones folded
GALLERY_COLUMNS = 6  # 6 tiles of 160 px fit the page's 1000 px at their own size, captions readable


def write_report(
    paths: Sequence[str | Path],
    out: str | Path = "report",
    title: str = "foolbench report",
    lead: Sequence[Lead] = (),
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Read every result under `paths`, write tables, plots, galleries and OUT/index.html; return its path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FoolbenchError(f"{out} is a file; --out must be a folder")
    inputs = collect(paths, warn)
    for heading, df, _ in lead:
        if not isinstance(df, pd.DataFrame):
            raise FoolbenchError(f"lead table '{heading}' is not a table")
    writer = _Writer(out)
    sections, nav = [], []
    for stem, (heading, df, caption) in zip(_lead_stems(lead), lead, strict=True):
        writer.table(df, stem)
        sections.append(html.section(stem, heading, html.paragraph(caption) + tables.to_html(df)))
        nav.append((stem, heading))
    if inputs.runs:
        sections += _runs(inputs.runs, writer)
        nav += [("runs", "Runs")] + [(f"run-{r.key}", r.title) for r in inputs.runs]
    for t in inputs.transfers:
        sections.append(_transfer(t, writer))
        nav.append((f"transfer-{t.key}", f"Transfer: {_short(t.path)}"))
    for d in inputs.defences:
        sections.append(_defence(d, writer))
        nav.append((f"defence-{d.key}", f"Defence: {_short(d.path)}"))
    if inputs.baselines:
        df = tables.baselines_table(inputs.baselines)
        writer.table(df, "baselines")
        body = html.paragraph(
            "Median top-1 confidence on real images, and whether the model's own confidence separates "
            "them from the fooling images (AUROC near 1: it does; near or below 0.5: it cannot)."
        )
        sections.append(
            html.section("baselines", "Real-image baseline", body + tables.to_html(df.drop(columns="path")))
        )
        nav.append(("baselines", "Baseline"))
    index = writer.page(title, _subtitle(inputs), nav, sections)
    writer.finish(inputs)
    return index


def _lead_stems(lead: Sequence[Lead]) -> list[str]:
    stems: list[str] = []
    for heading, _, _ in lead:
        base = safe_name(str(heading)).lower()
        stem, n = base, 2
        while stem in stems or stem in ("runs", "classes", "baselines", "index", "report"):
            stem, n = f"{base}-{n}", n + 1
        stems.append(stem)
    return stems


def _short(path: Path) -> str:
    """A folder by its last two names: transfer folders are often called all/, direct/, cppn/."""
    return "/".join(path.resolve().parts[-2:])


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


# -- sections ----------------------------------------------------------------------------------------
def _runs(runs: list[Run], writer: _Writer) -> list[str]:
    df = tables.runs_table(runs)
    writer.table(df, "runs")
    writer.table(tables.classes_table(runs), "classes")
    body = [
        html.paragraph(
            "Per run: the median and mean over classes of the best image's confidence, and how many "
            "classes have an image at or above 90%, 99% and 99.99% (the paper's figures)."
        ),
        tables.to_html(df[[c for c in df.columns if c not in _hidden(runs)]]),
    ]
    if len(runs) > 1:
        png = writer.path("plots/median_all.png")
        plots.median_curves(runs, png)
        body.append(
            html.figure(
                png, "median confidence over evaluations, all runs", "Median confidence over evaluations."
            )
        )
    png = writer.path("plots/distribution.png")
    plots.distribution(runs, png)
    body.append(
        html.figure(png, "best confidence per class", "Best confidence per class, one dot per class.")
    )
    sections = [html.section("runs", "Runs", "\n".join(body))]
    for run in runs:
        sections.append(_run(run, writer))
    return sections


def _hidden(runs: list[Run]) -> tuple:
    """Columns left off the page's runs table; the run's folder name is shown where runs share a title."""
    same = len({(r.summary["model"], r.summary["attack"], r.summary.get("seed")) for r in runs}) < len(runs)
    return tuple(c for c in RUNS_HIDDEN if c != "run") if same else RUNS_HIDDEN


def _run(run: Run, writer: _Writer) -> str:
    s = run.summary
    shown = len(run.gallery)
    grid = writer.path(f"galleries/{run.key}.png")
    labels, conf = run.results["label"], run.results["confidence"]
    captions = [f"{labels[i]}\n{percent(conf[i])}" for i in run.gallery_rows]
    gallery(run.gallery, captions, grid, columns=GALLERY_COLUMNS)
    curve = writer.path(f"plots/curve_{run.key}.png")
    plots.run_curve(run, curve)
    note = f"The {shown} most confident of {len(run.results)} classes." if shown < len(run.results) else ""
    body = [
        html.paragraph(str(run.path), "path"),
        html.paragraph(
            f"median {percent(s['median_confidence'])} · mean {percent(s['mean_confidence'])} · "
            f"≥ 99%: {s.get('classes_at_99', '?')} of {s.get('classes', len(run.results))} classes · "
            f"{s['evaluations']:,} evaluations"
            + (f" in {s['seconds']:.1f} s" if isinstance(s.get("seconds"), int | float) else "")
        ),
        html.figure(
            grid, f"champions of {run.title}", f"Champion per class: label and confidence. {note}".strip()
        ),
        html.figure(curve, f"confidence over evaluations, {run.title}"),
        html.details(
            f"Per-class results ({len(run.results)} classes)",
            tables.to_html(_class_view(run)),
            open_=len(run.results) <= OPEN_CLASSES,
        ),
    ]
    return html.section(f"run-{run.key}", run.title, "\n".join(body))


def _class_view(run: Run) -> pd.DataFrame:
    keep = [
        c
        for c in ("class", "label", "confidence", "top1_label", "top1_confidence", "generation")
        if c in run.results
    ]
    members = [c for c in run.results.columns if c.startswith("confidence_")]
    return run.results[keep + members]


def _transfer(t, writer: _Writer) -> str:
    from foolbench.transfer_stats import STATISTICS

    df = tables.transfer_table(t)
    writer.table(df, f"transfer_{t.key}")
    body = [
        html.paragraph(str(t.path), "path"),
        html.paragraph(
            "Champion PNGs evolved against each source model, scored by each target model "
            "(the target's confidence for the champion's class)."
        ),
        tables.to_html(df),
    ]
    heatmaps = []
    for statistic, m in t.matrices.items():
        png = writer.path(f"plots/transfer_{t.key}_{safe_name(statistic)}.png")
        plots.transfer_heatmap(m, STATISTICS.get(statistic, statistic.replace("_", " ")), png)
        heatmaps.append(html.figure(png, f"transfer heatmap: {statistic}"))
    body.append(html.grid(heatmaps))
    return html.section(f"transfer-{t.key}", f"Transfer: {_short(t.path)}", "\n".join(body))


def _defence(d, writer: _Writer) -> str:
    df = tables.defence_table(d)
    writer.table(df, f"defence_{d.key}")
    body = [
        html.paragraph(str(d.path), "path"),
        html.paragraph(
            "Per iteration of the retraining defence (0: the model given; k: retrained with the fooling "
            "images of the iterations before as an extra class): the new champions' confidence, the share "
            "of them the model puts in its fooling class, and its accuracy on real images."
        ),
        tables.to_html(df),
    ]
    png = writer.path(f"plots/defence_{d.key}.png")
    if plots.defence_curve(d, png):
        body.append(html.figure(png, f"defence over iterations: {d.key}"))
    else:
        writer.written.discard(png)
    return html.section(f"defence-{d.key}", f"Defence: {_short(d.path)}", "\n".join(body))


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

    def path(self, relative: str) -> Path:
        p = self.out / relative
        self.written.add(p)
        return p

    def table(self, df: pd.DataFrame, stem: str) -> None:
        with atomic_path(self.path(f"{stem}.csv")) as tmp:
            df.to_csv(tmp, index=False)
        write_text(self.path(f"{stem}.md"), tables.to_markdown(df.drop(columns="path", errors="ignore")))

    def page(self, title: str, subtitle: str, nav, sections) -> Path:
        files = sorted(str(p.relative_to(self.out)) for p in self.written if p.suffix in (".csv", ".md"))
        footer = (
            "Beside this page: "
            + ", ".join(files)
            + ", plots/ and galleries/ (the same images as PNG files)."
        )
        index = self.path("index.html")
        write_text(index, html.page(title, subtitle, nav, sections, footer))
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
