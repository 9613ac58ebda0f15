"""Robust reference models: PGD as torchattacks and a hand-worked case define it, cheap builds, kills."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import onnx
import pytest
import torch
import torchattacks
from onnx import numpy_helper
from test_run import CLI

import foolbench.zoo as zoo
from foolbench.data.mnist import load_mnist
from foolbench.errors import FoolbenchError
from foolbench.models.card import CARD_METADATA_KEY, card_from_json
from foolbench.zoo import registry
from foolbench.zoo.lenet import LeNet, as_images, seeded
from foolbench.zoo.outliers import KINDS, outlier_images, outlier_mix
from foolbench.zoo.robust import RECIPES, Recipe, attacked_digits
from foolbench.zoo.robustness import (
    cross_entropy_of,
    module_probs,
    noise_figures,
    pgd,
    robust_accuracy,
)

CHEAP_OE = 2  # epochs: the kill lands after the first checkpoint, the resumed build runs the second


def card_of(path):
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return card_from_json(props[CARD_METADATA_KEY], str(path))


def weights_of(path) -> dict:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def lenet_of(path) -> LeNet:
    module = LeNet().eval()
    module.load_state_dict({k: torch.tensor(v) for k, v in weights_of(path).items() if "." in k})
    return module


class Linear2(torch.nn.Module):
    """Two classes, logits [0, w.x + b]: the worst case in an L-inf ball is known in closed form."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w, self.b = torch.nn.Parameter(w, requires_grad=False), b

    def forward(self, x):
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], 1)


def test_own_pgd_gives_torchattacks_images_to_the_bit():
    module = seeded(LeNet, 0).eval()
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    torch.manual_seed(5)
    theirs = torchattacks.PGD(module, eps=0.3, alpha=0.01, steps=20, random_start=True)(x, y)
    torch.manual_seed(5)
    ours = pgd(module, x, cross_entropy_of(y), eps=0.3, alpha=0.01, steps=20)
    assert torch.equal(ours, theirs)
    assert (ours - x).abs().max() <= 0.3 + 1e-6 and ours.min() >= 0 and ours.max() <= 1


def test_pgd_and_robust_accuracy_reach_the_hand_worked_optimum():
    """For label 1 the worst case of w.x + b within eps is x - eps sign(w) (pixels stay inside [0, 1]),
    which lowers the score by eps |w|_1: a point is robust iff its score exceeds that."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=gen)
    x = 0.4 + 0.2 * torch.rand(40, 1, 4, 4, generator=gen)
    eps = 0.1
    scores = x.flatten(1) @ w
    middle = float(scores.sort().values[19:21].mean())  # half the points robust, none near the edge
    b = -middle + eps * float(w.abs().sum())
    module, labels = Linear2(w, b), torch.ones(40, dtype=torch.int64)
    worst = pgd(module, x, cross_entropy_of(labels), eps, alpha=0.05, steps=10)
    assert torch.allclose(worst, x - eps * torch.sign(w).view(1, 1, 4, 4), atol=1e-6)
    expected = float((scores + b - eps * w.abs().sum() > 0).float().mean())
    assert expected == 0.5
    assert robust_accuracy(module, x, labels, {"eps": eps, "alpha": 0.05, "steps": 10}) == expected


def test_outliers_are_images_of_each_kind_and_seeded():
    for kind in KINDS:
        images = outlier_images(kind, 30, np.random.default_rng(0))
        assert images.shape == (30, 1, 28, 28) and images.dtype == np.float32
        assert images.min() >= 0 and images.max() <= 1
    smoothed = outlier_images("smoothed", 30, np.random.default_rng(0))
    assert np.allclose(smoothed.min((1, 2, 3)), 0) and np.allclose(smoothed.max((1, 2, 3)), 1)
    assert np.array_equal(
        outlier_mix(50, np.random.default_rng(4)), outlier_mix(50, np.random.default_rng(4))
    )
    with pytest.raises(ValueError, match="unknown outlier kind"):
        outlier_images("evolved", 1, np.random.default_rng(0))


def test_plain_lenet_is_confident_on_noise_and_not_robust(lenet):
    """What the robust references are measured against: the zoo's plain LeNet."""
    module = lenet_of(lenet)
    shares = noise_figures(module_probs(module))
    assert shares["uniform"] > 0.3 and shares["cppn"] > 0.5
    digits = load_mnist()
    chosen = attacked_digits(len(digits.test_y), 100)
    images, labels = as_images(digits.test_x[chosen]), torch.as_tensor(digits.test_y[chosen])
    assert robust_accuracy(module, images, labels, {"restarts": 1}) < 0.05


def test_recipe_ramps_eps_and_steps():
    recipe = Recipe(method="pgd", epochs=10, eps=0.3, steps=10, ramp=0.5)
    assert recipe.at(0, 1000)[1] == 1 and recipe.at(0, 1000)[0] == pytest.approx(0.3 * 1 / 500)
    eps, steps, alpha = recipe.at(249, 1000)
    assert (eps, steps, alpha) == (pytest.approx(0.15), 5, pytest.approx(2.5 * 0.15 / 5))
    assert recipe.at(999, 1000) == (pytest.approx(0.3), 10, pytest.approx(0.075))
    assert RECIPES["lenet-mnist-pgd"].recipe.eps == 0.3 and RECIPES["lenet-mnist-oe"].recipe.method == "oe"
    fast = RECIPES["airnet-cifar10-at"].recipe  # FGSM from a random start, a step of 1.25 eps
    assert fast.at(0, 100) == (pytest.approx(8 / 255), 1, pytest.approx(1.25 * 8 / 255))


