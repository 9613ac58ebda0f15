"""The report's plots (matplotlib, PNG): the headline's bar pairs, small multiples of confidence over
evaluations, defence iterations, and (through `experiments.transfer.heatmap`) transfer matrices.

Figures are made with matplotlib's object API, not pyplot: no global state, no display needed.
Labels and model names come from users' files, so mathtext is off: a `$` in a label stays a `$`.
All figures are at most 11 inches wide at 100 dpi, so the HTML page shows them at their own size.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from foolbench.fileio import atomic_path
from foolbench.report.collect import Defence, Run
from foolbench.report.headline import (
    BEYOND,
    MEDIAN,
    NO_FIGURE,
    NOT_MEASURED,
    NOT_REPRODUCED,
    REPRODUCED,
    REPRODUCED_SMALLER,
    Line,
)
from foolbench.text import percent

DPI = 100
DEFENCE_LINES = (
    ("median_confidence", "median confidence of the new champions"),
    ("fooled_share", "share of them whose top-1 is the fooling class"),
    ("clean_accuracy", "clean accuracy"),
)


@contextlib.contextmanager
def plain_text() -> Iterator[None]:
    """Text in figures as given (no mathtext), in a font with ≥ and ·."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False, "font.family": "DejaVu Sans", "font.size": 9}):
        yield


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def _percent_axis(axis) -> None:
    from matplotlib.ticker import PercentFormatter

    axis.set_major_formatter(PercentFormatter(1.0, decimals=0))


VERDICT_COLOURS = {
    REPRODUCED: "#2b8a3e",
    REPRODUCED_SMALLER: "#0b7285",
    NOT_REPRODUCED: "#c92a2a",
    NOT_MEASURED: "#868e96",
    BEYOND: "#5f3dc4",
    NO_FIGURE: "#868e96",
}
PAPER_COLOUR = "#adb5bd"
LOGIT_TICKS = ([1e-4, 0.01, 0.5, 0.99, 0.9999, 1 - 1e-6], ["0.01%", "1%", "50%", "99%", "99.99%", "99.9999%"])


def headline_chart(lines: Sequence[Line], path: Path) -> None:
    """One bar pair per headline line: ours (coloured by its verdict) above the paper's (grey)."""
    from matplotlib.patches import Patch

    n = len(lines)
    with plain_text():
        fig = _figure(10.8, 0.9 + 0.46 * n)
        ax = fig.subplots()
        y = np.arange(n)
        for i, line in enumerate(lines):
            verdict, _ = line.judge()
            ax.barh(i - 0.19, line.ours, height=0.36, color=VERDICT_COLOURS[verdict])
            ax.text(min(line.ours, 1) + 0.01, i - 0.19, percent(line.ours), va="center", fontsize=8)
            paper = line.reference.value if line.reference else None
            if paper is None:
                ax.text(0.01, i + 0.19, "the paper gives no figure", va="center", fontsize=8, color="#495057")
            else:
                ax.barh(i + 0.19, paper, height=0.36, color=PAPER_COLOUR)
                ax.text(paper + 0.01, i + 0.19, percent(paper), va="center", fontsize=8, color="#495057")
        names = [line.experiment for line in lines]
        labels = [  # the model too where one experiment has several lines (a user's models side by side)
            _wrap(line.experiment + (f" · {line.model}" if names.count(line.experiment) > 1 else ""), 34)
            for line in lines
        ]
        labels = [
            label if line.measure == MEDIAN else f"{label}\n({line.measure})"
            for label, line in zip(labels, lines, strict=True)
        ]
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_ylim(n - 0.5, -0.5)
        ax.set_xlim(0, 1.12)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
        _percent_axis(ax.xaxis)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel(
            "ours (coloured by verdict) and the paper's (grey); median best confidence unless noted"
        )
        used = [v for v in VERDICT_COLOURS if any(line.judge()[0] == v for line in lines)]
        handles = [Patch(color=VERDICT_COLOURS[v], label=f"ours: {v}") for v in used]
        handles.append(Patch(color=PAPER_COLOUR, label="the paper"))
        fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False, fontsize=8)
        _save(fig, path)


