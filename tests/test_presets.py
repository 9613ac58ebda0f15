"""Attack presets and the --classes parser: every shipped preset loads, every bad value is named."""

from __future__ import annotations

import pytest

from foolbench.errors import FoolbenchError
from foolbench.presets import ATTACKS_DIR, load_preset, parse_classes, preset_from_dict

LABELS = [f"label {i}" for i in range(20)]


@pytest.mark.parametrize("path", sorted(ATTACKS_DIR.glob("*.toml")), ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["full", "cpu"])
def test_every_shipped_preset_loads(path, scale):
    preset = load_preset(path.stem, scale)
    assert preset.name == path.stem and preset.method in ("map-elites", "gradient", "gradient-cppn", "patch")


def test_cpu_scale_overrides_only_what_it_names():
    full, cpu = load_preset("imagenet-cppn", "full"), load_preset("imagenet-cppn", "cpu")
    assert (
        full.search["batch"] == 400 and full.search["classes"] == "all" and full.evaluation["crop"] == "ten"
    )
    assert (
        cpu.search["batch"] == 40 and len(cpu.search["classes"]) == 10 and cpu.evaluation["crop"] == "center"
    )
    assert cpu.encoding == full.encoding


@pytest.mark.parametrize(
    "data, message",
    [
        ({"searchh": {}}, "unknown section [searchh]"),
        ({"search": {"batch": 0}}, "'search.batch' must be between 1"),
        ({"search": {"batch": 1.5}}, "'search.batch' must be a whole number"),
        ({"search": {"batch": True}}, "'search.batch' must be a whole number"),
        ({"search": {"seconds": float("inf")}}, "'search.seconds' must be a finite number"),
        ({"search": {"generations": 10**12}}, "'search.generations' must be between"),
        ({"attack": {"method": "magic"}}, "'attack.method' must be one of"),
        ({"encoding": {"type": "direct", "colour": "cmyk"}}, "colour"),
        ({"encoding": {"type": "cppn", "add_node": 1.5}}, "add_node"),
        ({"encoding": {"resolution": 28}}, "needs a 'type'"),
        ({"scale": {"gpu": {}}}, "[scale] may only hold"),
    ],
)
def test_bad_presets_name_the_key(data, message):
    data = {"encoding": {"type": "direct"}, **data}
    with pytest.raises(FoolbenchError, match=None) as err:
        preset_from_dict(data, "p.toml")
    assert message in str(err.value)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("all", list(range(20))),
        (None, list(range(20))),
        ("0-3", [0, 1, 2, 3]),
        ("1,5,7", [1, 5, 7]),
        ("2-3,9", [2, 3, 9]),
        ([4, "label 6"], [4, 6]),
        ("label 11", [11]),
    ],
)
def test_class_specs(spec, expected):
    assert parse_classes(spec, LABELS) == expected


def test_random_sample_is_fixed_and_in_range():
    a = parse_classes("random:5", LABELS)
    assert a == parse_classes("random:5", LABELS) and len(set(a)) == 5 and max(a) < 20


@pytest.mark.parametrize("spec", ["20", "5-2", "x", "", "3,3", "random:0", "random:99", "-1", [25]])
def test_bad_class_specs_are_errors(spec):
    with pytest.raises(FoolbenchError):
        parse_classes(spec, LABELS)
