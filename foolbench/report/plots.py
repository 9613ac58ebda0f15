"""The report's plots (matplotlib, PNG): confidence over evaluations, the distribution of the best
confidences, defence iterations, and (through `experiments.transfer.heatmap`) transfer matrices.

Figures are made with matplotlib's object API, not pyplot: no global state, no display needed.
Labels and model names come from users' files, so mathtext is off: a `$` in a label stays a `$`.
All figures are at most 9 inches wide at 100 dpi, so the HTML page shows them at their own size.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from foolbench.fileio import atomic_path
from foolbench.report.collect import Defence, Run

DPI = 100
THRESHOLDS = (("classes_at_90", "≥ 90%"), ("classes_at_99", "≥ 99%"), ("classes_at_9999", "≥ 99.99%"))
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


def run_curve(run: Run, path: Path) -> None:
    """One run: median / mean / best confidence over evaluations, and classes over each threshold."""
    m = run.metrics
    with plain_text():
        fig = _figure(9, 5.2)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
        x = m["evaluations"].to_numpy()
        for column, name in (
            ("max_confidence", "best"),
            ("median_confidence", "median"),
            ("mean_confidence", "mean"),
        ):
            if column in m:
                top.plot(x, m[column].to_numpy(), label=name, linewidth=1.6)
        top.set_ylim(-0.02, 1.02)
        _percent_axis(top.yaxis)
        top.set_ylabel("confidence of the\nbest image per class")
        top.legend(loc="best", framealpha=0.9)
        top.grid(alpha=0.3)
        for (column, name), colour in zip(THRESHOLDS, ("#8c564b", "#9467bd", "#d62728"), strict=True):
            if column in m:
                bottom.step(x, m[column].to_numpy(), where="post", label=name, linewidth=1.4, color=colour)
        bottom.set_ylim(-0.5, max(1, int(run.summary.get("classes") or len(run.results))) + 0.5)
        bottom.set_ylabel("classes at or\nabove a confidence")
        bottom.set_xlabel("evaluations (images scored)")
        bottom.legend(loc="best", framealpha=0.9, ncols=3)
        bottom.grid(alpha=0.3)
        top.set_title(run.title, loc="left", fontsize=10)
        _save(fig, path)


def median_curves(runs: Sequence[Run], path: Path) -> None:
    """All runs' median confidence over evaluations on one axis: which attack gets there first."""
    with plain_text():
        fig = _figure(9, 4.2 + 0.2 * ((len(runs) + 1) // 2))
        ax = fig.subplots()
        for run in runs:
            ax.plot(
                run.metrics["evaluations"], run.metrics["median_confidence"], label=run.title, linewidth=1.5
            )
        ax.set_ylim(-0.02, 1.02)
        _percent_axis(ax.yaxis)
        ax.set_xlabel("evaluations (images scored)")
        ax.set_ylabel("median confidence over classes")
        ax.grid(alpha=0.3)
        fig.legend(loc="outside lower center", ncols=2, frameon=False)
        _save(fig, path)


def distribution(runs: Sequence[Run], path: Path) -> None:
    """Each run's best confidence per class, on a logit axis so that 99% and 99.99% are apart."""
    from matplotlib.ticker import FixedLocator

    rng = np.random.default_rng(0)  # jitter only; the same figure every time
    with plain_text():
        fig = _figure(9, 1.2 + 0.55 * len(runs))
        ax = fig.subplots()
        for i, run in enumerate(runs):
            c = np.clip(run.results["confidence"].to_numpy(dtype=float), 1e-6, 1 - 1e-6)
            y = len(runs) - 1 - i + rng.uniform(-0.18, 0.18, len(c))
            ax.scatter(c, y, s=16, alpha=0.7, linewidths=0)
            ax.plot([np.median(c)] * 2, [y.mean() - 0.3, y.mean() + 0.3], color="black", linewidth=1.5)
        ax.set_xscale("logit")
        ticks = [1e-4, 0.01, 0.5, 0.99, 0.9999, 1 - 1e-6]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(FixedLocator([]))
        ax.set_xticklabels(["0.01%", "1%", "50%", "99%", "99.99%", "≥ 99.9999%"])
        ax.set_xlim(5e-7, 1 - 5e-7)
        ax.set_yticks(range(len(runs)), [_wrap(r.title) for r in reversed(runs)])
        ax.set_ylim(-0.6, len(runs) - 0.4)
        ax.set_xlabel("best confidence per class (one dot per class, bar: median)")
        ax.grid(axis="x", alpha=0.3)
        _save(fig, path)


def _wrap(title: str, width: int = 36) -> str:
    """A run title on lines of at most `width` characters, broken between its parts (model · attack ·
    seed), and inside a part only where the part alone is too long."""
    lines: list[str] = []
    for part in title.split(" · "):
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " · " + part
        else:
            lines += textwrap.wrap(part, width, break_on_hyphens=False) or [part]
    return "\n".join(lines)


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
