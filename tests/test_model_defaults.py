"""Defaults that follow the model: with no --attack, a model's channels and input size pick the
presets, images are drawn at its own size, and a preset's class list never lies outside its classes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import export, tiny

from foolbench import presets
from foolbench.errors import FoolbenchError
from foolbench.models import ModelOptions
from foolbench.presets import load_preset, target_classes
from foolbench.runner import default_presets


@pytest.fixture(scope="module")
def cifar_model(tmp_path_factory) -> Path:
    """A 10-class model of 3x32x32 images with no card: what a user exports from a CIFAR-10 notebook."""
    return export(tiny(channels=3, size=32), tmp_path_factory.mktemp("m") / "cifar.onnx", (1, 3, 32, 32))


@pytest.fixture
def cheap_presets(tmp_path, monkeypatch):
    """The shipped presets, the CIFAR ones cut to 3 generations at both scales so a run takes a moment."""
    folder = tmp_path / "attacks"
    folder.mkdir()
    for path in presets.ATTACKS_DIR.glob("*.toml"):
        text = path.read_text(encoding="utf-8")
        if path.stem.startswith("cifar-"):
            text, cut = re.subn(r"(?m)^generations = \d+$", "generations = 3", text)
            assert cut == 2, path
        (folder / path.name).write_text(text, encoding="utf-8")
    monkeypatch.setattr(presets, "ATTACKS_DIR", folder)
    return folder


def test_a_cifar_size_model_runs_with_no_other_flag(
    cifar_model, cheap_presets, tmp_path, monkeypatch, foolbench
):
    monkeypatch.chdir(tmp_path)
    result = foolbench("run", "--model", cifar_model, "--no-progress", "--scale", "cpu")
    assert result.returncode == 0, result.stderr
    runs = sorted((tmp_path / "runs").iterdir())
    assert [json.loads((r / "manifest.json").read_text())["attack"] for r in runs] == [
        "cifar-cppn",
        "cifar-direct",
    ]
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["classes"] == list(range(10))
        assert manifest["preset"]["encoding"]["resolution"] == 32
        assert manifest["preset"]["encoding"]["channels"] == 3
        summary = json.loads((run / "summary.json").read_text())
        assert summary["classes"] == 10 and summary["evaluations"] == 200 * 4


def test_the_same_model_with_no_scale_flag_starts(
    cifar_model, cheap_presets, tmp_path, monkeypatch, foolbench
):
    """`foolbench run --model FILE` exactly as a user types it (scale auto)."""
    monkeypatch.chdir(tmp_path)
    result = foolbench("run", "--model", cifar_model)
    assert result.returncode == 0, result.stderr
    assert "cifar-cppn" in result.stdout and "cifar-direct" in result.stdout


@pytest.mark.parametrize(
    "channels, size, expected, side",
    [
        (3, 32, "cifar", 32),
        (3, 64, "cifar", 64),
        (3, 96, "imagenet", 96),
        (1, 28, "mnist", 28),
        (1, 32, "mnist", 32),
    ],
)
def test_channels_and_input_size_pick_the_presets(tmp_path, channels, size, expected, side):
    path = export(tiny(channels=channels, size=size), tmp_path / "m.onnx", (1, channels, size, size))
    chosen = default_presets([str(path)], ModelOptions(), "cpu")
    assert [p.name for p in chosen] == [f"{expected}-cppn", f"{expected}-direct"]
    assert {p.encoding["resolution"] for p in chosen} == {side}
    assert {p.encoding["channels"] for p in chosen} == {channels}


def test_a_card_naming_the_dataset_wins_over_the_input(tmp_path):
    path = export(tiny(channels=3, size=32), tmp_path / "m.onnx", (1, 3, 32, 32))
    (tmp_path / "m.toml").write_text('dataset = "imagenet"\n')
    assert [p.name for p in default_presets([str(path)], ModelOptions(), "cpu")] == [
        "imagenet-cppn",
        "imagenet-direct",
    ]


def test_a_presets_classes_are_never_out_of_range():
    imagenet = load_preset("imagenet-cppn", "cpu")  # ImageNet's 10 classes 84 .. 761
    assert target_classes(None, imagenet, [f"c{i}" for i in range(10)]) == list(range(10))
    assert target_classes(None, imagenet, [f"c{i}" for i in range(1000)]) == imagenet.search["classes"]
    assert target_classes(None, imagenet, [f"c{i}" for i in range(500)]) == list(range(0, 500, 50))


def test_the_users_own_classes_are_still_checked():
    imagenet = load_preset("imagenet-cppn", "cpu")
    with pytest.raises(FoolbenchError, match="class 84 is out of range: this model has classes 0..9"):
        target_classes("84", imagenet, [f"c{i}" for i in range(10)])


def test_a_named_imagenet_preset_on_a_10_class_model_targets_its_classes(cifar_model, tmp_path, foolbench):
    """The reported failure: `--attack imagenet-cppn` (cpu scale) on a 10-class model."""
    out = tmp_path / "run"
    result = foolbench(
        "run", "--model", cifar_model, "--attack", "imagenet-cppn", "--scale", "cpu",
        "--generations", 1, "--out", out, "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "manifest.json").read_text())["classes"] == list(range(10))
