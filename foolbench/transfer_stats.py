"""The transfer statistics: what each one means, and their matrices drawn as heatmaps.

`experiments/transfer` computes them (per source and target model) and the report shows them; both
take the names and the drawing from here.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from foolbench.fileio import atomic_path
from foolbench.text import percent

# statistic column -> what it means (also the heatmap title)
STATISTICS = {
    "median_confidence": "median target confidence for the champion's class",
    "fraction_at_99": "share of champions at >= 99% on the target",
    "fraction_at_50": "share of champions at >= 50% on the target",
    "top1_match": "share whose target top-1 is the champion's class",
}


def heatmap(m: pd.DataFrame, title: str, path: Path) -> None:
    """A matrix as an annotated heatmap (no pyplot: no global state, works without a display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, cols = m.shape
    fig = Figure(figsize=(max(6.0, 1.4 * cols + 3.5), max(3.5, 0.8 * rows + 2.4)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = m.to_numpy(dtype=float)
    im = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(rows):
        for j in range(cols):
            v = values[i, j]
            text = "–" if np.isnan(v) else percent(v)
            ax.text(j, i, text, ha="center", va="center", color="black" if v >= 0.6 else "white", fontsize=9)
    ax.set_xticks(range(cols), [str(c) for c in m.columns], rotation=30, ha="right")
    ax.set_yticks(range(rows), [str(r) for r in m.index])
    ax.set_xlabel("target model (scores the PNGs)")
    ax.set_ylabel("source model (evolved against)")
    ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.subplots_adjust(left=0.22, right=0.92, bottom=0.25, top=0.85)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
