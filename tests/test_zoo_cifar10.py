"""The CIFAR-10 zoo entries, built at tiny sizes on a few images the tests make.

The shared recipes (`foolbench.zoo.training`) train them; these tests check what a user relies on:
a build resumed after a kill, or built in another folder, is the same file to the byte; the card
holds the figures it promises; the references are configurations of the same builders.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from test_cifar10 import write_folder

import foolbench.zoo as zoo
from foolbench.data.cifar10 import load_cifar10
from foolbench.errors import FoolbenchError
from foolbench.models.card import CARD_METADATA_KEY, FOOLING, card_from_json
from foolbench.models.load import load_model
from foolbench.zoo import defended, robustness, training
from foolbench.zoo.cifar import SHAPE, Cifar10Task, as_float
from foolbench.zoo.robust import RECIPES, describe


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A CIFAR-10 ImageFolder of 30 training and 20 test images, found through $FOOLBENCH_DATA."""
    home = tmp_path_factory.mktemp("data")
    write_folder(home / "cifar10")
    return home


@pytest.fixture(autouse=True)
def cheap(tiny, tmp_path, monkeypatch):
    """The tiny data set, a private cache, and 50 noise images per kind on the card instead of 1,000."""
    monkeypatch.setenv("FOOLBENCH_DATA", str(tiny))
    monkeypatch.setenv("FOOLBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(robustness, "NOISE_IMAGES", 50)


def card_of(path):
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return card_from_json(props[CARD_METADATA_KEY], str(path))


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plain_build_resumed_or_built_elsewhere_is_the_same_file(tmp_path, monkeypatch):
    whole = zoo.build("airnet-cifar10", out_dir=tmp_path / "a", epochs=2, attack_digits=4, progress=False)
    epoch, calls = training._epoch, []

    def killed_in_the_second_epoch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return epoch(*args)

    monkeypatch.setattr(training, "_epoch", killed_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        zoo.build("airnet-cifar10", out_dir=tmp_path / "b", epochs=2, attack_digits=4, progress=False)
    assert not list((tmp_path / "b").glob("*.onnx"))
    resumed = zoo.build("airnet-cifar10", out_dir=tmp_path / "b", epochs=2, attack_digits=4, progress=False)
    assert len(calls) == 3 and sha(resumed) == sha(whole)  # the second epoch ran again, once
    assert "resumed 1 time" in resumed.with_suffix(".md").read_text()

    card = card_of(whole)
    assert card.dataset == "cifar10" and card.input_size == [32, 32] and card.channels == 3
    assert card.mean == [0.0] * 3 and card.labels[0] == "airplane" and card.extra["test_size"] == 20
    extra = card.extra
    assert extra["recipe"]["method"] == "plain" and extra["recipe"]["epochs"] == 2 and extra["threads"] == 1
    assert extra["robust_attack"]["steps"] == 20 and extra["robust_attack"]["eps"] == pytest.approx(8 / 255)
    assert extra["robust_attack"]["digits"] == 4 and 0 <= extra["robust_accuracy"] <= 1
    assert set(extra["confident_on_noise"]) == {"uniform", "smoothed", "cppn"}
    assert str(tmp_path) not in card.to_json()  # no path: the same weights, the same bytes anywhere
    assert extra["rebuild"] == "foolbench zoo build airnet-cifar10 --epochs 2 --attack-digits 4"
    data = load_cifar10()
    right = load_model(str(whole)).probs(as_float(data.test_x).numpy()).argmax(1) == data.test_y
    assert card.accuracy == pytest.approx(right.mean(), abs=1e-4)  # the card's accuracy is this file's


def test_adversarial_and_outlier_references_are_configurations_of_one_recipe(tmp_path):
    plain, at, oe = (RECIPES[f"airnet-cifar10{s}"].recipe for s in ("", "-at", "-oe"))
    assert at == replace(plain, method="pgd", eps=8 / 255, steps=1, step_size=1.25, whitening=1.0)
    assert oe == replace(plain, method="oe", whitening=1.0, joint_outliers=True, recalibrate=20)
    path = zoo.build("airnet-cifar10-at", out_dir=tmp_path, epochs=1, attack_digits=4, progress=False)
    card = card_of(path)
    assert card.extra["recipe"]["method"] == "pgd" and card.extra["recipe"]["step_size"] == 1.25
    assert card.extra["recipe"]["whitening"] == 1.0 and "eigenvalues + 1;" in card.extra["whitening"]
    assert "FGSM from a uniform random start" in path.with_suffix(".md").read_text()
    told = describe(oe, 0, "SGD", "images")  # the OE card says how its outliers met batch norm
    assert (
        "random CPPNs; `foolbench.zoo.outliers`) in each batch of images, one forward pass for both" in told
    )
    assert "running statistics recomputed with the final weights over 20 training batches" in told
    assert "beside each batch of digits, in a pass of their own" in describe(
        RECIPES["lenet-mnist-oe"].recipe, 0, "Adam", "digits"
    )
    task = Cifar10Task(load_cifar10())
    outliers = task.outliers(6, np.random.default_rng(0))
    assert outliers.shape == (6, *SHAPE) and outliers.min() >= 0 and outliers.max() <= 1
    images = as_float(task.data.train_x)
    labels = torch.as_tensor(task.data.train_y)
    one = dict(images=images, labels=labels, seed=0, progress=False, data="tiny")
    _, facts = training.train(task, recipe=replace(oe, epochs=1), work=tmp_path / "oe", **one)
    _, plain_facts = training.train(task, recipe=replace(plain, epochs=1), work=tmp_path / "p", **one)
    assert (
        facts["final_loss"] > plain_facts["final_loss"]
    )  # the flat-softmax term is added to the same batches


def test_adversarial_reference_caps_the_whitening_gain_that_broke_its_first_build():
    """An L-inf step of 8/255 must not move any whitened direction by more than it moves the pixels:
    with airbench's eps the rarest direction's gain is 1 / sqrt(eps) (~45 at most), which made FGSM
    training overfit catastrophically (clean 38.5 %, PGD-20 0 %)."""
    data = load_cifar10()

    def gains(whitening):
        module = Cifar10Task(data, whitening=whitening).network(0)
        return module.whiten.weight.flatten(1).norm(dim=1)  # each filter: eigenvector / sqrt(value + eps)

    capped, plain = gains(RECIPES["airnet-cifar10-at"].recipe.whitening), gains(None)
    assert capped.max() <= 1 + 1e-6 and plain.max() > 2 * capped.max()


def oe_step(task, joint: bool):
    """One OE loss on 8 images and 8 outliers through a fresh network in training mode: (loss, the
    network's input batches, the first batch norm layer and its input batches)."""
    module = task.network(0).train()
    first = next(m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    batches, normed = [], []
    module.register_forward_hook(lambda net, args, out: batches.append(args[0].detach()))
    first.register_forward_hook(lambda layer, args, out: normed.append(args[0].detach()))
    images = as_float(task.data.train_x[:8])
    outliers = torch.from_numpy(task.outliers(8, np.random.default_rng(0)))
    recipe = replace(RECIPES["airnet-cifar10-oe"].recipe, joint_outliers=joint or None)
    loss = training._oe_loss(module, images, torch.as_tensor(task.data.train_y[:8]), outliers, recipe)
    return loss, (images, outliers), batches, first, normed


def test_joint_outlier_exposure_normalises_real_images_and_outliers_together():
    """The CIFAR-10 OE reference passes real images and outliers as one batch, so that batch norm's
    running statistics (used at test time) are those both were trained with."""
    task = Cifar10Task(load_cifar10(), whitening=1.0)
    assert RECIPES["airnet-cifar10-oe"].recipe.joint_outliers
    loss, (images, outliers), batches, first, normed = oe_step(task, joint=True)
    assert len(batches) == 1 and torch.equal(batches[0], torch.cat((images, outliers)))
    assert torch.allclose(first.running_mean, first.momentum * normed[0].mean((0, 2, 3)), atol=1e-6)
    separate = oe_step(task, joint=False)[0]
    assert not torch.isclose(loss, separate)  # normalised with the mix's statistics, not each pass's own


def test_recalibrated_statistics_are_the_final_weights_and_survive_a_resume(tmp_path):
    """The OE reference's batch norm statistics are recomputed after training (they lagged the weights:
    15 % clean accuracy against 54 % recomputed); resuming a finished build gives the same ones."""
    task = Cifar10Task(load_cifar10(), whitening=1.0)
    recipe = replace(RECIPES["airnet-cifar10-oe"].recipe, epochs=1, batch_size=8, recalibrate=2)
    one = dict(images=as_float(task.data.train_x), labels=torch.as_tensor(task.data.train_y), seed=0)
    first, _ = training.train(task, recipe=recipe, work=tmp_path, progress=False, data="tiny", **one)
    again, facts = training.train(task, recipe=recipe, work=tmp_path, progress=False, data="tiny", **one)
    kept, _ = training.train(
        task,
        recipe=replace(recipe, recalibrate=None),
        work=tmp_path / "k",
        progress=False,
        data="tiny",
        **one,
    )
    state, resumed, stale = first.state_dict(), again.state_dict(), kept.state_dict()
    assert facts["resumed"] == 1 and all(torch.equal(state[k], resumed[k]) for k in state)
    means = [k for k in state if k.endswith("running_mean")]
    weights, same = dict(first.named_parameters()), dict(kept.named_parameters())
    assert all(torch.equal(weights[k], same[k]) for k in weights)
    assert not all(torch.allclose(state[k], stale[k]) for k in means)  # same weights, other statistics
    assert all(int(state[k.replace("running_mean", "num_batches_tracked")]) == 2 for k in means)


def test_separate_outlier_pass_leaves_batch_norm_statistics_to_the_real_images():
    """Without `joint_outliers`, AirNet's running statistics (used at test time) must be the real
    images': when the outliers' pass moved them, clean test accuracy fell to 14 % after one epoch
    (58 % for the plain build)."""
    _, (images, outliers), batches, first, normed = oe_step(Cifar10Task(load_cifar10()), joint=False)
    assert len(batches) == 2 and torch.equal(batches[0], outliers) and torch.equal(batches[1], images)
    expected = first.momentum * normed[1].mean((0, 2, 3))  # the real images' pass alone moved them
    assert torch.allclose(first.running_mean, expected, atol=1e-6)
    assert first.momentum > 0  # restored after the outliers' pass


def test_defended_cifar10_build_is_the_defence_loop_with_the_cifar_network(tmp_path, monkeypatch):
    base = zoo.build("airnet-cifar10", out_dir=tmp_path, epochs=1, attack_digits=4, progress=False)
    small = defended.Recipe(attack="cifar-cppn", iterations=1, runs=1)
    entry = defended.RECIPES["airnet-cifar10-defended"]
    monkeypatch.setitem(defended.RECIPES, "airnet-cifar10-defended", replace(entry, recipe=small))
    path = zoo.build("airnet-cifar10-defended", out_dir=tmp_path, generations=2, epochs=1, progress=False)
    card = card_of(path)
    assert card.labels[-1] == FOOLING and len(card.labels) == 11 and card.dataset == "cifar10"
    assert card.extra["original_sha256"] == sha(base) and card.extra["fooling_images"] == 10
    assert [row["iteration"] for row in card.extra["iterations"]] == [0, 1]
    assert "robust_accuracy" in card.extra and set(card.extra["confident_on_noise"]) == {
        "uniform",
        "smoothed",
        "cppn",
    }
    assert not (tmp_path / ".airnet-cifar10-defended.build").exists()


def test_cifar10_builds_without_the_data_say_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv("FOOLBENCH_DATA")
    with pytest.raises(FoolbenchError, match=r"FOOLBENCH_DATA is not set.*--data DIR") as err:
        zoo.build("airnet-cifar10", out_dir=tmp_path, progress=False)
    assert "\n" not in str(err.value) and list(tmp_path.iterdir()) == []
    shutil.rmtree(tmp_path)
