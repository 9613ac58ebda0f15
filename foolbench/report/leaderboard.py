"""reports/leaderboard.csv: one row per (model file, protocol), safe to update from many processes.

An update reads the file, replaces the row of the same (model_sha256, protocol) or appends, and
writes the whole file to a temporary file renamed over the old one, all under a lock file
(`leaderboard.csv.lock`, filelock): concurrent `foolbench score` processes queue for the lock,
so none loses another's row, and a reader never sees a half-written file.

Robustness, as the rendered tables sort it (within each protocol and suite, since only models
facing the same attacks compare): `fooling_score` ascending (lower = the attacks fool it less);
equal scores go to the model whose quickest attack needed more evaluations to bring a first class
to 99% (never = best). What the score is depends on the protocol (foolbench.protocol): v1 the mean
median best confidence of the ranked attacks, v2 the worst case over the attacks of a curve score
with its spread over seeds, where rows whose spreads overlap are marked as ties (`ties`).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from foolbench.errors import FoolbenchError
from foolbench.fileio import atomic_path
from foolbench.text import percent

BASE_COLUMNS = [
    "name",
    "model_sha256",
    "classes",
    "input_size",
    "suite",
    "protocol",
    "foolbench",
    "date",
    "fooling_score",
]
SPREAD_COLUMNS = ["fooling_score_low", "fooling_score_high", "attacks_scored"]  # v2 and v3 rows
V3_COLUMNS = ["ranked", "not_ranked_why", "accuracy"]  # v3 rows: whether the row is ranked, and why not
TAIL_COLUMNS = ["baseline_median", "fooling_auroc"]
KEY = ("model_sha256", "protocol")
TEXT_COLUMNS = (
    "name",
    "model_sha256",
    "input_size",
    "suite",
    "protocol",
    "foolbench",
    "date",
    "attacks_scored",
    "ties",
    "ranked",
    "not_ranked_why",
    "real_data",
    "judge",
    "recognised_by_people",  # "k of n" champions, where people rated the runs (foolbench rate)
)
FORMATS = ("md", "html", "csv")
LOCK_TIMEOUT = 600.0  # seconds to wait for another process's update (each takes milliseconds)
ROBUSTNESS = (
    "Sorted by robustness within each protocol and suite (rows of different protocols or suites do not "
    "compare): fooling_score ascending (lower = more robust; what it is depends on the protocol, below; "
    "v3 is the default). Protocol v1: fooling_score is the mean over the protocol's ranked attacks of "
    "the median best confidence per target class, ties by more evaluations until the quickest attack "
    "put a first class at >= 99% (empty = never). ATTACK_median: median best confidence, mean over seeds; _classes_at_99: target classes at "
    ">= 99%, mean over seeds; _evals_to_99: evaluations until the first class reached 99%, median "
    "over seeds. baseline_median: median top-1 confidence on real images; fooling_auroc: how well "
    "max-softmax tells real images from the fooling ones (0.5 = not at all). Protocol v2: "
    "fooling_score is, per seed, the worst case over the attacks of the run's score (the area under its "
    "median confidence over log-evaluations in nines, 1 = 99.99% from the first generation, look-alike "
    "classes counted as not fooled), then the mean over seeds; low/high: its min and max over seeds; "
    "ties: the ranks whose low-high ranges overlap this row's, i.e. differences within seed noise. "
    "Protocol v3: a fooling image counts by the share of the model's confidences on real images it "
    "classifies correctly that are at or below its own (ties count as fooled); fooling_score is, per "
    "seed, the mean over log-queries of the strongest attack's mean share over the target classes, "
    "then the mean over seeds (1 = as confident as on its most confident real image from the first "
    "query count on); classes the judge recognises count as not fooled; a row is ranked only when its "
    "accuracy on the real images reaches the suite's floor and every attack ran (not_ranked_why says "
    "otherwise); '–' is not measured."
)


# -- reading and updating ----------------------------------------------------------------------------
def read_leaderboard(path: str | Path) -> pd.DataFrame:
    """The leaderboard's rows (none if the file does not exist); a damaged file is a one-line error."""
    path = Path(path)
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return pd.DataFrame(columns=BASE_COLUMNS + TAIL_COLUMNS)
    if not path.is_file():
        raise FoolbenchError(f"{path} is not a file; pass --leaderboard FILE.csv")
    try:
        df = pd.read_csv(path, dtype=dict.fromkeys(TEXT_COLUMNS, str), keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise FoolbenchError(
            f"{path}: not a leaderboard CSV ({str(e)[:100]}); restore it or move it away"
        ) from None
    missing = [c for c in BASE_COLUMNS + TAIL_COLUMNS if c not in df.columns]
    if missing:
        raise FoolbenchError(
            f"{path}: not a leaderboard CSV (no column {missing[0]}); restore it or move it away"
        )
    for column in df.columns:
        if len(df) and column not in TEXT_COLUMNS and not pd.api.types.is_numeric_dtype(df[column]):
            raise FoolbenchError(f"{path}: column {column} holds text where numbers belong; restore the file")
    if df[list(KEY)].isna().any().any() or df.duplicated(list(KEY)).any():
        raise FoolbenchError(
            f"{path}: a row lacks its model_sha256/protocol or appears twice; restore the file"
        )
    return df


def add_row(path: str | Path, row: dict) -> pd.DataFrame:
    """Put `row` on the leaderboard, replacing the row of the same model file and protocol."""
    from filelock import FileLock, Timeout

    path = Path(path)
    missing = [k for k in (*BASE_COLUMNS, *TAIL_COLUMNS) if k not in row]
    if missing:
        raise FoolbenchError(f"a leaderboard row needs {', '.join(missing)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT):
            df = read_leaderboard(path)
            new = pd.DataFrame([row])
            same = (df["model_sha256"] == row["model_sha256"]) & (df["protocol"] == row["protocol"])
            kept = df[~same]
            df = pd.concat([kept, new], ignore_index=True) if len(kept) else new
            df = df[ordered_columns(df.columns)]
            with atomic_path(path) as tmp:
                df.to_csv(tmp, index=False)
    except Timeout:
        raise FoolbenchError(
            f"{path}.lock has been held by another process for {LOCK_TIMEOUT:.0f} s; if no foolbench is "
            "running, delete the lock file"
        ) from None
    return df


def ordered_columns(columns) -> list[str]:
    """Identity and score first, the attacks' columns in the order they appeared, the baseline last."""
    columns = list(columns)
    fixed = set(BASE_COLUMNS) | set(SPREAD_COLUMNS) | set(V3_COLUMNS) | set(TAIL_COLUMNS)
    middle = [c for c in columns if c not in fixed]
    head = [c for c in BASE_COLUMNS + SPREAD_COLUMNS + V3_COLUMNS if c in columns]
    return head + middle + [c for c in TAIL_COLUMNS if c in columns]


# -- ranking and rendering ---------------------------------------------------------------------------
def is_listed_only(df: pd.DataFrame) -> pd.Series:
    """Rows a protocol lists without ranking them (v3: `ranked` is false)."""
    if "ranked" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["ranked"].astype(str).str.lower().eq("false")


def ranked(df: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by robustness (see ROBUSTNESS) with a `rank` column counted per protocol and suite;
    rows listed without a rank (v3's `ranked` false) come after the ranked ones, with no rank."""
    evals = [c for c in df.columns if c.endswith("_evals_to_99")]
    quickest = df[evals].fillna(math.inf).min(axis=1) if evals else pd.Series(math.inf, index=df.index)
    keyed = df.assign(
        _listed=is_listed_only(df), _score=df["fooling_score"].fillna(math.inf), _quick=-quickest
    )
    out = keyed.sort_values(["protocol", "suite", "_listed", "_score", "_quick", "name"], kind="mergesort")
    listed = out["_listed"].to_numpy()
    out = out.drop(columns=["_listed", "_score", "_quick"]).reset_index(drop=True)
    rank = out.groupby(["protocol", "suite"]).cumcount() + 1
    out.insert(0, "rank", [None if skip else int(r) for r, skip in zip(rank, listed, strict=True)])
    if "fooling_score_low" in out.columns:
        out["ties"] = [_ties(out, i) for i in range(len(out))]
    return out


def _ties(table: pd.DataFrame, i: int) -> str:
    """The ranks in row i's protocol and suite whose seed ranges (low-high) overlap row i's (ranked
    rows only: a row listed without a rank ties with nothing)."""
    row = table.iloc[i]
    if pd.isna(row["fooling_score_low"]) or pd.isna(row["rank"]):
        return None  # a protocol without a spread (v1), or a row that is not ranked
    same = table[
        (table["protocol"] == row["protocol"]) & (table["suite"] == row["suite"]) & table["rank"].notna()
    ]
    overlap = same[
        (same.index != table.index[i])
        & (same["fooling_score_low"] <= row["fooling_score_high"])
        & (same["fooling_score_high"] >= row["fooling_score_low"])
    ]
    return ", ".join(str(r) for r in overlap["rank"])


def title(df: pd.DataFrame) -> str:
    versions = sorted(df["protocol"].dropna().unique())
    return f"foolbench leaderboard, protocol {', '.join(versions) or '(no rows yet)'}"


def render(df: pd.DataFrame, fmt: str = "md") -> str:
    """The leaderboard as Markdown, a standalone HTML page or CSV (with `#` header lines)."""
    if fmt not in FORMATS:
        raise FoolbenchError(f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}")
    table = ranked(df)
    head = title(df)
    if fmt == "csv":
        return f"# {head}\n# {ROBUSTNESS}\n" + table.to_csv(index=False)
    if fmt == "md":
        parts = [f"# {head}", ROBUSTNESS]
        for (protocol, suite), rows in table.groupby(["protocol", "suite"], sort=False):
            rows = rows.dropna(axis=1, how="all")
            rows = rows[[c for c in rows.columns if c != "ties"] + (["ties"] if "ties" in rows else [])]
            parts += [f"## Protocol {protocol}, {suite} models", markdown(display(rows))]
        return "\n\n".join(parts) + "\n"
    return html_page(head, table)


# v2 rows carry more per attack than a page is wide: the ranking table keeps each attack's score, the
# rest (v1-style figures, per-seed extremes, look-alikes) is folded below it with the provenance.
_FOLDED_V2 = ("_evals_to_99", "_median", "_classes_at_99", "_score_min", "_score_max", "_lookalikes")
# v3 rows fold the per-attack end states and judge counts, and where the real images came from
_FOLDED_V3 = (
    "_end",
    "_recognised",
    "ranked",
    "real_images",
    "real_data",
    "judge",
    "fpr_at_95_tpr",
    "baseline_median",
    "fooling_auroc",
)
PROVENANCE = ("model_sha256", "classes", "input_size", "protocol", "foolbench", "date")


def html_page(head: str, table: pd.DataFrame) -> str:
    """The leaderboard as a page dressed like the report: per protocol and suite, the ranking (scores
    and the attacks' medians) in a table that fits the page, and what identifies each row below it."""
    from foolbench.report import html as page
    from foolbench.report.tables import to_html

    sections = [page.paragraph(ROBUSTNESS, "rule")]
    for (protocol, suite), rows in table.groupby(["protocol", "suite"], sort=False):
        rows = rows.dropna(axis=1, how="all")
        folded = _FOLDED_V2 if "fooling_score_low" in rows.columns else ("_evals_to_99",)
        if "ranked" in rows.columns:
            folded = (*folded, *_FOLDED_V3)
        ranking = [c for c in rows.columns if c not in PROVENANCE and not c.endswith(folded)]
        ranking = [c for c in ranking if c not in ("suite",)]
        ids = ["rank", "name", *[c for c in rows.columns if c in PROVENANCE or c.endswith(folded)]]
        body = to_html(rows[ranking].rename(columns=_header), display(rows[ranking]).values.tolist())
        body += page.details(
            "Model files, protocol, version, date and evaluations to a first class at 99%",
            to_html(rows[ids].rename(columns=_header), display(rows[ids]).values.tolist()),
        )
        key = f"{protocol}-{suite}"
        sections.append(page.section(key, f"Protocol {protocol}, {suite} models", body))
    return page.page(
        head, "Lower fooling score = more robust.", sections, "Written by foolbench leaderboard."
    )


def display(table: pd.DataFrame) -> pd.DataFrame:
    """Numbers as people read them: confidences in %, counts and evaluations as whole numbers."""
    out = pd.DataFrame(index=table.index)
    v3 = table["ranked"].notna() if "ranked" in table.columns else pd.Series(False, index=table.index)
    for column in table.columns:
        values = table[column]
        if column == "fooling_score" and "fooling_score_low" in table.columns:
            out[column] = [
                "–" if is_v3 and pd.isna(v) else _score_text(v, low)
                for v, low, is_v3 in zip(values, table["fooling_score_low"], v3, strict=True)
            ]
            continue
        if column == "rank":
            fmt = lambda r: str(int(r))  # noqa: E731
        elif column != "fooling_score" and column.endswith(
            ("_score", "_score_min", "_score_max", "_score_low", "_score_high", "_end")
        ):
            fmt = "{:.3f}".format
        elif column in ("fooled_at_end", "fpr_at_95_tpr"):
            fmt = "{:.3f}".format
        elif column in ("accuracy", "real_median"):
            fmt = percent
        elif column == "real_images":
            fmt = "{:,.0f}".format
        elif column.endswith(("_lookalikes", "_recognised")):
            fmt = "{:.2g}".format
        elif column.endswith("_median") or column == "fooling_score":
            fmt = percent
        elif column.endswith("_evals_to_99"):
            fmt = "{:,.0f}".format
        elif column.endswith("_classes_at_99"):
            fmt = "{:.3g}".format
        elif column == "fooling_auroc":
            fmt = "{:.3f}".format
        elif column == "model_sha256":
            fmt = lambda s: s[:12]  # noqa: E731
        else:
            fmt = str
        out[column] = [
            (
                ("–" if is_v3 and column not in ("rank", "ties", "not_ranked_why") else "")
                if pd.isna(v)
                else fmt(v)
            )
            for v, is_v3 in zip(values, v3, strict=True)
        ]
    return out


def _score_text(score, low) -> str:
    """fooling_score as its protocol means it: v1 a confidence (%), v2 (a row with a spread) a score."""
    if pd.isna(score):
        return ""
    return percent(score) if pd.isna(low) else f"{score:.3f}"


def _header(column: str) -> str:
    """Column names as a page shows them: cppn_classes_at_99 -> cppn classes ≥ 99%."""
    named = {"baseline_median": "real-image median", "fooling_auroc": "fooling-vs-real AUROC"}
    if column in named:
        return named[column]
    for suffix, words in (("_classes_at_99", " classes ≥ 99%"), ("_evals_to_99", " evaluations to 99%")):
        if column.endswith(suffix):
            return column.removesuffix(suffix) + words
    return column.replace("_", " ")


def markdown(shown: pd.DataFrame) -> str:
    """A GitHub Markdown table; '|' in a cell is escaped so a name cannot break the table."""

    def cells(values) -> str:
        return "| " + " | ".join(str(v).replace("\\", "\\\\").replace("|", "\\|") for v in values) + " |"

    lines = [cells(shown.columns), "|" + "---|" * len(shown.columns)]
    lines += [cells(row) for row in shown.itertuples(index=False)]
    return "\n".join(lines)


def row_text(row: dict) -> str:
    """One row for the terminal: a column per line, numbers formatted as in the tables."""
    shown = display(pd.DataFrame([row])).iloc[0]
    width = max(map(len, shown.index))
    return "\n".join(f"{column:<{width}}  {value}" for column, value in shown.items())
