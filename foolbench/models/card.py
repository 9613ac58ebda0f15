"""Model cards: what foolbench knows about a model besides its weights.

A card says how a model wants its input (size, channels, layout, mean/std, crops), what its output
is (logits or probabilities) and what the classes are called. foolbench stores the card inside the
ONNX files it exports (metadata key ``foolbench.card``); for any other file a ``NAME.toml`` beside
it is read; command-line flags override both. Every field is optional: what is missing is detected
from the model or left at a neutral default.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from foolbench.errors import FoolbenchError

CARD_METADATA_KEY = "foolbench.card"
LAYOUTS = ("NCHW", "NHWC")
OUTPUTS = ("logits", "probs")
CROPS = ("center", "ten")
# The label of the class the retraining defence adds (its last): where a model retrained that way
# puts the images it rejects. It is never a target, and baselines read confidence without it.
FOOLING = "fooling"


def real_labels(labels) -> list[str]:
    """A model's labels without a retraining defence's trailing `fooling` class: the classes it is
    meant to recognise, the ones a run targets and a baseline reads."""
    labels = list(labels)
    return labels[:-1] if labels and labels[-1] == FOOLING else labels


@dataclass
class ModelCard:
    """Everything the adapter needs to know about a model; None means 'detect or do nothing'."""

    name: str | None = None
    dataset: str | None = None
    labels: list[str] | None = None
    input_size: list[int] | None = None  # [H, W] the network takes
    channels: int | None = None
    layout: str | None = None  # NCHW or NHWC
    mean: list[float] | None = None  # per channel, applied to [0,1] pixels
    std: list[float] | None = None
    output: str | None = None  # logits or probs
    resize: int | None = None  # resize the shorter side to this before cropping (ImageNet: 256)
    crop: str = "center"  # center, or ten (4 corners + centre, each mirrored, probabilities averaged)
    accuracy: float | None = None  # held-out top-1 accuracy, recorded by whoever trained it
    notes: str | None = None
    extra: dict = field(default_factory=dict)  # free-form facts (training data, seed, ...)

    def merged(self, other: ModelCard | dict) -> ModelCard:
        """A copy with every field that `other` sets (not None) taking precedence."""
        over = other if isinstance(other, dict) else dataclasses.asdict(other)
        mine = dataclasses.asdict(self)
        for key, value in over.items():
            if value is not None and not (key == "extra" and not value):
                mine[key] = value
        return card_from_dict(mine, "merged card")

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if v is not None})


_FIELDS = {f.name: f for f in dataclasses.fields(ModelCard)}


def _check_number_list(key, value, source, length=None):
    if not isinstance(value, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise FoolbenchError(f"{source}: '{key}' must be a list of finite numbers, got {value!r}")
    if length is not None and len(value) != length:
        raise FoolbenchError(f"{source}: '{key}' must have {length} numbers, got {len(value)}")


def card_from_dict(data: dict, source: str) -> ModelCard:
    """Validate a card read from TOML/JSON; every problem names the key and the source."""
    if not isinstance(data, dict):
        raise FoolbenchError(f"{source}: a model card must be a table of keys, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise FoolbenchError(
            f"{source}: unknown model-card key '{unknown[0]}'; known keys: {', '.join(_FIELDS)}"
        )
    d = dict(data)
    for key in ("name", "dataset", "notes"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise FoolbenchError(f"{source}: '{key}' must be text, got {d[key]!r}")
    if d.get("labels") is not None:
        if not isinstance(d["labels"], list) or not all(isinstance(x, str) for x in d["labels"]):
            raise FoolbenchError(f"{source}: 'labels' must be a list of strings")
        if len(d["labels"]) == 0 or len(d["labels"]) > 1_000_000:
            raise FoolbenchError(f"{source}: 'labels' must hold between 1 and 1,000,000 names")
    if d.get("input_size") is not None:
        _check_number_list("input_size", d["input_size"], source, 2)
        if not all(isinstance(v, int) and 1 <= v <= 8192 for v in d["input_size"]):
            raise FoolbenchError(f"{source}: 'input_size' must be two whole numbers in 1..8192")
    for key, lo, hi in (("channels", 1, 4), ("resize", 1, 8192)):
        v = d.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi):
            raise FoolbenchError(f"{source}: '{key}' must be a whole number in {lo}..{hi}, got {v!r}")
    for key, allowed in (("layout", LAYOUTS), ("output", OUTPUTS), ("crop", CROPS)):
        v = d.get(key)
        if v is not None and v not in allowed:
            raise FoolbenchError(f"{source}: '{key}' must be one of {', '.join(allowed)}, got {v!r}")
    for key in ("mean", "std"):
        if d.get(key) is not None:
            _check_number_list(key, d[key], source)
            if not 1 <= len(d[key]) <= 4:
                raise FoolbenchError(f"{source}: '{key}' must have one number per channel (1 to 4)")
    if d.get("std") is not None and any(v <= 0 for v in d["std"]):
        raise FoolbenchError(f"{source}: 'std' values must be positive")
    acc = d.get("accuracy")
    if acc is not None and (not isinstance(acc, (int, float)) or isinstance(acc, bool) or not 0 <= acc <= 1):
        raise FoolbenchError(f"{source}: 'accuracy' must be a fraction in [0, 1], got {acc!r}")
    if d.get("crop") is None:
        d.pop("crop", None)
    if d.get("extra") is None:
        d.pop("extra", None)
    elif not isinstance(d["extra"], dict):
        raise FoolbenchError(f"{source}: 'extra' must be a table")
    return ModelCard(**d)


def read_card_toml(path: Path) -> ModelCard:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FoolbenchError(f"{path}: not a valid TOML model card ({e}); fix or remove the file") from None
    return card_from_dict(data, str(path))


def card_from_json(text: str, source: str) -> ModelCard:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise FoolbenchError(f"{source}: the embedded model card is not valid JSON ({e})") from None
    return card_from_dict(data, source)


def sidecar_card(model_path: Path) -> ModelCard | None:
    """The `NAME.toml` beside a model file, if there is one."""
    toml_path = model_path.with_suffix(".toml")
    return read_card_toml(toml_path) if toml_path.is_file() else None


def read_labels_file(path: str | Path) -> list[str]:
    """Labels from a text file, one per line (blank lines at the end ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FoolbenchError(f"labels file {path} does not exist; pass a text file with one label per line")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise FoolbenchError(f"labels file {path} is empty; it needs one label per line")
    return [line.strip() for line in lines]
