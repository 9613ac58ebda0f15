"""Attack presets: one TOML file per paper experiment in `attacks/`, each with a `cpu` scale.

A preset names the method, the encoding and its options, the search settings and how the model
is evaluated. `[scale.cpu.*]` tables override the paper's settings with a budget sized for two CPU
cores. Every key is checked: an unknown key or an out-of-range value is an error naming the key.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from foolbench.errors import FoolbenchError
from foolbench.models.card import real_labels
from foolbench.options import Choice, Classes, Counts, Float, Int, Text, check_table
from foolbench.search import ENGINES, Budget, engine_type

ATTACKS_DIR = Path(__file__).resolve().parent.parent / "attacks"
SCALES = ("full", "cpu")

# The presets a model gets when no attack is named: by the dataset its card names, else by its input
# (grey: MNIST; colour drawn at most SMALL_COLOUR_SIDE pixels wide: CIFAR-size; larger: ImageNet).
DEFAULT_ATTACKS = {
    "mnist": ("mnist-cppn", "mnist-direct"),
    "cifar": ("cifar-cppn", "cifar-direct"),
    "cifar10": ("cifar-cppn", "cifar-direct"),
    "imagenet": ("imagenet-cppn", "imagenet-direct"),
}
SMALL_COLOUR_SIDE = 64
# Where a preset names classes a model does not have (ImageNet's on a 10-class model), the run
# targets every class up to ALL_CLASSES_UP_TO of them, else SAMPLE_CLASSES spread evenly.
ALL_CLASSES_UP_TO = 100
SAMPLE_CLASSES = 10

# section -> key -> rule. [encoding] is checked by the encoding it names; an engine's own section
# (e.g. [gradient]) by the engine's rules, registered with it (foolbench.search.ENGINES).
BASE_SCHEMA: dict[str, dict | None] = {
    "attack": {
        "name": Text(),
        "description": Text(),
        "method": None,  # one of the registered engines: see `schema`
        "model": Text(),
        "dataset": Text(),
        "paper": Text(),
    },
    "search": {
        "batch": Int(1, 100_000),
        "init": Int(1, 1_000_000),
        "generations": Int(0, 10_000_000),
        "evaluations": Int(1, 10**12),
        "seconds": Float(0.001, 10**9),
        "classes": Classes(),
        "seed": Int(0, 2**63 - 1),
        "checkpoint_every": Int(1, 10_000_000),
        "snapshots": Counts(),  # model queries at which the run also saves its champions (snapshots/)
    },
    "evaluation": {"crop": Choice(("center", "ten")), "batch_size": Int(1, 100_000)},
    "encoding": None,
}


def schema() -> dict[str, dict | None]:
    """Every section a preset may hold and the rules of its keys, with the engines registered now."""
    attack = BASE_SCHEMA["attack"] | {"method": Choice(tuple(ENGINES))}
    engines = {kind.section: kind.rules for kind in ENGINES.values() if kind.section}
    return {**BASE_SCHEMA, "attack": attack, **engines}


ALWAYS_WRITTEN = ("attack", "encoding", "search", "evaluation", "gradient")  # in every manifest


@dataclass
class Preset:
    """A preset at one scale: its tables (section -> key -> value), as given, checked."""

    name: str
    source: str
    scale: str
    tables: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for section in schema():
            self.tables.setdefault(section, {})

    @property
    def attack(self) -> dict:
        return self.tables["attack"]

    @property
    def encoding(self) -> dict:
        return self.tables["encoding"]

    @property
    def search(self) -> dict:
        return self.tables["search"]

    @property
    def evaluation(self) -> dict:
        return self.tables["evaluation"]

    @property
    def gradient(self) -> dict:
        return self.tables["gradient"]

    @property
    def method(self) -> str:
        return self.attack.get("method", "map-elites")

    def budget(self, generations=None, evaluations=None, seconds=None) -> Budget:
        """The run's budget: the limits given (a command's --generations, ...), else the preset's."""
        if any(v is not None for v in (generations, evaluations, seconds)):
            return Budget(generations, evaluations, seconds)
        s = self.search
        budget = Budget(s.get("generations"), s.get("evaluations"), s.get("seconds"))
        if budget.generations is None and budget.evaluations is None and budget.seconds is None:
            raise FoolbenchError(f"{self.source}: the preset sets no budget; add search.generations")
        return budget

    def planned(self, evaluations: int | None) -> Preset:
        """The preset of a run given `evaluations` (a command's --evaluations): an engine that plans
        over its budget (the patch search's shrinking squares) plans over that one, as a protocol's
        budget makes it do; otherwise the preset itself."""
        plan = engine_type(self.method).plan
        if evaluations is None or plan is None:
            return self
        tables = copy.deepcopy(self.tables)
        section = engine_type(self.method).section
        tables[section] = plan(tables[section], evaluations)
        return Preset(self.name, self.source, self.scale, tables)

    def as_dict(self) -> dict:
        """The preset as a manifest records it (an engine's own section only where it is set)."""
        sections = {s: self.tables[s] for s in ALWAYS_WRITTEN}
        sections |= {s: t for s, t in self.tables.items() if s not in ALWAYS_WRITTEN and t}
        return {"name": self.name, "source": self.source, "scale": self.scale, **sections}


