"""Gradient ascent through a differentiable CPPN on a tiny ONNX model: it climbs, every image is a
CPPN's drawing, an interrupted run resumes to the same bytes, and bad settings are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import export, tiny

from foolbench.errors import FoolbenchError
from foolbench.models import load_model
from foolbench.presets import load_preset, preset_from_dict
from foolbench.rundir import load_checkpoint
from foolbench.runner import RunRequest, resume_run, start_run
from foolbench.search import Evaluator, Search
from foolbench.search.gradient_cppn import CPPNGradient


@pytest.fixture(scope="module")
def grey(tmp_path_factory) -> Path:
    net = tiny()
    with torch.no_grad():  # as sure of itself as a trained model, so confidences can go high
        net.body[4].weight *= 10
        net.body[4].bias *= 10
    return export(net, tmp_path_factory.mktemp("m") / "tiny.onnx", (1, 1, 28, 28))


def preset(tmp_path: Path, steps: int) -> Path:
    path = tmp_path / "gradient-cppn-tiny.toml"
    path.write_text(
        '[attack]\nmethod = "gradient-cppn"\n[gradient-cppn]\n'
        f"steps = {steps}\nlr = 0.05\ncppn_resolution = 32\n[search]\nclasses = 'all'\n"
    )
    return path


def request(model: Path, attack: Path, out: Path, **kw) -> RunRequest:
    return RunRequest(models=[str(model)], attack=str(attack), out=out, progress=False, **kw)


def test_adam_on_the_cppn_weights_raises_every_class(grey):
    model = load_model(str(grey))
    engine = CPPNGradient(model, np.arange(10), 0, lr=0.05, cppn_resolution=32)
    search = Search(engine, Evaluator(model, engine.encoding, engine.classes))
    search.step()
    start = engine.fitness.copy()
    for _ in range(12):
        search.step()
    assert (engine.fitness >= start).all() and np.median(engine.fitness) > 2 * np.median(start)
    canvas = engine.champions()[0]["canvas"]
    assert canvas.dtype == np.uint8 and canvas.shape == (10, 1, 28, 28)


def test_interrupted_run_resumes_to_the_same_bytes(grey, tmp_path, monkeypatch):
    attack = preset(tmp_path, 12)
    whole = start_run(request(grey, attack, tmp_path / "whole", checkpoint_every=4))
    ask = CPPNGradient.ask

    def dies_at_10(self):
        if self.generation == 10:
            raise KeyboardInterrupt  # killed between checkpoints: the last one is at step 8
        return ask(self)

    monkeypatch.setattr(CPPNGradient, "ask", dies_at_10)
    with pytest.raises(KeyboardInterrupt):
        start_run(request(grey, attack, tmp_path / "cut", checkpoint_every=4))
    monkeypatch.undo()
    assert json.loads((tmp_path / "cut/checkpoint/latest.json").read_text())["generation"] == 8
    cut = resume_run(tmp_path / "cut")
    a, b = load_checkpoint(whole), load_checkpoint(cut)
    assert a.keys() == b.keys() and "gradient-cppn/adam/w0/exp_avg" in a
    for key in a:
        if key != "metrics":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    pd.testing.assert_frame_equal(pd.read_csv(whole / "results.csv"), pd.read_csv(cut / "results.csv"))


@pytest.mark.parametrize("scale", ["full", "cpu"])
def test_preset_loads_with_steps_as_the_budget(scale):
    p = load_preset("gradient-cppn", scale)
    assert p.method == "gradient-cppn" and p.search["generations"] == p.tables["gradient-cppn"]["steps"]


@pytest.mark.parametrize(
    "options, named",
    [
        ({"lrr": 0.1}, "unknown key 'gradient-cppn.lrr'"),
        ({"lr": 0}, "'gradient-cppn.lr' must be > 0"),
        ({"channels": 2}, "'gradient-cppn.channels'"),
        ({"cppn_hidden": 6}, "multiple of 4"),
    ],
)
def test_bad_settings_are_named(options, named):
    data = {"attack": {"method": "gradient-cppn"}, "gradient-cppn": options}
    with pytest.raises(FoolbenchError, match=named):
        preset_from_dict(data, "p.toml")


def test_the_objective_is_a_log_softmax_that_does_not_underflow():
    """Where the target's probability underflows float32 (a defended LeNet's median champion was
    1e-43), log p from a log-softmax stays finite and keeps its gradient; log(p + 1e-30) through a
    softmax, the objective before, is flat there. With ten crops it is the log of the mean."""
    from foolbench.models.card import ModelCard
    from foolbench.models.torch_model import TorchModel

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(24 * 24, 10))
    with torch.no_grad():
        net[1].bias.copy_(torch.tensor([0.0] + [200.0] * 9))  # class 0 at about e^-200
    card = ModelCard(input_size=[24, 24], channels=1, resize=28, crop="ten")
    model = TorchModel(net, card, "far")
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0), requires_grad=True)
    log_p = model.torch_module("log_probs")(x)[:, 0]
    (grad,) = torch.autograd.grad(log_p.sum(), x)
    assert torch.all((log_p > -215) & (log_p < -185)) and grad.abs().sum() > 0
    before = torch.log(model.torch_module("probs")(x)[:, 0] + 1e-30)
    (flat,) = torch.autograd.grad(before.sum(), x)
    assert torch.all(before == before[0]) and flat.abs().sum() == 0
    near = model.with_options(crop="center").torch_module("log_probs")
    with torch.no_grad():  # where nothing underflows it is log p itself (ten crops: of their mean)
        net[1].bias.zero_()
        probs = model.torch_module("probs")(x)
        torch.testing.assert_close(model.torch_module("log_probs")(x).exp(), probs)
        torch.testing.assert_close(near(x).exp(), model.with_options(crop="center").torch_module("probs")(x))
    assert CPPNGradient(model, np.arange(10), 0, cppn_resolution=16).module.output == "log_probs"
