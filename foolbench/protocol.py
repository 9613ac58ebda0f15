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
from foolbench.options import Bool, Choice, Int, Seeds, Table, Text, Texts, check_table
from foolbench.presets import ATTACKS_DIR, load_preset
from foolbench.search import engine_type

PROTOCOLS_DIR = ATTACKS_DIR / "protocols"
DEFAULT_PROTOCOL = "v1"
_BUDGET_KEYS = ("generations", "evaluations", "seconds", "seed")

# table -> key -> rule (foolbench.options)
_PROTOCOL_KEYS = {
    "version": Text(),
    "description": Text(),
    "seeds": Seeds(),
    "all_classes_up_to": Int(1, 1_000_000),
    "sample_classes": Int(1, 1_000_000),
    "ranked": Texts(),
    "score": Choice(("median", "nines-auc")),
    "headline": Choice(("mean", "worst")),  # experiments.score.HEADLINES
    "lookalikes": Bool(),
    "never_target": Texts(),
}
NINES_CAP = 4.0  # 99.99 %, the paper's threshold: beyond it a model is as fooled as it gets
GRID = 256  # log-spaced evaluation counts the curve is read at
_SUITE_KEYS = {"channels": Choice((1, 3)), "crop": Choice(("center", "ten")), "attacks": Table()}
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

    def suite_for(self, channels: int) -> Suite:
        """The suite for a model with this many input channels."""
        for suite in self.suites.values():
            if suite.channels == channels:
                return suite
        have = ", ".join(f"{s.name} ({s.channels})" for s in self.suites.values())
        raise FoolbenchError(
            f"protocol {self.version} has no suite for {channels}-channel models (it has {have}); "
            "pass --channels to say how the model wants its input"
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
    channels = [s.channels for s in suites.values()]
    if len(set(channels)) != len(channels):
        raise FoolbenchError(
            f"{source}: two suites are for the same channel count; a model must get one suite"
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
        score=head.get("score", "median"),
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
    return Suite(
        name=name,
        channels=table["channels"],
        crop=table.get("crop"),
        attacks=tuple(_attack(a, v, f"{where}.attacks.{a}", source) for a, v in attacks.items()),
    )


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