def panels(groups: Sequence, path: Path, references: Sequence | None = None) -> None:
    """Small multiples: one panel per group (an attack on a model), a thin line per seed and their
    median bold, on a logit confidence axis (so 99% and 99.99% are apart) and a log evaluation axis
    where the budget spans two orders of magnitude. Where the paper's figure is a median confidence with
    a budget in the same unit, it is marked, so that the gap between the two budgets is seen, not read."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    columns = min(len(groups), 3)
    rows = -(-len(groups) // columns)
    width = {1: 6.0, 2: 4.6}.get(columns, 3.6)  # a lone panel need not be small
    with plain_text():
        fig = _figure(width * columns + 0.4, 2.8 * rows + 0.3)
        axes = np.atleast_1d(fig.subplots(rows, columns, sharey=True, squeeze=False)).ravel()
        references = list(references or [None] * len(groups))
        for ax, group, ref in zip(axes, groups, references, strict=False):
            steps = group.first.method == "gradient"
            curves = [_curve(run, steps) for run in group.runs]
            for x, yv in curves if len(curves) > 1 else []:
                ax.plot(x, yv, linewidth=0.8, alpha=0.45, color="#1f77b4")
            x, yv = _median_curve(curves)
            ax.plot(
                x, yv, linewidth=2.2, color="#1f77b4", label="median of seeds" if len(curves) > 1 else "ours"
            )
            unit = "steps" if steps else "evaluations"
            marked = ref is not None and ref.measure == MEDIAN and ref.value is not None and ref.unit == unit
            if marked and ref.budget:
                ax.plot(
                    [ref.budget], [ref.value], marker="D", color="#495057", linestyle="", label="the paper"
                )
            hi = max(x.max(), ref.budget if marked and ref.budget else 0)
            if hi / max(x.min(), 1) >= 100:
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(FuncFormatter(_short_number))
            ax.set_yscale("logit")
            ax.yaxis.set_major_locator(FixedLocator(LOGIT_TICKS[0]))
            ax.yaxis.set_minor_locator(FixedLocator([]))
            ax.set_yticklabels(LOGIT_TICKS[1])
            ax.set_ylim(5e-5, 1 - 5e-7)
            ax.set_xlabel("gradient steps" if steps else "evaluations (images scored)")
            seeds = f" ({len(curves)} seeds)" if len(curves) > 1 else ""
            ax.set_title(_wrap(group.title + seeds, 44), fontsize=9, loc="left")
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
        for ax in axes[len(groups) :]:
            ax.set_visible(False)
        axes[0].set_ylabel("median best confidence")
        _save(fig, path)


def _short_number(value: float, _position=None) -> str:
    """Tick labels of a log axis without mathtext: 100, 1k, 10k, 1M."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _curve(run: Run, steps: bool) -> tuple[np.ndarray, np.ndarray]:
    m = run.metrics
    x = (
        m["generation"].to_numpy(dtype=float)
        if steps and "generation" in m
        else m["evaluations"].to_numpy(dtype=float)
    )
    if steps:
        x = np.maximum(x, 1)  # step 0 (the starting noise) sits at step 1 on a log axis
    y = np.clip(m["median_confidence"].to_numpy(dtype=float), 1e-4, 1 - 1e-6)
    return x, y


def _median_curve(curves) -> tuple[np.ndarray, np.ndarray]:
    """The seeds' median at every x of the shortest run (runs of one preset share their x)."""
    x = min((c[0] for c in curves), key=lambda a: a[-1])
    ys = np.stack([np.interp(x, cx, cy) for cx, cy in curves])
    return x, np.median(ys, axis=0)


def _wrap(title: str, width: int = 36) -> str:
    """A title on lines of at most `width` characters, broken at spaces only (model names keep hyphens)."""
    return "\n".join(textwrap.wrap(title, width, break_on_hyphens=False) or [title])


def defence_curve(defence: Defence, path: Path) -> bool:
    """median_confidence, fooled_share and clean_accuracy over the defence's iterations, where present."""
    t = defence.table
    lines = [(c, name) for c, name in DEFENCE_LINES if c in t and np.issubdtype(t[c].dtype, np.number)]
    if not lines:
        return False
    x = t["iteration"].to_numpy() if "iteration" in t else np.arange(len(t))
    with plain_text():
        fig = _figure(9, 3.6)
        ax = fig.subplots()
        for column, name in lines:
            ax.plot(x, t[column].to_numpy(dtype=float), marker="o", label=name, linewidth=1.6)
        ax.set_ylim(-0.02, 1.02)
        _percent_axis(ax.yaxis)
        ax.set_xlabel("defence iteration (0: the original model)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        fig.legend(loc="outside lower center", ncols=2, frameon=False)
        _save(fig, path)
    return True


def transfer_heatmap(matrix, title: str, path: Path) -> None:
    from foolbench.transfer_stats import heatmap

    with plain_text():
        heatmap(matrix, title, path)