@pytest.mark.slow
def test_killed_oe_build_resumes_to_the_uninterrupted_weights(tmp_path):
    """SIGKILL after the first epoch's checkpoint: no .onnx appears, and the rebuild resumes there and
    ends with the weights of a build that ran through; stale temporaries are cleared."""
    whole = zoo.build("lenet-mnist-oe", out_dir=tmp_path / "whole", epochs=CHEAP_OE, progress=False)
    out = tmp_path / "killed"
    command = [*CLI, "zoo", "build", "lenet-mnist-oe", "--epochs", str(CHEAP_OE), "--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / ".lenet-mnist-oe.build" / "checkpoint.pt"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not checkpoint.exists():
        time.sleep(0.05)
    assert proc.poll() is None, "the build ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(out.glob("*.onnx"))
    stale = out / ".lenet-mnist-oe.onnx.abc123.tmp"  # as a kill mid-export would leave
    stale.write_bytes(b"half")
    resumed = zoo.build("lenet-mnist-oe", out_dir=out, epochs=CHEAP_OE, progress=False)
    first, second = weights_of(whole), weights_of(resumed)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert sorted(p.name for p in out.iterdir()) == ["lenet-mnist-oe.md", "lenet-mnist-oe.onnx"]
    assert "resumed 1 time" in resumed.with_suffix(".md").read_text()
    card = card_of(resumed)
    assert card.extra["recipe"]["epochs"] == CHEAP_OE and card.accuracy >= 0.9
    assert card.extra["rebuild"] == f"foolbench zoo build lenet-mnist-oe --epochs {CHEAP_OE}"
    assert max(card.extra["confident_on_noise"].values()) < 0.1  # plain LeNet: 64-85 %


@pytest.mark.slow
def test_a_foreign_checkpoint_is_not_resumed(tmp_path):
    """A checkpoint of another recipe (or a corrupt one) is ignored: the build starts over."""
    work = tmp_path / ".lenet-mnist-oe.build"
    work.mkdir()
    (work / "checkpoint.pt").write_bytes(b"not a checkpoint")
    path = zoo.build("lenet-mnist-oe", out_dir=tmp_path, epochs=1, progress=False)
    assert "resumed" not in path.with_suffix(".md").read_text() and not work.exists()


@pytest.mark.slow
def test_cheap_pgd_build_is_more_robust_than_plain_lenet(tmp_path, lenet):
    """Two epochs (~35 s on idle cores): 65 % clean, 24.5 % robust on 200 digits; plain LeNet 0 %."""
    path = zoo.build("lenet-mnist-pgd", out_dir=tmp_path, epochs=2, attack_digits=200, progress=False)
    card = card_of(path)
    attack = card.extra["robust_attack"]
    assert (attack["eps"], attack["steps"], attack["restarts"], attack["digits"]) == (0.3, 50, 3, 200)
    assert card.accuracy >= 0.5 and card.extra["robust_accuracy"] >= 0.15
    digits = load_mnist()
    chosen = attacked_digits(len(digits.test_y), 200)
    assert len(set(digits.test_y[chosen])) == 10  # a spread of digits, not the first 200 (all zeros)
    images, labels = as_images(digits.test_x[chosen]), torch.as_tensor(digits.test_y[chosen])
    assert (
        round(robust_accuracy(lenet_of(path), images, labels), 4) == card.extra["robust_accuracy"]
    )  # as the card rounds
    assert robust_accuracy(lenet_of(lenet), images, labels) < 0.05
    page = path.with_suffix(".md").read_text()
    assert "torchattacks" in page and f"{card.extra['robust_accuracy']:.1%}" in page


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"name": "lenet-mnist", "epochs": 3},
            "--epochs: only lenet-mnist-pgd, .*lenet-mnist-defended, airnet-cifar10, .* take it",
        ),
        (
            {"name": "efficientnet-lite0", "attack_digits": 10},
            "--attack-digits: only lenet-mnist-pgd, lenet-mnist-oe, airnet-cifar10, .* take it",
        ),
        (
            {"name": "lenet-mnist-pgd", "generations": 5},
            "--generations: only lenet-mnist-defended, airnet-cifar10-defended take it",
        ),
        ({"name": "lenet-mnist-defended", "attack_digits": 10}, "not lenet-mnist-defended"),
        ({"name": "lenet-mnist-defended", "generations": 0}, "whole number >= 1"),
        ({"name": "lenet-mnist-defended", "data": "digits"}, "retrains lenet-mnist as built in the zoo"),
        ({"name": "lenet-mnist-oe", "epochs": 0}, "whole number >= 1"),
        ({"name": "lenet-mnist-oe", "weights": "w.pth"}, "--weights is for alexnet"),
    ],
)
def test_bad_robust_options_are_refused(kwargs, message, tmp_path):
    with pytest.raises(FoolbenchError, match=message):
        zoo.build(out_dir=tmp_path, progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_robust_seed_twins_and_listing(tmp_path):
    assert registry.resolve("lenet-mnist-pgd-s2")[1:] == (2, "lenet-mnist-pgd-s2")
    rows = {row["name"]: row for row in zoo.list_zoo(tmp_path)}
    assert rows["lenet-mnist-oe"]["dataset"] == "mnist" and not rows["lenet-mnist-pgd"]["built"]
