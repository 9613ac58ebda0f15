"""The headline: one line per experiment with our figure, the paper's, both budgets and a verdict.

A verdict is a stated rule, not a judgement call (`RULE`, printed on the page):
- reproduced: our figure is within `TOLERANCE` of the paper's, or, for an effect the paper reports
  (images transfer, confidence falls after retraining, fooling images score above real ones), ours
  goes the same way;
- reproduced at a smaller budget: the same, with at most half the paper's evaluations (or steps);
- not reproduced: neither;
- not measured: the experiment could not show the paper's effect (a defence whose first iteration's
  champions do not fool the model has no fooling to take away);
- beyond the paper: a search the paper did not run (the patch search), with no paper figure for it;
- no paper figure: the paper gives nothing to compare with.
A figure made with another method than the paper's (an ensemble, a transfer or a defence fed by the
patch search) is judged by the same rule, and its verdict says by which method.

The paper's figures live here (`REFERENCES`), keyed by what an experiment is (dataset, method,
encoding, ensemble; or transfer / defence / baseline), so that `foolbench report` on anyone's runs
of a paper preset gets the same comparison as `foolbench paper`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from foolbench.text import percent

TOLERANCE = 0.05  # five percentage points
SMALLER = 2.0  # "at a smaller budget": the paper spent at least this many times our budget
REPRODUCED = "reproduced"
REPRODUCED_SMALLER = "reproduced at a smaller budget"
NOT_REPRODUCED = "not reproduced"
NOT_MEASURED = "not measured"
BEYOND = "beyond the paper"
NO_FIGURE = "no paper figure"
VERDICTS = (REPRODUCED, REPRODUCED_SMALLER, NOT_REPRODUCED, NOT_MEASURED, BEYOND, NO_FIGURE)
FOOLED = 0.5  # a defence starts from fooling images when its first iteration's median is at least this
RULE = (
    f"Verdict rule: reproduced when our figure is within {TOLERANCE * 100:.0f} percentage points of the "
    "paper's, or, where the paper reports an effect (images transfer to another model, confidence falls "
    "after retraining, fooling images score above real ones, an ensemble is fooled on as many classes), "
    f"when ours goes the same way; at a smaller budget when we spent at most 1/{SMALLER:.0f} of the "
    "paper's evaluations (or steps); otherwise not reproduced. Not measured: a defence whose first "
    f"iteration's median is below {FOOLED:.0%} has no fooling to take away. A figure from another method "
    "than the paper's says so in its verdict; a search the paper did not run is beyond the paper. A budget "
    "counts the images scored to reach the figure: initial population + generations × batch."
)


@dataclass(frozen=True)
class Reference:
    """A figure of the paper: what it measures, its value (None: the paper states an effect only)."""

    measure: str
    value: float | None
    text: str  # as the paper puts it
    model: str
    budget: float | None = None
    unit: str = "evaluations"


def _evals(init: int, generations: int, batch: int) -> int:
    return init + generations * batch


MEDIAN = "median best confidence per class"
REFERENCES: dict[tuple, Reference] = {
    ("mnist", "map-elites", "direct", False): Reference(
        MEDIAN, 0.9999, "99.99% by generation 200 (Fig. 4)", "LeNet (Caffe)", _evals(200, 200, 200)
    ),
    ("mnist", "map-elites", "cppn", False): Reference(
        MEDIAN, 0.9999, "99.99% by generation 200 (Fig. 5)", "LeNet (Caffe)", _evals(200, 200, 200)
    ),
    ("imagenet", "map-elites", "direct", False): Reference(
        MEDIAN, 0.2159, "21.59%; 45 of 1000 classes ≥ 99%", "AlexNet", _evals(200, 5010, 200)
    ),
    ("imagenet", "map-elites", "cppn", False): Reference(
        MEDIAN, 0.8811, "88.11%; many classes ≥ 99%", "AlexNet", _evals(400, 5001, 400)
    ),
    ("imagenet", "map-elites", "cppn", True): Reference(
        "share of classes ≥ 90%", 0.231, "231 of 1000 classes", "ImageNet ensemble", _evals(400, 4000, 400)
    ),
    ("mnist", "gradient", "", False): Reference(MEDIAN, 0.9999, "99.99%", "LeNet (Caffe)", 300, "steps"),
    ("imagenet", "gradient", "", False): Reference(MEDIAN, 0.9999, "99.99%", "AlexNet", 300, "steps"),
    ("transfer", "transfer-seeds"): Reference(
        "share of champions ≥ 99% on another model",
        None,
        "“often” fool a twin trained with another seed",
        "twins (LeNet, AlexNet)",
    ),
    ("transfer", "transfer-arch"): Reference(
        "share of champions ≥ 99% on another model", 0.20, "about 20%", "AlexNet → GoogLeNet"
    ),
    ("defence", "mnist"): Reference(
        "lowest median of new champions over the iterations",
        0.9999,
        "99.99% in every one of 15 iterations",
        "LeNet + a fooling class",
        _evals(200, 200, 200),
    ),
    ("defence", "imagenet"): Reference(
        "median of new champions after retraining",
        0.117,
        "88.1% → 11.7%",
        "AlexNet + a fooling class",
        _evals(400, 5001, 400),
    ),
    ("baseline",): Reference(
        "median top-1 confidence on real images",
        0.603,
        "real 60.3% (right 86.7%, wrong 33.7%), fooling 88.1%",
        "AlexNet, ImageNet validation set",
    ),
}


@dataclass
class Line:
    """One experiment's figure beside the paper's. `effect` says whether our result goes the way the
    paper's effect goes (None where the line compares values only)."""

    section: str  # anchor of the page section that shows the experiment
    experiment: str
    model: str
    ours: float
    ours_text: str
    reference: Reference | None
    budget: float | None = None
    unit: str = "evaluations"
    effect: bool | None = None
    effect_text: tuple[str, str] = ("", "")  # the effect as ours shows it: (when it holds, when not)
    detail: str = ""
    outputs: list[str] = field(default_factory=list)
    method: str = ""  # the search behind our figure where it is not the paper's (e.g. "the patch search")
    unmeasured: str = ""  # why the figure cannot show the paper's effect (verdict: not measured)
    data: str = ""  # the real images the figure used, where it used any

    @property
    def measure(self) -> str:
        return self.reference.measure if self.reference else MEDIAN

    def judge(self) -> tuple[str, str]:
        """The verdict and why, by `RULE`."""
        ref = self.reference
        if ref is None or (ref.value is None and self.effect is None):
            if self.method:
                return BEYOND, f"{self.method}: a search the paper did not run, so it has no figure for it"
            return NO_FIGURE, "the paper has no figure for this"
        if self.unmeasured:
            return NOT_MEASURED, self.unmeasured + self._by()
        gap = None if ref.value is None else self.ours - ref.value
        close = gap is not None and abs(gap) <= TOLERANCE + 1e-12
        if close:
            why = f"within {TOLERANCE * 100:.0f} points"
        elif self.effect is not None:
            why = self.effect_text[0] if self.effect else self.effect_text[1]
        else:
            why = f"{abs(gap) * 100:.0f} points {'below' if gap < 0 else 'above'}"
        ratio = self.budget_ratio()
        if ratio is not None and ratio >= SMALLER:
            why += f"; 1/{ratio:,.0f} of the paper's budget"
        why += self._by()
        if not (close or self.effect):
            return NOT_REPRODUCED, why
        return (REPRODUCED_SMALLER if ratio is not None and ratio >= SMALLER else REPRODUCED), why

    def _by(self) -> str:
        return f"; by {self.method}, not the paper's method" if self.method else ""

    def budget_ratio(self) -> float | None:
        """The paper's budget over ours, where both are known in the same unit."""
        ref = self.reference
        if ref is None or ref.budget is None or not self.budget or ref.unit != self.unit:
            return None
        return ref.budget / self.budget

    def record(self) -> dict:
        """The line as a flat row (headline.csv): values at full precision, texts as on the page."""
        verdict, why = self.judge()
        ref = self.reference
        return {
            "section": self.section,
            "experiment": self.experiment,
            "measure": self.measure,
            "model": self.model,
            "ours": self.ours,
            "ours_text": self.ours_text,
            "paper": ref.value if ref else None,
            "paper_text": ref.text if ref else "",
            "paper_model": ref.model if ref else "",
            "budget": self.budget,
            "paper_budget": ref.budget if ref else None,
            "budget_unit": self.unit,
            "verdict": verdict,
            "why": why,
            "detail": self.detail,
            "data": self.data,
            "outputs": "; ".join(self.outputs),
        }


def budget_text(value: float | None, unit: str) -> str:
    """40,200 / 2.0 M / 300 steps: budgets differ by orders of magnitude, so large ones are rounded."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    unit = {"evaluations": "evals"}.get(unit, unit)
    if value >= 1e6:
        return f"{value / 1e6:.1f} M {unit}"
    return f"{value:,.0f} {unit}"


def median(values) -> float:
    return float(statistics.median(values))


def share_text(fraction: float) -> str:
    """A share of images or classes: whole percent unless it is small."""
    return f"{fraction:.0%}" if fraction == 0 or fraction >= 0.01 else f"{fraction:.1%}"


def median_text(value: float) -> str:
    return percent(value)
