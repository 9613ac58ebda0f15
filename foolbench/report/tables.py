"""The report's tables: raw numbers for CSV files, the same numbers formatted for Markdown and HTML.

CSV files keep full precision so that anyone can recompute from them; Markdown and HTML show
confidences and shares as percentages rounded down (`percent`, as everywhere in foolbench), so that
99.995% never reads as 100.00%.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from html import escape

import numpy as np
import pandas as pd

from foolbench.report import html
from foolbench.report.collect import Baseline, Defence, Run, Transfer
from foolbench.report.headline import Line, budget_text
from foolbench.text import percent

# Columns whose numbers are probabilities or shares in [0, 1], shown as percentages.
_PERCENT = re.compile(r"confidence|fraction|share|accuracy|match|fpr")
HEADERS = {
    "median_confidence": "median",
    "mean_confidence": "mean",
    "max_confidence": "max",
    "classes_at_90": "≥ 90%",
    "classes_at_99": "≥ 99%",
    "classes_at_9999": "≥ 99.99%",
    "evaluations_per_second": "eval/s",
    "evaluations_to_first_99": "evals to first ≥ 99%",
    "nonfinite_scores": "non-finite",
    "top1": "top-1",
    "top1_label": "top-1 label",
    "top1_confidence": "top-1 confidence",
    "fraction_at_99": "share ≥ 99%",
    "fraction_at_50": "share ≥ 50%",
    "top1_match": "top-1 match",
    "n_images": "images",
    "median_confidence_correct": "median (right)",
    "median_confidence_wrong": "median (wrong)",
    "auroc": "AUROC",
    "fpr_at_95_tpr": "FPR at 95% TPR",
    "share_at_99_on_another_model": "≥ 99% on another model (median of pairs)",
    "share_at_99_on_their_own": "≥ 99% on their own",
    "median_confidence_on_another_model": "median confidence on another model",
    "classes_at_99_mean_of_runs": "≥ 99% (mean of runs)",
    "classes_at_9999_mean_of_runs": "≥ 99.99% (mean of runs)",
}
# defence.csv's class counts are means over an iteration's runs (a count of 0.5 reads wrong bare)
DEFENCE_MEANS = {
    "classes_at_99": "classes_at_99_mean_of_runs",
    "classes_at_9999": "classes_at_9999_mean_of_runs",
}
RUN_COLUMNS = [
    "model",
    "attack",
    "seed",
    "classes",
    "evaluations",
    "generations",
    "seconds",
    "evaluations_per_second",
    "median_confidence",
    "mean_confidence",
    "classes_at_90",
    "classes_at_99",
    "classes_at_9999",
    "evaluations_to_first_99",
    "nonfinite_scores",
]
SECTION_RUN_COLUMNS = [
    "model",
    "attack",
    "seed",
    "evaluations",
    "seconds",
    "median_confidence",
    "classes_at_90",
    "classes_at_99",
    "classes_at_9999",
    "classes",
]
IDENTIFIERS = {"seed", "class", "top1", "iteration"}  # integers that are names, not amounts: no separators
DEFENCE_TEXT = ("model",)  # text columns of defence.csv worth showing; paths and hashes stay in the CSV


# -- building -----------------------------------------------------------------------------------------
def headline_table(lines: Sequence[Line]) -> pd.DataFrame:
    """One row per headline line (headline.csv): values at full precision, and the texts the page shows."""
    return pd.DataFrame([line.record() for line in lines])


def runs_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run: the run's summary.json, as written."""
    rows = [{"run": r.key, **{c: r.summary.get(c) for c in RUN_COLUMNS}, "path": str(r.path)} for r in runs]
    return pd.DataFrame(rows, columns=["run", *RUN_COLUMNS, "path"])


def section_runs(runs: Sequence[Run]) -> pd.DataFrame:
    """The few columns a section shows per run; runs.csv has them all."""
    df = runs_table(runs)[SECTION_RUN_COLUMNS]
    return df.drop(columns=[c for c in ("attack",) if df[c].nunique() <= 1])


def classes_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per (run, class): the run's results.csv, as written."""
    parts = []
    for r in runs:
        part = r.results.copy()
        for i, (name, value) in enumerate(
            (("run", r.key), ("model", r.summary["model"]), ("attack", r.summary["attack"]))
        ):
            part.insert(i, name, value)
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def transfer_table(t: Transfer) -> pd.DataFrame:
    return t.table.copy()


