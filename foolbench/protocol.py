"""Scoring protocols: the attacks, budgets, seeds and target classes that make one leaderboard row.

A protocol is a versioned TOML file, `attacks/protocols/<version>.toml` (see v1.toml for the
reasoning behind its numbers). It holds one *suite* of attacks per kind of input (grey, colour), so
any classifier can be scored: the model's channel count picks the suite, its input size the
resolution, its class count the target classes. Each attack names a preset in `attacks/` and the
budget the protocol gives it; `preset_tables` turns that into a complete preset for one model, which
`experiments/score.py` writes beside the runs so every run can be repeated with `foolbench run`.

Like presets, every key is checked: unknown keys and bad values are one-line errors naming them.

How a row is ranked is the protocol's too (`[protocol] score` and `headline`):
- v1 (`score = "median"`, `headline = "mean"`): the mean over the ranked attacks of the median best
  confidence. It saturates: most MNIST models tie at 99.99 %.
- v2 (`score = "nines-auc"`, `headline = "worst"`): each run's curve of the targets' median
  confidence over log-evaluations, on a "nines" scale (`curve_score`), so a model the attack needs
  10x longer to fool scores lower even when both end at 99.99 %; a run's target classes whose
  champion looks like a real image of the class count as not fooled (`lookalikes = true`); and the
  headline is the worst case over the attacks, as in AutoAttack: a model is as robust as the
  strongest attack leaves it.
- v3 (`score = "real-rank"`): a champion counts by where its confidence falls among the model's
  own confidences on the real images of its suite that it classifies correctly (`fooled_share`),
  so squashing confidence changes nothing; each run is read at query counts along one axis
  (`rank_curve`, `curve_area`); suites pick models by channels and input side (or the card's
  dataset) and name their real images and judge. `experiments/score_v3.py` applies it.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foolbench.errors import FoolbenchError
from foolbench.options import Bool, Choice, Counts, Float, Int, Seeds, Table, Text, Texts, check_table
from foolbench.presets import ATTACKS_DIR, load_preset
from foolbench.search import engine_type

PROTOCOLS_DIR = ATTACKS_DIR / "protocols"
DEFAULT_PROTOCOL = "v3"  # the one a score gets unless it names another (cli and api say the same)
_BUDGET_KEYS = ("generations", "evaluations", "seconds", "seed")

# table -> key -> rule (foolbench.options)
_PROTOCOL_KEYS = {
    "version": Text(),
    "description": Text(),
    "seeds": Seeds(),
    "all_classes_up_to": Int(1, 1_000_000),
    "sample_classes": Int(1, 1_000_000),
    "ranked": Texts(),
    "score": Choice(("median", "nines-auc", "real-rank")),
    "headline": Choice(("mean", "worst")),  # experiments.score.HEADLINES
    "lookalikes": Bool(),
    "never_target": Texts(),
}
NINES_CAP = 4.0  # 99.99 %, the paper's threshold: beyond it a model is as fooled as it gets
GRID = 256  # log-spaced evaluation counts the curve is read at
JUDGES = ("lookalike",)  # foolbench.judges: who decides that a champion shows its class
_SUITE_KEYS = {
    "channels": Choice((1, 3)),
    "min_side": Int(1, 100_000),  # the model's larger input side, inclusive
    "max_side": Int(1, 100_000),
    "datasets": Texts(),  # a model whose card names one of these gets this suite, whatever its input
    "crop": Choice(("center", "ten")),
    "attacks": Table(),
    "data": Text(),  # v3: the labelled real images (foolbench.data.labelled), unless --data is given
    "judge": Choice(JUDGES),  # v3: who marks champions that show their class as not fooled
    "min_accuracy": Float(0.0, 1.0),  # v3: below this accuracy on the real images a row is not ranked
    "queries": Counts(),  # v3: model queries the runs are read at; the curve spans first to last
}
_ATTACK_KEYS = {
    "preset": Text(),
    "evaluations": Int(1, 10**12),
    "steps": Int(1, 10_000_000),
    "batch": Int(1, 100_000),
}
_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")  # attack names become column names and folder names
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")


@dataclass(frozen=True)
class ProtocolAttack:
    name: str  # the leaderboard's column prefix: cppn_median, ...
    preset: str
    method: str  # map-elites (budget: evaluations, batch), patch (evaluations), gradient(-cppn) (steps)
    evaluations: int | None = None
    steps: int | None = None
    batch: int | None = None


@dataclass(frozen=True)
class Suite:
    name: str
    channels: int
    crop: str | None
    attacks: tuple[ProtocolAttack, ...]
    min_side: int = 1
    max_side: int = 100_000
    datasets: tuple[str, ...] = ()
    data: str | None = None
    judge: str | None = None
    min_accuracy: float = 0.0
    queries: tuple[int, ...] = ()

    def takes(self, channels: int, side: int | None = None) -> bool:
        """Whether a model with this many channels and this larger input side belongs here."""
        return channels == self.channels and (side is None or self.min_side <= side <= self.max_side)


@dataclass(frozen=True)
class Protocol:
    version: str
    source: str
    seeds: tuple[int, ...]
    all_classes_up_to: int
    sample_classes: int
    ranked: tuple[str, ...]
    suites: dict[str, Suite]
    score: str = "median"  # how one run is measured: "median" (v1) or "nines-auc" (v2)
    headline: str = "mean"  # fooling_score over the ranked attacks: their "mean" or the "worst" case
    lookalikes: bool = False  # classes whose champion looks like a real image count as not fooled
    never_target: tuple[str, ...] = ()  # labels never attacked (the retraining defence's "fooling")

    def suite_for(self, channels: int, side: int | None = None, dataset: str | None = None) -> Suite:
        """The suite for a model: the one naming its card's dataset, else the one taking its channels
        and larger input side (any side when `side` is None)."""
        for suite in self.suites.values():
            if dataset and dataset.lower() in suite.datasets and suite.channels == channels:
                return suite
        for suite in self.suites.values():
            if suite.takes(channels, side):
                return suite
        have = ", ".join(f"{s.name} ({_takes_text(s)})" for s in self.suites.values())
        size = f"{channels}-channel models" + (f" {side} pixels wide" if side is not None else "")
        raise FoolbenchError(
            f"protocol {self.version} has no suite for {size} (it has {have}); score it under another "
            "protocol (--protocol v2), or pass --channels/--input-size if its input was read wrongly"
        )

    def classes_for(self, k: int, labels: list[str] | None = None) -> list[int]:
        """Every class for K <= all_classes_up_to; else `sample_classes` spread evenly: floor(i*K/n).
        Classes labelled as in `never_target` are left out: a defended model's "fooling" class is
        where a fooling image should go, not a class to fool it into."""
        skip = {i for i, label in enumerate(labels or []) if label in self.never_target}
        if k <= self.all_classes_up_to:
            return [c for c in range(k) if c not in skip]
        n = min(self.sample_classes, k)
        return [c for c in (i * k // n for i in range(n)) if c not in skip]

    @property
    def attack_names(self) -> list[str]:
        """Every attack of every suite, in file order (the leaderboard's column order)."""
        return list(dict.fromkeys(a.name for s in self.suites.values() for a in s.attacks))

    def preset_tables(
        self, attack: ProtocolAttack, suite: Suite, resolution: int, classes: list[int]
    ) -> dict:
        """The complete preset of `attack` for one model: the named preset with the protocol's budget,
        the model's resolution and channels, the protocol's classes and crop."""
        base = load_preset(attack.preset, "full")
        tables = {
            "attack": {k: v for k, v in base.attack.items() if k != "model"}
            | {
                "name": f"score-{self.version}-{attack.name}",
                "description": f"protocol {self.version}, suite {suite.name}, attack {attack.name} "
                f"(from preset {attack.preset})",
            },
            "search": {k: v for k, v in base.search.items() if k not in _BUDGET_KEYS} | {"classes": classes},
            "evaluation": dict(base.evaluation),
        }
        if suite.queries:  # v3 reads each run at these query counts (runner.write_snapshot)
            budget = attack.evaluations or math.inf
            tables["search"]["snapshots"] = [q for q in suite.queries if q < budget]
        if suite.crop:
            tables["evaluation"]["crop"] = suite.crop
        else:  # a preset made for ImageNet (ten crops of 224 from 256) must not crop a digit model
            tables["evaluation"].pop("crop", None)
        if stepped(attack.method):  # gradient ascent (on pixels or a CPPN): a budget in steps
            section = engine_type(attack.method).section
            tables[section] = base.tables[section] | {
                "steps": attack.steps,
                "resolution": resolution,
                "channels": suite.channels,
            }
        elif attack.method == "patch":  # the squares shrink over the protocol's budget
            tables["patch"] = base.tables["patch"] | {
                "resolution": resolution,
                "channels": suite.channels,
                "schedule": attack.evaluations,
            }
            tables["search"]["evaluations"] = attack.evaluations
        else:
            if base.encoding:  # engines that render through an encoding draw at the model's size
                tables["encoding"] = base.encoding | {"resolution": resolution, "channels": suite.channels}
            tables["search"]["evaluations"] = attack.evaluations
            if attack.batch is not None:
                tables["search"] |= {"batch": attack.batch, "init": attack.batch}
        return {k: v for k, v in tables.items() if v}


def protocol_path(ref: str) -> Path:
    """A protocol file, or a version name looked up in attacks/protocols/ (`v1`)."""
    path = Path(ref)
    if path.suffix == ".toml" and path.is_file():
        return path
    named = PROTOCOLS_DIR / f"{ref}.toml"
    if "/" not in ref and _VERSION.fullmatch(ref) and named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in PROTOCOLS_DIR.glob("*.toml")))
    raise FoolbenchError(f"protocol '{ref}' not found; pass a .toml file or one of: {known}")


