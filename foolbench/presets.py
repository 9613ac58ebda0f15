"""Attack presets: one TOML file per paper experiment in `attacks/`, each with a `cpu` scale.

A preset names the method, the encoding and its options, the search settings and how the model
is evaluated. `[scale.cpu.*]` tables override the paper's settings with a budget sized for two CPU
cores. Every key is checked: an unknown key or an out-of-range value is an error naming the key.
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from foolbench.errors import FoolbenchError

ATTACKS_DIR = Path(__file__).resolve().parent.parent / "attacks"
SCALES = ("full", "cpu")
METHODS = ("map-elites", "gradient")


def _int(lo, hi):
    return ("int", lo, hi)


def _float(lo, hi):
    return ("float", lo, hi)


# section -> key -> rule. Encoding and gradient options are checked by their own builders.
SCHEMA: dict[str, dict] = {
    "attack": {
        "name": ("str",),
        "description": ("str",),
        "method": ("choice", METHODS),
        "model": ("str",),
        "dataset": ("str",),
        "paper": ("str",),
    },
    "search": {
        "batch": _int(1, 100_000),
        "init": _int(1, 1_000_000),
        "generations": _int(0, 10_000_000),
        "evaluations": _int(1, 10**12),
        "seconds": _float(0.001, 10**9),
        "classes": ("classes",),
        "seed": _int(0, 2**63 - 1),
        "checkpoint_every": _int(1, 10_000_000),
    },
    "evaluation": {"crop": ("choice", ("center", "ten")), "batch_size": _int(1, 100_000)},
    "encoding": None,
    "gradient": {
        "steps": _int(0, 10_000_000),
        "lr": _float(1e-9, 100),
        "resolution": _int(1, 4096),
        "channels": ("choice", (1, 3)),
        "decay": _float(0, 0.99),
        "blur_every": _int(0, 1_000_000),
        "blur_radius": _float(0, 100),
        "l1_percentile": _float(0, 99),
        "objective": ("choice", ("probability", "logit")),
    },
}
DEFAULT_GRADIENT_STEPS = 300


@dataclass
class Preset:
    name: str
    source: str
    scale: str
    attack: dict = field(default_factory=dict)
    encoding: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    gradient: dict = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.attack.get("method", "map-elites")

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "scale": self.scale,
            "attack": self.attack,
            "encoding": self.encoding,
            "search": self.search,
            "evaluation": self.evaluation,
            "gradient": self.gradient,
        }


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
        **{section: data.get(section, {}) for section in SCHEMA},
    )
    _check_encoding(preset, source)
    _check_gradient(preset, source)
    return preset


def _check_sections(data: dict, source: str) -> None:
    if not isinstance(data, dict):
        raise FoolbenchError(f"{source}: expected tables of keys")
    for section, values in data.items():
        if section not in SCHEMA:
            raise FoolbenchError(f"{source}: unknown section [{section}]; known: {', '.join(SCHEMA)}")
        if not isinstance(values, dict):
            raise FoolbenchError(f"{source}: [{section}] must be a table of keys")
        rules = SCHEMA[section]
        if rules is None:
            continue
        for key, value in values.items():
            if key not in rules:
                raise FoolbenchError(f"{source}: unknown key '{section}.{key}'; known: {', '.join(rules)}")
            _check_value(f"{section}.{key}", value, rules[key], source)


def _check_value(key: str, value, rule: tuple, source: str) -> None:
    kind = rule[0]
    bad = f"{source}: '{key}' "
    if kind == "str" and not isinstance(value, str):
        raise FoolbenchError(bad + f"must be text, got {value!r}")
    if kind == "choice" and (isinstance(value, bool) or value not in rule[1]):
        raise FoolbenchError(bad + f"must be one of {', '.join(map(str, rule[1]))}, got {value!r}")
    if kind in ("int", "float"):
        ok_type = isinstance(value, int) if kind == "int" else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or not math.isfinite(value):
            raise FoolbenchError(bad + f"must be a{'' if kind == 'int' else ' finite'} number, got {value!r}")
        if not rule[1] <= value <= rule[2]:
            raise FoolbenchError(bad + f"must be between {rule[1]} and {rule[2]}, got {value!r}")
    if kind == "classes" and not (
        isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, (int, str)) for v in value))
    ):
        raise FoolbenchError(bad + "must be 'all', a range text like '0-9', or a list of indices/labels")


def _check_encoding(preset: Preset, source: str) -> None:
    if preset.method != "map-elites":
        return
    options = dict(preset.encoding)
    kind = options.pop("type", None)
    if kind is None:
        raise FoolbenchError(f"{source}: [encoding] needs a 'type' (direct or cppn)")
    from foolbench.encodings import make_encoding

    try:
        make_encoding(kind, **options)
    except FoolbenchError as e:
        raise FoolbenchError(f"{source}: [encoding] {e}") from None


def _check_gradient(preset: Preset, source: str) -> None:
    """A gradient preset has [gradient] instead of [encoding]; `gradient.steps` is its budget."""
    if preset.method != "gradient":
        if preset.gradient:
            raise FoolbenchError(f"{source}: [gradient] is only for attack.method = 'gradient'")
        return
    if preset.encoding:
        raise FoolbenchError(
            f"{source}: a gradient preset takes no [encoding]; set resolution and channels in [gradient]"
        )
    g, search = preset.gradient, preset.search
    if (g.get("blur_every", 0) > 0) != (g.get("blur_radius", 0) > 0):
        raise FoolbenchError(
            f"{source}: 'gradient.blur_every' and 'gradient.blur_radius' go together: set both above 0 "
            "to blur, or both to 0"
        )
    steps = g.get("steps", DEFAULT_GRADIENT_STEPS)
    if not any(k in search for k in ("generations", "evaluations", "seconds")):
        search["generations"] = steps
    elif "steps" in g and search.get("generations", steps) != steps:
        raise FoolbenchError(
            f"{source}: 'gradient.steps' ({steps}) and 'search.generations' ({search['generations']}) "
            "disagree; set the budget once (gradient.steps)"
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