def transfer_summary(transfers: Sequence[Transfer], titles: Sequence[str]) -> pd.DataFrame:
    """One row per transfer table: how its champions fare on the other models and on their own."""
    rows = []
    for t, title in zip(transfers, titles, strict=True):
        table = t.table
        cross, own = table[table["source"] != table["target"]], table[table["source"] == table["target"]]
        rows.append(
            {
                "experiment": title,
                "champions of": t.path.name,
                "models": ", ".join(dict.fromkeys(str(x) for x in table["target"])),
                "share_at_99_on_another_model": cross["fraction_at_99"].median() if len(cross) else None,
                "share_at_99_on_their_own": own["fraction_at_99"].median() if len(own) else None,
                "median_confidence_on_another_model": (
                    cross["median_confidence"].median() if len(cross) else None
                ),
            }
        )
    return pd.DataFrame(rows)


def defence_table(d: Defence) -> pd.DataFrame:
    """defence.csv's numeric columns (whatever `foolbench defend` writes), with the model's name."""
    keep = [c for c in d.table.columns if c in DEFENCE_TEXT or pd.api.types.is_numeric_dtype(d.table[c])]
    return d.table[keep].rename(columns=DEFENCE_MEANS)


def baselines_table(baselines: Sequence[Baseline]) -> pd.DataFrame:
    rows = []
    for b in baselines:
        r, fooling = b.result, b.result.get("fooling_vs_real") or {}
        rows.append(
            {
                "model": r.get("model"),
                "data": r.get("data_name") or r.get("data"),
                "images": r.get("images"),
                "median_confidence": r.get("median_confidence"),
                "median_confidence_correct": r.get("median_confidence_correct"),
                "median_confidence_wrong": r.get("median_confidence_wrong"),
                "accuracy": r.get("accuracy"),
                "fooling_attacks": ", ".join(sorted({str(x.get("attack")) for x in fooling.get("runs", [])})),
                "fooling_images": fooling.get("fooling_images"),
                "median_fooling_confidence": fooling.get("median_fooling_confidence"),
                "auroc": fooling.get("auroc"),
                "fpr_at_95_tpr": fooling.get("fpr_at_95_tpr"),
                "path": str(b.path),
            }
        )
    return pd.DataFrame(rows)


# -- formatting ----------------------------------------------------------------------------------------
def header(column) -> str:
    return HEADERS.get(str(column), str(column).replace("_", " "))


def is_percent(column) -> bool:
    return bool(_PERCENT.search(str(column)))


def cell(value, column) -> str:
    """One value as the report shows it: percentages rounded down, counts with thousands separators."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value)) if column in IDENTIFIERS else f"{int(value):,}"
    if isinstance(value, float | np.floating):
        if is_percent(column) and 0.0 <= value <= 1.0:
            return percent(float(value))
        if column == "seconds":
            return f"{value:,.1f}"
        if column == "auroc":
            return f"{value:.3f}"
        if math.isinf(value):
            return str(value)
        if float(value).is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.6g}"  # 0.9999 must not read as 1
    return str(value)


def formatted(df: pd.DataFrame) -> list[list[str]]:
    return [[cell(v, c) for c, v in zip(df.columns, row, strict=True)] for row in df.itertuples(index=False)]


def numeric_columns(df: pd.DataFrame) -> set:
    return {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])}


TERMINAL = [
    "model",
    "attack",
    "seed",
    "evaluations",
    "median_confidence",
    "mean_confidence",
    "classes_at_90",
    "classes_at_99",
    "classes_at_9999",
    "classes",
]


def terminal(runs: pd.DataFrame) -> str:
    """The runs table for the terminal (the command prints it after writing the report)."""
    df = runs[[c for c in TERMINAL if c in runs]]
    return pd.DataFrame(formatted(df), columns=[header(c) for c in df.columns]).to_string(index=False)


_MD_SPECIAL = re.compile(r"([\\|<>\[\]`*])")


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; characters Markdown would interpret are backslash-escaped."""

    def md(text: str) -> str:
        return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))

    numeric = numeric_columns(df)
    lines = [
        "| " + " | ".join(md(header(c)) for c in df.columns) + " |",
        "|" + "|".join("---:" if c in numeric else "---" for c in df.columns) + "|",
    ]
    lines += ["| " + " | ".join(md(v) for v in row) + " |" for row in formatted(df)]
    return "\n".join(lines) + "\n"