def load_protocol(ref: str = DEFAULT_PROTOCOL) -> Protocol:
    path = protocol_path(ref)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FoolbenchError(f"{path}: not valid TOML ({e})") from None
    return protocol_from_dict(data, str(path))


def protocol_from_dict(data: dict, source: str) -> Protocol:
    unknown = sorted(set(data) - {"protocol", "suite"})
    if unknown:
        raise FoolbenchError(f"{source}: unknown section [{unknown[0]}]; known: protocol, suite")
    head = _table(data.get("protocol"), "[protocol]", source)
    _check_keys(head, _PROTOCOL_KEYS, "protocol", source)
    for key in ("version", "seeds"):
        if key not in head:
            raise FoolbenchError(f"{source}: [protocol] needs '{key}'")
    if not _VERSION.fullmatch(head["version"]):
        raise FoolbenchError(
            f"{source}: 'protocol.version' must be letters, digits, '.', '_' or '-' (at most 32), "
            f"got {head['version']!r}"
        )
    suites = {
        name: _suite(name, value, source)
        for name, value in _table(data.get("suite"), "[suite]", source).items()
    }
    if not suites:
        raise FoolbenchError(f"{source}: the protocol has no [suite.NAME] tables")
    listed = list(suites.values())
    for i, a in enumerate(listed):
        for b in listed[i + 1 :]:
            if a.channels == b.channels and a.min_side <= b.max_side and b.min_side <= a.max_side:
                raise FoolbenchError(
                    f"{source}: suites {a.name} and {b.name} both take {a.channels}-channel models of "
                    "some size; give them min_side/max_side ranges that do not overlap, so a model gets one suite"
                )
    score = head.get("score", "median")
    for suite in listed if score == "real-rank" else []:
        if not suite.queries:
            raise FoolbenchError(
                f"{source}: [suite.{suite.name}] needs 'queries' (the model queries its runs are read at)"
            )
    ranked = tuple(head.get("ranked", []))
    for suite in suites.values():
        missing = [a for a in ranked if a not in {x.name for x in suite.attacks}]
        if missing:
            raise FoolbenchError(
                f"{source}: ranked attack '{missing[0]}' is not in suite {suite.name}; "
                "every suite must run the attacks the ranking uses"
            )
    return Protocol(
        version=head["version"],
        source=source,
        seeds=tuple(head["seeds"]),
        all_classes_up_to=head.get("all_classes_up_to", 100),
        sample_classes=head.get("sample_classes", 10),
        ranked=ranked,
        suites=suites,
        score=score,
        headline=head.get("headline", "mean"),
        lookalikes=head.get("lookalikes", False),
        never_target=tuple(head.get("never_target", [])),
    )


