"""Property-based tests: no input to the parsers produces a traceback, only a result or the tool's
one-line error (FoolbenchError)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foolbench.errors import FoolbenchError
from foolbench.images import load_png
from foolbench.models.card import card_from_dict, read_card_toml
from foolbench.presets import parse_classes, preset_from_dict, schema

CASES = 300  # per property; the README says this number
FAST = settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
known_keys = [k for rules in schema().values() if rules for k in rules]
encoding_keys = [
    "type",
    "resolution",
    "channels",
    "colour",
    "mutation_rate",
    "rate_halving",
    "eta_m",
    "crossover",
    "max_hidden",
    "add_node",
    "weight_range",
    "coordinates",
]
gradient_keys = ["steps", "lr", "decay", "blur_every", "blur_radius", "l1_percentile", "objective"]
section = st.dictionaries(
    st.sampled_from(known_keys + encoding_keys + gradient_keys) | st.text(max_size=6), values, max_size=6
)
presets = st.dictionaries(st.sampled_from([*schema(), "scale", "bogus"]), section | values, max_size=5)


@FAST
@given(presets)
def test_preset_parser_never_crashes(data):
    try:
        preset_from_dict(data, "fuzz.toml")
    except FoolbenchError as e:
        assert "\n" not in str(e)


card_keys = [
    "name",
    "dataset",
    "labels",
    "input_size",
    "channels",
    "layout",
    "mean",
    "std",
    "output",
    "resize",
    "crop",
    "accuracy",
    "notes",
    "extra",
]


@FAST
@given(st.dictionaries(st.sampled_from(card_keys) | st.text(max_size=6), values, max_size=6))
def test_model_card_reader_never_crashes(data):
    try:
        card = card_from_dict(data, "fuzz card")
    except FoolbenchError as e:
        assert "\n" not in str(e)
        return
    if card.mean is not None:
        assert all(math.isfinite(v) for v in card.mean)


@FAST
@given(st.text(max_size=200))
def test_card_toml_text_never_crashes(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("card") / "m.toml"
    path.write_text(text, encoding="utf-8")
    try:
        read_card_toml(path)
    except FoolbenchError:
        pass


@FAST
@given(
    st.one_of(
        st.text(max_size=30),
        st.lists(st.one_of(st.integers(-5, 30), st.text(max_size=8)), max_size=6),
        st.none(),
    )
)
def test_classes_parser_never_crashes(spec):
    labels = [f"c{i}" for i in range(20)]
    try:
        out = parse_classes(spec, labels)
    except FoolbenchError as e:
        assert "\n" not in str(e)
        return
    assert out and all(0 <= c < 20 for c in out) and len(set(out)) == len(out)


@FAST
@given(st.binary(max_size=300))
def test_image_loading_never_crashes(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("png") / "x.png"
    path.write_bytes(blob)
    try:
        image = load_png(path, 1)
    except FoolbenchError:
        return
    assert image.ndim == 3 and image.shape[0] == 1


@pytest.mark.parametrize("channels", [1, 3])
def test_a_real_png_loads(tmp_path, channels):
    import numpy as np

    from foolbench.images import save_png

    image = np.random.default_rng(0).random((channels, 8, 8)).astype(np.float32)
    save_png(tmp_path / "a.png", image)
    back = load_png(tmp_path / "a.png", channels)
    assert np.abs(back - image).max() <= 0.5 / 255 + 1e-6


def test_a_broken_image_in_a_data_folder_is_a_named_error(tmp_path):
    from foolbench.data.photos import image_folder

    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    images, _, _ = image_folder(tmp_path)
    with pytest.raises(FoolbenchError, match="broken.png is not a readable image"):
        images[0]
