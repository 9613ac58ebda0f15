"""Gradient ascent (the paper's third attack) on tiny ONNX models: the run directory, the
regularisers, kill + resume, models it cannot differentiate, and the [gradient] checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import export, tiny

from foolbench.errors import FoolbenchError
from foolbench.images import load_png
from foolbench.models import load_model
from foolbench.presets import ATTACKS_DIR, load_preset, preset_from_dict
from foolbench.rundir import load_checkpoint
from foolbench.runner import RunRequest, resume_run, start_run
from foolbench.search import Evaluator, Search
from foolbench.search.gradient import GradientAscent, differentiable, gaussian_blur, pseudo_l1


def confident(**kw) -> torch.nn.Module:
    """The tiny CNN with its last layer scaled up: as sure of itself as a trained model, so that
    gradient ascent can reach 99% within a few steps (the plain one saturates near 40%)."""
    net = tiny(**kw)
    with torch.no_grad():
        net.body[4].weight *= 10
        net.body[4].bias *= 10
    return net


@pytest.fixture(scope="module")
def grey(tmp_path_factory) -> Path:
    return export(confident(), tmp_path_factory.mktemp("m") / "tiny.onnx", (1, 1, 28, 28))


@pytest.fixture(scope="module")
def colour(tmp_path_factory) -> Path:
    net = confident(channels=3, size=16)
    return export(net, tmp_path_factory.mktemp("m") / "tiny3.onnx", (1, 3, 16, 16))


@pytest.fixture(scope="module")
def grey_model(grey):
    return load_model(str(grey))


def engine(model, steps: int, **options) -> GradientAscent:
    e = GradientAscent(model, np.arange(model.num_classes), 0, **options)
    search = Search(e, Evaluator(model, e.encoding, e.classes))
    while e.generation < steps:
        search.step()
    return e


def request(model: Path, out: Path, generations: int, attack: str = "gradient", **kw) -> RunRequest:
    return RunRequest(
        models=[str(model)], attack=attack, out=out, generations=generations, progress=False, **kw
    )


# -- the run directory ---------------------------------------------------------------------------------
def test_run_raises_every_class_and_writes_the_standard_run_directory(grey, grey_model, tmp_path):
    out = start_run(request(grey, tmp_path / "run", 15))
    start = engine(grey_model, 0).fitness  # the seeded noise, scored
    results = pd.read_csv(out / "results.csv")
    assert list(results["class"]) == list(range(10))
    assert (results["confidence"] >= 0.99).all(), results["confidence"].tolist()
    assert (results["confidence"] - start >= 0.5).all()  # every class rose well above its start
    # results.csv holds the confidence of the PNG on disk: reload it and score it again.
    pngs = np.stack([load_png(out / f, 1) for f in results["file"]])
    again = grey_model.probs(pngs)[np.arange(10), results["class"]]
    np.testing.assert_allclose(again, results["confidence"], rtol=0, atol=1e-6)
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["generation"]) == list(range(16))
    assert list(metrics["evaluations"]) == [10 * (g + 1) for g in range(16)]
    assert (np.diff(metrics["median_confidence"]) >= 0).all()  # the archive keeps the best per class
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preset"]["attack"]["method"] == "gradient" and manifest["preset"]["gradient"]["lr"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attack"] == "gradient" and summary["evaluations"] == 160
    assert summary["median_confidence"] == pytest.approx(float(np.median(results["confidence"])))
    assert len(list((out / "champions").glob("*.png"))) == 10 and (out / "gallery.png").stat().st_size > 1000
    assert not list(out.rglob("*.tmp"))


def test_each_class_keeps_its_own_best_image(grey_model):
    e = engine(grey_model, 3, lr=0.05)
    genomes, found_at = e.champions()
    champions = e.encoding.render(genomes)
    assert champions.shape == (10, 1, 28, 28) and found_at.shape == (10,) and (found_at >= 0).all()
    probs = grey_model.probs(np.round(champions * 255) / 255)
    np.testing.assert_allclose(probs[np.arange(10), np.arange(10)], e.fitness, atol=1e-6)


def test_each_image_competes_for_its_own_class_only(grey, grey_model, tmp_path):
    """Image i climbs class i and may hold only class i's cell: after the starting noise is scored,
    every class keeps its own start image even where another image scores higher for it (which the
    multi-cell insertion of MAP-Elites would have moved there)."""
    out = start_run(request(grey, tmp_path / "run", 0))
    results = pd.read_csv(out / "results.csv")
    assert list(results["class"]) == list(range(10))
    pngs = np.stack([load_png(out / f, 1) for f in results["file"]])
    assert len({png.tobytes() for png in pngs}) == 10  # ten different images, one per class
    probs = grey_model.probs(pngs)  # [image, class]
    np.testing.assert_allclose(probs[np.arange(10), np.arange(10)], results["confidence"], atol=1e-6)
    assert (probs.argmax(axis=0) != np.arange(10)).sum() >= 3  # classes another image scores higher on


def test_logit_objective_also_climbs(grey_model):
    e = engine(grey_model, 10, objective="logit")
    assert (e.fitness > engine(grey_model, 0).fitness).all()


# -- regularisers ----------------------------------------------------------------------------------------
def test_decay_shrinks_the_images(grey_model):
    plain = engine(grey_model, 10).images
    decayed = engine(grey_model, 10, decay=0.05).images
    assert np.linalg.norm(decayed) < 0.8 * np.linalg.norm(plain)


def test_pseudo_l1_zeroes_at_least_its_share_of_pixels(colour):
    model = load_model(str(colour))
    e = engine(model, 4, resolution=16, channels=3, l1_percentile=20)
    zero = (e.images == 0).all(axis=1).reshape(len(e.images), -1).mean(axis=1)
    assert (zero >= 0.20).all(), zero
    assert (engine(model, 4, resolution=16, channels=3).images.reshape(10, 3, -1) != 0).any(1).all()
    # The function alone: ties at the threshold are zeroed too, whole pixels (all channels) at once.
    x = np.random.default_rng(0).random((2, 3, 10, 10), dtype=np.float32)
    y = pseudo_l1(x, 37)
    assert ((y == 0).all(axis=1).reshape(2, -1).sum(1) == 37).all()
    assert ((y == 0) == (y == 0).all(axis=1, keepdims=True)).all()


def high_frequency(images: np.ndarray) -> float:
    """Energy of the differences between neighbouring pixels."""
    return float((np.diff(images, axis=2) ** 2).sum() + (np.diff(images, axis=3) ** 2).sum())


def test_blur_lowers_high_frequency_energy(grey_model):
    plain = engine(grey_model, 6).images
    blurred = engine(grey_model, 6, blur_every=2, blur_radius=1.0).images
    assert high_frequency(blurred) < 0.5 * high_frequency(plain)
    x = np.random.default_rng(1).random((2, 3, 20, 20), dtype=np.float32)
    y = gaussian_blur(x, 0.3)
    assert high_frequency(y) < high_frequency(x) and y.mean() == pytest.approx(x.mean(), abs=1e-3)


# -- resume ------------------------------------------------------------------------------------------------
def test_interrupted_run_resumes_to_the_same_result(grey, tmp_path, monkeypatch):
    whole = start_run(request(grey, tmp_path / "whole", 12, checkpoint_every=4))
    ask = GradientAscent.ask

    def dies_at_10(self):
        if self.generation == 10:
            raise KeyboardInterrupt  # killed between checkpoints: the last one is at step 8
        return ask(self)

    monkeypatch.setattr(GradientAscent, "ask", dies_at_10)
    with pytest.raises(KeyboardInterrupt):
        start_run(request(grey, tmp_path / "cut", 12, checkpoint_every=4))
    monkeypatch.undo()
    assert json.loads((tmp_path / "cut/checkpoint/latest.json").read_text())["generation"] == 8
    cut = resume_run(tmp_path / "cut")
    a, b = load_checkpoint(whole), load_checkpoint(cut)
    assert a.keys() == b.keys() and "gradient/images" in a
    for key in a:
        if key != "metrics":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert list(pd.read_csv(cut / "metrics.csv")["generation"]) == list(range(13))
    pd.testing.assert_frame_equal(pd.read_csv(whole / "results.csv"), pd.read_csv(cut / "results.csv"))


def old_format(state: dict) -> dict:
    """A checkpoint as gradient runs wrote it before the ask/tell engines: the best image of each
    class held in a class archive (one pool row per cell), gradient non-finites in the counters."""
    n = len(state["gradient/best_fitness"])
    counters = json.loads(str(state["counters"]))
    counters["nonfinite"] += int(state["gradient/nonfinite"])
    return {
        "archive/fitness": state["gradient/best_fitness"],
        "archive/generation": state["gradient/best_generation"],
        "archive/elite": np.arange(n),
        "pool/genes": state["gradient/best_images"],
        "rng": state["rng"],
        "counters": np.array(json.dumps(counters)),
        "gradient/images": state["gradient/images"],
    }


def test_checkpoints_of_the_archive_format_still_resume(grey_model):
    """A run checkpointed in the old format continues to the same images as an uninterrupted one."""
    whole = engine(grey_model, 6)
    half = engine(grey_model, 3)
    state = Search(half, Evaluator(grey_model, half.encoding, half.classes)).state()
    resumed = GradientAscent(grey_model, np.arange(10), 0)
    search = Search(resumed, Evaluator(grey_model, resumed.encoding, resumed.classes))
    search.load_state(old_format(state))
    assert resumed.generation == 3
    while resumed.generation < 6:
        search.step()
    np.testing.assert_array_equal(resumed.images, whole.images)
    np.testing.assert_array_equal(resumed.fitness, whole.fitness)
    np.testing.assert_array_equal(resumed.champions()[0]["genes"], whole.champions()[0]["genes"])
    np.testing.assert_array_equal(resumed.champions()[1], whole.champions()[1])


# -- models without a gradient ---------------------------------------------------------------------------
def with_shrink(source: Path, path: Path) -> Path:
    """`source` with an ONNX Shrink appended: onnxruntime runs it, onnx2torch cannot convert it."""
    import onnx

    proto = onnx.load(str(source))
    last = proto.graph.node[-1]
    last.output[0] = "before_shrink"
    proto.graph.node.append(onnx.helper.make_node("Shrink", ["before_shrink"], ["output"], lambd=0.0))
    onnx.save(proto, str(path))
    return path


def test_unconvertible_model_is_one_line_error_without_run_directory(grey, tmp_path, monkeypatch, capsys):
    from foolbench import cli

    path = with_shrink(grey, tmp_path / "shrink.onnx")
    load_model(str(path))  # scoring works: only the gradient attack is refused
    out = tmp_path / "runs" / "g"
    argv = ["foolbench", "run", "--model", str(path), "--attack", "gradient", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", [*argv, "--generations", "1", "--no-progress", "--scale", "cpu"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[1].startswith("foolbench: error: "), err  # line 1: "running ..."
    assert "onnx2torch cannot convert" in err[1] and "evolutionary attacks" in err[1]
    assert not out.exists()


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_the_onnx_opsets_torch_exports_convert_exactly(tmp_path, approximate):
    """Reshape (allowzero=1), ReduceMean (axes as input) and Gelu as torch exports them at opset 20."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(1, 8, 3)
            self.gelu = torch.nn.GELU(approximate=approximate)
            self.fc = torch.nn.Linear(8 * 26 * 26 + 8, 10)

        def forward(self, x):
            y = self.gelu(self.conv(x))
            return self.fc(torch.cat([y.reshape(y.shape[0], -1), y.mean((2, 3))], 1))

    model = load_model(str(export(Net(), tmp_path / "net.onnx", (1, 1, 28, 28))))
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        p = differentiable(model)(torch.from_numpy(x).to(model.device)).cpu().numpy()
    np.testing.assert_allclose(p, model.probs(x), atol=1e-5)