def _suite(name: str, value, source: str) -> Suite:
    where = f"suite.{name}"
    table = _table(value, f"[{where}]", source)
    _check_keys(table, _SUITE_KEYS, where, source)
    if not _NAME.fullmatch(name):
        raise FoolbenchError(f"{source}: suite name '{name}' must be lower-case letters, digits and '-'")
    if "channels" not in table:
        raise FoolbenchError(f"{source}: [{where}] needs 'channels' (1 or 3)")
    attacks = _table(table.get("attacks"), f"[{where}.attacks]", source)
    if not attacks:
        raise FoolbenchError(f"{source}: [{where}] has no attacks; add [{where}.attacks.NAME] tables")
    low, high = table.get("min_side", 1), table.get("max_side", 100_000)
    if low > high:
        raise FoolbenchError(f"{source}: [{where}] min_side {low} is above max_side {high}")
    return Suite(
        name=name,
        channels=table["channels"],
        crop=table.get("crop"),
        attacks=tuple(_attack(a, v, f"{where}.attacks.{a}", source) for a, v in attacks.items()),
        min_side=low,
        max_side=high,
        datasets=tuple(d.lower() for d in table.get("datasets", [])),
        data=table.get("data"),
        judge=table.get("judge"),
        min_accuracy=table.get("min_accuracy", 0.0),
        queries=tuple(table.get("queries", [])),
    )