def preset_path(ref: str) -> Path:
    """A preset file path, or a bare name looked up in attacks/ (`mnist-cppn`)."""
    path = Path(ref)
    if path.is_file():
        return path
    named = ATTACKS_DIR / (ref if ref.endswith(".toml") else f"{ref}.toml")
    if "/" not in ref and named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in ATTACKS_DIR.glob("*.toml")))
    raise FoolbenchError(f"attack preset '{ref}' not found; pass a .toml file or one of: {known}")


def load_preset(ref: str, scale: str = "full") -> Preset:
    path = preset_path(ref)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FoolbenchError(f"{path}: not valid TOML ({e})") from None
    return preset_from_dict(data, str(path), scale)


def preset_from_dict(data: dict, source: str, scale: str = "full") -> Preset:
    if scale not in SCALES:
        raise FoolbenchError(f"unknown scale '{scale}'; use one of {', '.join(SCALES)}")
    data = copy.deepcopy(data)
    scales = data.pop("scale", {})
    if not isinstance(scales, dict) or set(scales) - set(SCALES):
        raise FoolbenchError(f"{source}: [scale] may only hold {', '.join(SCALES)} tables")
    _check_sections(data, source)
    if scale in scales:
        _check_sections(scales[scale], f"{source} [scale.{scale}]")
        for section, values in scales[scale].items():
            data.setdefault(section, {}).update(values)
    preset = Preset(
        name=data.get("attack", {}).get("name", Path(source).stem),
        source=source,
        scale=scale,
        tables={section: data.get(section, {}) for section in schema()},
    )
    _check_engine(preset, source)
    return preset


def _check_sections(data: dict, source: str) -> None:
    if not isinstance(data, dict):
        raise FoolbenchError(f"{source}: expected tables of keys")
    rules = schema()
    for section, values in data.items():
        if section not in rules:
            raise FoolbenchError(f"{source}: unknown section [{section}]; known: {', '.join(rules)}")
        if not isinstance(values, dict):
            raise FoolbenchError(f"{source}: [{section}] must be a table of keys")
        if rules[section] is not None:
            try:
                check_table(values, rules[section], section)
            except FoolbenchError as e:
                raise FoolbenchError(f"{source}: {e}") from None


def _check_engine(preset: Preset, source: str) -> None:
    """The tables the preset's method takes: [encoding] or the engine's own section, and its budget."""
    kind = engine_type(preset.method)
    for method, other in ENGINES.items():
        if other.section not in (None, kind.section) and preset.tables[other.section]:
            raise FoolbenchError(f"{source}: [{other.section}] is only for attack.method = '{method}'")
    if kind.encoding:
        _check_encoding(preset, source)
    elif preset.encoding:
        raise FoolbenchError(
            f"{source}: a {preset.method} preset takes no [encoding]; set resolution and channels "
            f"in [{kind.section}]"
        )
    if kind.section is None:
        return
    options = preset.tables[kind.section]
    try:
        kind.check(options)
    except FoolbenchError as e:
        raise FoolbenchError(f"{source}: {e}") from None
    if kind.budget_key is not None:
        _engine_budget(preset, kind.section, kind.budget_key, kind.default_budget, source)


def _check_encoding(preset: Preset, source: str) -> None:
    options = dict(preset.encoding)
    kind = options.pop("type", None)
    if kind is None:
        raise FoolbenchError(f"{source}: [encoding] needs a 'type' (direct or cppn)")
    from foolbench.encodings import make_encoding

    try:
        make_encoding(kind, **options)
    except FoolbenchError as e:
        raise FoolbenchError(f"{source}: [encoding] {e}") from None