# -- presets -----------------------------------------------------------------------------------------------
PIXEL_PRESETS = [
    p for p in sorted(ATTACKS_DIR.glob("gradient*.toml")) if p.stem != "gradient-cppn"
]  # its own tests


@pytest.mark.parametrize("path", PIXEL_PRESETS, ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["full", "cpu"])
def test_gradient_presets_load(path, scale):
    preset = load_preset(str(path), scale)
    assert preset.method == "gradient" and not preset.encoding
    assert preset.search["generations"] == preset.gradient["steps"]
    assert GradientAscent.DEFAULTS.keys() >= preset.gradient.keys()


def gradient_preset(gradient: dict, **sections) -> dict:
    return {"attack": {"method": "gradient"}, "gradient": gradient, **sections}


@pytest.mark.parametrize(
    "data, named",
    [
        (gradient_preset({"lrr": 0.1}), "'gradient.lrr'"),
        (gradient_preset({"lr": -1}), "'gradient.lr'"),
        (gradient_preset({"lr": "fast"}), "'gradient.lr'"),
        (gradient_preset({"channels": 2}), "'gradient.channels'"),
        (gradient_preset({"channels": True}), "'gradient.channels'"),
        (gradient_preset({"decay": 1.5}), "'gradient.decay'"),
        (gradient_preset({"steps": 2.5}), "'gradient.steps'"),
        (gradient_preset({"l1_percentile": 100}), "'gradient.l1_percentile'"),
        (gradient_preset({"objective": "loss"}), "'gradient.objective'"),
        (gradient_preset({"blur_every": 4}), "'gradient.blur_radius'"),
        (gradient_preset({"steps": 10}, search={"generations": 20}), "'search.generations'"),
        (gradient_preset({}, encoding={"type": "direct"}), "[encoding]"),
        (
            {"attack": {"method": "map-elites"}, "encoding": {"type": "direct"}, "gradient": {"lr": 1}},
            "[gradient]",
        ),
    ],
)
def test_bad_gradient_settings_are_named(data, named):
    with pytest.raises(FoolbenchError, match=named.replace("[", r"\[").replace("]", r"\]")):
        preset_from_dict(data, "p.toml")


def test_steps_is_the_budget():
    assert preset_from_dict(gradient_preset({}), "p.toml").search["generations"] == 300
    assert preset_from_dict(gradient_preset({"steps": 7}), "p.toml").search["generations"] == 7
    kept = preset_from_dict(gradient_preset({}, search={"seconds": 5.0}), "p.toml").search
    assert "generations" not in kept


def test_engine_refuses_unknown_and_bad_options(grey_model):
    with pytest.raises(FoolbenchError, match="'gradient.lrr'"):
        GradientAscent(grey_model, [0], 0, lrr=0.1)
    with pytest.raises(FoolbenchError, match="blur_every"):
        GradientAscent(grey_model, [0], 0, blur_radius=0.3)
    with pytest.raises(FoolbenchError, match="objective"):
        GradientAscent(grey_model, [0], 0, objective="loss")