def _takes_text(suite: Suite) -> str:
    """Which models a suite takes, in a few words: '1 channel', '3 channels, 65+ px'."""
    text = f"{suite.channels} channel" + ("s" if suite.channels > 1 else "")
    if suite.max_side < 100_000:
        return f"{text}, {suite.min_side}-{suite.max_side} px"
    return f"{text}, {suite.min_side}+ px" if suite.min_side > 1 else text


def _attack(name: str, value, where: str, source: str) -> ProtocolAttack:
    table = _table(value, f"[{where}]", source)
    _check_keys(table, _ATTACK_KEYS, where, source)
    if not _NAME.fullmatch(name):
        raise FoolbenchError(
            f"{source}: attack name '{name}' must be lower-case letters, digits and '-' (it names columns)"
        )
    if "preset" not in table:
        raise FoolbenchError(f"{source}: [{where}] needs 'preset' (a preset in attacks/)")
    try:
        method = load_preset(table["preset"]).method
    except FoolbenchError as e:
        raise FoolbenchError(f"{source}: [{where}] {e}") from None
    budget = "steps" if stepped(method) else "evaluations"
    allowed = ("steps",) if stepped(method) else ("evaluations", "batch")
    wrong = [k for k in table if k in ("evaluations", "steps", "batch") and k not in allowed]
    if wrong or budget not in table:
        allowed = "'steps'" if stepped(method) else "'evaluations' (and optionally 'batch')"
        raise FoolbenchError(f"{source}: [{where}] is a {method} attack; its budget is {allowed}")
    return ProtocolAttack(
        name=name,
        preset=table["preset"],
        method=method,
        **{k: table.get(k) for k in _ATTACK_KEYS if k != "preset"},
    )


def stepped(method: str) -> bool:
    """Whether the method's budget is in steps (gradient ascent) rather than evaluations."""
    return engine_type(method).budget_key == "steps"