def _engine_budget(preset: Preset, section: str, key: str, default: int, source: str) -> None:
    """An engine whose budget is its own option (gradient.steps): that is the search's generations."""
    steps, search = preset.tables[section].get(key, default), preset.search
    if not any(k in search for k in ("generations", "evaluations", "seconds")):
        search["generations"] = steps
    elif key in preset.tables[section] and search.get("generations", steps) != steps:
        raise FoolbenchError(
            f"{source}: '{section}.{key}' ({steps}) and 'search.generations' ({search['generations']}) "
            f"disagree; set the budget once ({section}.{key})"
        )


def parse_classes(spec, labels: list[str]) -> list[int]:
    """'all', '0-9', '1,3,5', 'random:10' (a seeded sample) or a list of indices or exact labels."""
    k = len(labels)
    if spec is None or spec == "all":
        return list(range(k))
    items = spec if isinstance(spec, list) else [s.strip() for s in str(spec).split(",") if s.strip()]
    if not items:
        raise FoolbenchError("--classes is empty; give 'all', indices like 0-9 or 1,3,5, or label names")
    out: list[int] = []
    for item in items:
        out.extend(_class_item(item, labels))
    if len(set(out)) != len(out):
        raise FoolbenchError(f"--classes names a class twice: {spec}")
    return out


def _class_item(item, labels: list[str]) -> list[int]:
    k = len(labels)
    if isinstance(item, int) and not isinstance(item, bool):
        indices = [item]
    elif isinstance(item, str) and item.startswith("random:"):
        import numpy as np

        n = _to_int(item[7:], item)
        if not 1 <= n <= k:
            raise FoolbenchError(f"'{item}': the sample size must be between 1 and {k}")
        return sorted(np.random.default_rng(0).choice(k, size=n, replace=False).tolist())
    elif isinstance(item, str) and "-" in item.strip("-") and item.replace("-", "").isdigit():
        lo, hi = (_to_int(s, item) for s in item.split("-", 1))
        if lo > hi:
            raise FoolbenchError(f"class range '{item}' runs backwards; write it as low-high")
        indices = list(range(lo, hi + 1))
    elif isinstance(item, str) and item.lstrip("-").isdigit():
        indices = [_to_int(item, item)]
    elif isinstance(item, str) and item in labels:
        return [labels.index(item)]
    else:
        raise FoolbenchError(f"class '{item}' is neither an index in 0..{k - 1} nor a label of this model")
    for i in indices:
        if not 0 <= i < k:
            raise FoolbenchError(f"class {i} is out of range: this model has classes 0..{k - 1}")
    return indices


def _to_int(text: str, item: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FoolbenchError(f"'{item}' is not a class index or range") from None


# -- defaults that follow the model ---------------------------------------------------------------
def drawing_side(model) -> int:
    """The side images are drawn at for a model: what its card resizes to, else its larger input side."""
    return int(model.spec.resize or max(model.spec.size))


def default_attacks(model) -> tuple[str, ...]:
    """The presets for a model when the user names none: its card's dataset, else its input decides."""
    dataset = (model.card.dataset or "").lower()
    if dataset in DEFAULT_ATTACKS:
        return DEFAULT_ATTACKS[dataset]
    if model.spec.channels == 1:
        return DEFAULT_ATTACKS["mnist"]
    return DEFAULT_ATTACKS["cifar" if drawing_side(model) <= SMALL_COLOUR_SIDE else "imagenet"]


def fit_to_model(preset: Preset, model) -> Preset:
    """A default preset with its images drawn at the model's own side (a 64x64 colour model gets the
    CIFAR-size presets at 64, a 32x32 grey one the MNIST presets at 32), so nothing is resampled."""
    tables = copy.deepcopy(preset.tables)
    for section in ("encoding", "gradient"):
        if "resolution" in tables[section]:
            tables[section]["resolution"] = drawing_side(model)
    return Preset(preset.name, preset.source, preset.scale, tables)


def target_classes(given, preset: Preset, labels: list[str]) -> list[int]:
    """The classes a run targets: the user's (`--classes`, checked), else the preset's; where those
    are not this model's (an ImageNet list on a 10-class model), every class up to
    ALL_CLASSES_UP_TO, else SAMPLE_CLASSES spread evenly (class floor(i K / n)), so a model's
    own classes are never out of range. A retraining defence's `fooling` class is no default target
    (an image the model puts there is rejected, not believed); naming it in `--classes` still works."""
    if given is not None:
        return parse_classes(given, labels)
    real = real_labels(labels)
    try:
        return parse_classes(preset.search.get("classes"), real)
    except FoolbenchError:
        k = len(real)
        if k <= ALL_CLASSES_UP_TO:
            return list(range(k))
        return [i * k // SAMPLE_CLASSES for i in range(SAMPLE_CLASSES)]
