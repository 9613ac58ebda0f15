"""The report's section on people's ratings (`foolbench rate`): which champions people recognised,
whose answers counted, and how well the look-alike judge agrees with people.

Read with everything else before the report writes a file (`read`), shown only where ratings exist.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from foolbench.rating.summary import RULE, Summary, agreement_text, recognised_text, summarise_found
from foolbench.report import html, tables

TITLE = "Would a person recognise it?"


def read(runs, ratings_files) -> Summary | None:
    """The ratings of the report's runs, or None where there are none."""
    return summarise_found([r.path for r in runs], ratings_files)


def run_line(summary: Summary | None, run) -> str:
    """ "recognised by people: k of n (r raters)" for one run, or "" where nobody counted rated it."""
    row = summary.run_row(run.path) if summary is not None else None
    if row is None:
        return ""
    raters = f"{row['raters']} rater{'s' * (row['raters'] != 1)}"
    return f"recognised by people: {recognised_text(row)} champions ({raters})"


def section(summary: Summary, runs, writer) -> str:
    titles = {str(r.path): r.title for r in runs}
    rated = summary.runs[summary.runs["rated"] > 0]
    table = pd.DataFrame(
        {
            "run": [titles.get(r, Path(r).name) for r in rated["run"]],
            "recognised by people": [recognised_text(r) for r in rated.to_dict("records")],
            "raters": rated["raters"].to_list(),
            "look-alike judge agrees": [agreement_text(r) for r in rated.to_dict("records")],
        }
    )
    writer.table(table, "people")
    raters = summary.raters_view()
    writer.table(raters, "raters")
    body = [
        html.paragraph(
            "People's answers (foolbench rate): each champion was shown among real images of the same "
            "classes, with its target label, three other labels of the model and “none of these”. "
            f"Rule: {RULE}. The look-alike judge's agreement counts the rated champions where the judge and "
            "people say the same; “people only”: people recognised it and the judge did not."
        ),
        tables.to_html(table) if len(table) else html.paragraph("No rater's answers count yet."),
        html.details(f"Raters ({len(raters)})", tables.to_html(raters), open_=True),
    ]
    if len(summary.champions):
        body.append(
            html.details(
                f"Every rated champion ({len(summary.champions)})", tables.to_html(summary.champions_view())
            )
        )
    body += [html.paragraph(n) for n in summary.notes]
    return html.section("people", TITLE, "\n".join(body))