def _table(value, where: str, source: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FoolbenchError(f"{source}: {where} must be a table of keys")
    return value


def _check_keys(table: dict, rules: dict, where: str, source: str) -> None:
    try:
        check_table(table, rules, where)
    except FoolbenchError as e:
        raise FoolbenchError(f"{source}: {e}") from None


def toml_text(tables: dict, comment: str = "") -> str:
    """A preset's tables as TOML. Values are text, numbers, booleans and lists of them, which JSON
    writes exactly as TOML does, so no TOML writer is needed."""
    lines = [f"# {line}" for line in comment.splitlines()]
    for section, values in tables.items():
        lines += ["", f"[{section}]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


# -- the v2 measure ----------------------------------------------------------------------------------
def nines(confidence) -> np.ndarray:
    """-log10(1 - p), capped at NINES_CAP: 90 % -> 1, 99 % -> 2, 99.99 % -> 4."""
    p = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0 - 10.0**-NINES_CAP)
    return np.minimum(-np.log10(1.0 - p), NINES_CAP)


def curve_score(evaluations, median_confidence) -> float:
    """How fast and how far a run fooled the model, in [0, 1]: the mean over log-spaced evaluation
    counts, from the run's first scored generation to its last, of the targets' median confidence
    then (the last value reached by that count) in nines / NINES_CAP.

    1 means the median was at 99.99 % from the first generation; a model that takes ten times as many
    evaluations to reach the same confidence scores lower, so models keep separating after the
    median saturates. The evaluation axis is logarithmic because budgets differ by orders of
    magnitude, and the first generations are where robust and fragile models part."""
    e = np.asarray(evaluations, dtype=np.float64)
    m = np.asarray(median_confidence, dtype=np.float64)
    if len(e) == 0 or len(e) != len(m):
        raise FoolbenchError("a run's curve needs its evaluations and median confidences, one per generation")
    if len(e) == 1 or e[-1] <= e[0]:
        return float(nines(m[-1]) / NINES_CAP)
    grid = np.geomspace(max(e[0], 1.0), e[-1], GRID)
    at = np.searchsorted(e, grid, side="right") - 1  # the last generation scored by then
    return float(np.mean(nines(m[np.maximum(at, 0)])) / NINES_CAP)


def run_score(curve: float, classes: int, lookalikes: int) -> float:
    """A run's v2 score: its curve score, scaled by the share of target classes whose champion is not
    a look-alike of a real image of the class (those count as not fooled at all)."""
    if classes <= 0 or not math.isfinite(curve):
        return math.nan
    return curve * (classes - lookalikes) / classes


# -- the v3 measure ----------------------------------------------------------------------------------
def fooled_share(confidence, real) -> np.ndarray:
    """Per fooling image: the share of the real images whose confidence is at most its own.

    `real` holds the model's confidences on the real images of the suite it classifies correctly.
    Only ranks matter, so any increasing squashing of confidence (a temperature, a log) leaves the
    share as it is; ties count as fooled, so a squashing that merges values (clipping, float32
    rounding to 1.0, a constant output) can only raise it: a model cannot look harder to fool by
    being less able to tell its images apart."""
    real = np.sort(np.asarray(real, dtype=np.float64).ravel())
    if not len(real):
        raise FoolbenchError(
            "the fooled share needs the confidences of some correctly classified real images"
        )
    confidence = np.asarray(confidence, dtype=np.float64)
    return np.searchsorted(real, np.nan_to_num(confidence, nan=-np.inf), side="right") / len(real)


def rank_curve(queries, shares) -> tuple[np.ndarray, np.ndarray]:
    """One run's curve: at each snapshot (model queries so far, increasing), the mean over target
    classes of the best share each class has reached by then (an image once found stays found).

    `shares` is [snapshots, classes], 0 where a class's champion was recognised (foolbench.judges)."""
    q = np.asarray(queries, dtype=np.float64)
    v = np.asarray(shares, dtype=np.float64)
    if v.ndim != 2 or len(q) != len(v) or not len(q) or np.any(np.diff(q) <= 0):
        raise FoolbenchError(
            "a run's curve needs one row of class shares per snapshot, in increasing queries"
        )
    return q, np.maximum.accumulate(v, axis=0).mean(axis=1)


def curve_area(curves: list[tuple[np.ndarray, np.ndarray]], start: float, end: float) -> float:
    """The mean over log-queries from `start` to `end` of the best of the curves at each count (the
    strongest attack with that many queries; 0 before a curve's first snapshot). A curve is a step
    function: its value at a snapshot holds until its next one, and its last value to the end.

    1: every class as fooled as the model's most confident real image from `start` on; a model an
    attack needs ten times the queries to fool scores lower even when both end fooled."""
    if not curves or not 0 < start < end:
        raise FoolbenchError("a curve area needs at least one curve and 0 < start < end")
    edges = np.unique(np.concatenate([[start, end], *[q[(q > start) & (q < end)] for q, _ in curves]]))
    best = np.max([_step(q, v, edges[:-1]) for q, v in curves], axis=0)
    widths = np.diff(np.log(edges))
    return float(np.sum(best * widths) / np.log(end / start))


def curve_at(curves: list[tuple[np.ndarray, np.ndarray]], queries: float) -> float:
    """The best of the curves after `queries` model queries."""
    return float(np.max([_step(q, v, np.array([queries]))[0] for q, v in curves]))


def _step(q: np.ndarray, v: np.ndarray, at: np.ndarray) -> np.ndarray:
    i = np.searchsorted(q, at, side="right") - 1
    return np.where(i >= 0, v[np.maximum(i, 0)], 0.0)