def _nobreak(text: str) -> str:
    """Short headers ("≥ 99%") stay on one line; long ones may wrap."""
    return text.replace(" ", "\u00a0") if len(text) <= 12 else text


def _long(text: str) -> str:
    """Cells are kept on one line, but long texts (ensemble names, paths) may wrap."""
    return ' class="long"' if len(text) > 30 else ""


def to_html(df: pd.DataFrame, cells: list[list[str]] | None = None) -> str:
    """An HTML table; every header and cell is escaped, numbers are right-aligned. `cells` are the
    texts to show, where a caller formats them its own way (default: `formatted(df)`)."""
    numeric = numeric_columns(df)
    cls = [' class="num"' if c in numeric else "" for c in df.columns]
    head = "".join(f"<th{k}>{escape(_nobreak(header(c)))}</th>" for c, k in zip(df.columns, cls, strict=True))
    body = "".join(
        "<tr>"
        + "".join(f"<td{k or _long(v)}>{escape(v)}</td>" for v, k in zip(row, cls, strict=True))
        + "</tr>\n"
        for row in (formatted(df) if cells is None else cells)
    )
    return (
        f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table></div>'
    )


# -- the headline ------------------------------------------------------------------------------------
def _budgets(record) -> tuple[str, str]:
    unit = record["budget_unit"]
    return budget_text(_number(record["budget"]), unit), budget_text(_number(record["paper_budget"]), unit)


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _data(record: dict) -> str:
    """Which real images a headline figure used (a line without any has no `data`)."""
    data = _text(record.get("data"))
    return f"data: {data}" if data else ""


def _sub(text: str) -> str:
    return f'<span class="sub">{escape(text)}</span>' if text else ""


HEADLINE_COLUMNS = (("Experiment", 22), ("Ours", 23), ("The paper", 19), ("Budget", 12), ("Verdict", 24))


def headline_html(records: pd.DataFrame) -> str:
    """The headline as the page shows it: each experiment links to its section; under each figure,
    in small type, what it is measured on."""
    rows = []
    for r in records.to_dict("records"):
        ours_budget, paper_budget = _budgets(r)
        cells = (
            ("", html.link(r["section"], r["experiment"]) + _sub(_text(r["measure"]))),
            (
                "figure",
                escape(_text(r["ours_text"]))
                + _sub("; ".join(filter(None, (r["model"], _text(r["detail"]), _data(r))))),
            ),
            ("figure paper", escape(_text(r["paper_text"]) or "–") + _sub(_text(r["paper_model"]))),
            ("", escape(ours_budget) + _sub(f"paper: {paper_budget}")),
            ("", html.badge(r["verdict"]) + _sub(_text(r["why"]))),
        )
        rows.append("<tr>" + "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>" for c, v in cells))
        rows.append("</tr>\n")
    head = "".join(f'<th style="width:{w}%">{escape(t)}</th>' for t, w in HEADLINE_COLUMNS)
    return (
        f'<div class="scroll"><table class="headline">\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{''.join(rows)}</tbody></table></div>"
    )


def headline_markdown(records: pd.DataFrame) -> str:
    """The headline as a Markdown table (headline.md, and the README's copy of it)."""
    rows = []
    for r in records.to_dict("records"):
        ours_budget, paper_budget = _budgets(r)
        rows.append(
            {
                "experiment": r["experiment"],
                "ours": "; ".join(filter(None, (_text(r["ours_text"]), r["model"], _data(r)))),
                "the paper": f"{_text(r['paper_text']) or '–'}; {_text(r['paper_model']) or '–'}",
                "budget: ours / paper": f"{ours_budget} / {paper_budget}",
                "verdict": f"{r['verdict']} — {_text(r['why'])}",
            }
        )
    columns = ["experiment", "ours", "the paper", "budget: ours / paper", "verdict"]
    return to_markdown(pd.DataFrame(rows, columns=columns))
