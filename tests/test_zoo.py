"""The zoo: real builds of LeNet and EfficientNet-Lite0, the torchvision weight paths, offline errors.

Nothing here touches the network: FOOLBENCH_OFFLINE is set and the torch hub cache points at an
empty folder, so AlexNet/GoogLeNet get their weights only from files the tests write.
"""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import numpy_helper

import foolbench.zoo as zoo
from foolbench.data.mnist import load_mnist
from foolbench.data.photos import photo
from foolbench.errors import FoolbenchError
from foolbench.fileio import sha256_file
from foolbench.models import load_model
from foolbench.models.base import card_input
from foolbench.models.card import CARD_METADATA_KEY, ModelCard, card_from_json
from foolbench.zoo import imagenet, registry
from foolbench.zoo.export import export_onnx, onnx_probs
from foolbench.zoo.lenet import LeNet, accuracy, as_images, seeded, train_classifier


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("FOOLBENCH_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


@pytest.fixture(scope="session")
def lite0(tmp_path_factory):
    return zoo.build("efficientnet-lite0", out_dir=tmp_path_factory.mktemp("lite"), progress=False)


def card_of(path):
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return card_from_json(props[CARD_METADATA_KEY], str(path))


def weights_of(path) -> dict:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_lenet_card_records_measured_accuracy(lenet):
    card = card_of(lenet)
    assert card.name == "lenet-mnist" and card.dataset == "mnist"
    assert card.labels == [str(d) for d in range(10)]
    assert card.accuracy >= 0.95
    assert (card.input_size, card.channels, card.layout) == ([28, 28], 1, "NCHW")
    assert (card.mean, card.std, card.output) == ([0.0], [1.0], "logits")
    assert card.extra["seed"] == 0 and card.extra["rebuild"] == "foolbench zoo build lenet-mnist"
    page = lenet.with_suffix(".md").read_text()
    assert f"{card.accuracy:.2%}" in page and "foolbench zoo build lenet-mnist" in page


def test_lenet_onnx_equals_the_torch_module_with_its_weights(lenet):
    """The file's weights, loaded into foolbench.zoo.lenet:LeNet, give the file's own outputs."""
    module = LeNet().eval()
    module.load_state_dict({k: torch.tensor(v) for k, v in weights_of(lenet).items() if "." in k})
    digits = load_mnist()
    images = as_images(digits.test_x)
    from_onnx = onnx_probs(lenet, images.numpy())
    with torch.no_grad():
        from_torch = torch.softmax(module(images), 1).numpy()
    assert np.abs(from_onnx - from_torch).max() < 1e-4
    assert (from_onnx.argmax(1) == digits.test_y).mean() == pytest.approx(card_of(lenet).accuracy, abs=1e-4)
    assert onnx_probs(lenet, images[:1].numpy()).shape == (1, 10)  # the batch axis is free


def test_same_seed_same_weights_and_seed_twin_differs(tmp_path, monkeypatch):
    """Built twice with one seed, a model is the same to the bit; another seed gives a twin.

    On the MLP with 4 of its recipe's 30 epochs: the same training and build code as LeNet's, at a
    tenth of the cost (the full recipes are what the lenet fixture and `make run` build).
    """
    from foolbench.zoo import mnist_models

    factory, _, batch_size, summary = mnist_models.ARCHITECTURES["mlp-mnist"]
    monkeypatch.setitem(mnist_models.ARCHITECTURES, "mlp-mnist", (factory, 4, batch_size, summary))
    built = zoo.build("mlp-mnist", out_dir=tmp_path / "first", progress=False)
    again = zoo.build("mlp-mnist", out_dir=tmp_path / "again", progress=False)
    twin = zoo.build("mlp-mnist", seed=1, out_dir=tmp_path / "twin", progress=False)
    assert again.name == "mlp-mnist.onnx" and twin.name == "mlp-mnist-s1.onnx"
    first, second, other = weights_of(built), weights_of(again), weights_of(twin)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert built.read_bytes() == again.read_bytes()  # same bytes, so the same sha256 runs are keyed on
    # ... wherever it is built: no path of this checkout (the exporter's stack traces) is in the file
    assert str(Path(zoo.__file__).resolve().parents[2]).encode() not in built.read_bytes()
    assert not np.array_equal(first["fc1.weight"], other["fc1.weight"])
    twin_card = card_of(twin)
    assert (
        twin_card.name == "mlp-mnist-s1" and twin_card.extra["seed"] == 1 and twin_card.extra["epochs"] == 4
    )
    digits = load_mnist()
    measured = (onnx_probs(twin, as_images(digits.test_x).numpy()).argmax(1) == digits.test_y).mean()
    assert twin_card.accuracy == round(measured, 4) and twin_card.accuracy >= 0.9  # as the card rounds it
    assert twin_card.extra["rebuild"] == "foolbench zoo build mlp-mnist-s1"


def test_ensure_returns_the_built_file_without_rebuilding(lenet):
    stamp = lenet.stat().st_mtime_ns
    assert zoo.ensure("lenet-mnist", out_dir=lenet.parent) == lenet
    assert lenet.stat().st_mtime_ns == stamp


def test_train_classifier_is_generic_over_classes():
    """The retraining defence adds an 11th class of float images; the loop must not care."""
    digits = load_mnist()
    x = np.concatenate(
        [as_images(digits.train_x[:300]).numpy(), np.random.default_rng(0).random((30, 1, 28, 28))]
    )
    y = np.concatenate([digits.train_y[:300], np.full(30, 10)])
    module = seeded(lambda: LeNet(num_classes=11), 0)
    facts = train_classifier(module, x, y, seed=0, epochs=2)
    assert facts["train_size"] == 330 and module(torch.zeros(2, 1, 28, 28)).shape == (2, 11)
    with torch.no_grad():
        predicted = module(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy()
    assert accuracy(module, x, y) == pytest.approx((predicted == y).mean())
    assert (predicted[300:] == 10).all()  # the added class is learnt: every noise image is put in it
    assert (predicted[:300] == y[:300]).mean() >= 0.9  # and the digits (untrained: 0 of them)


def test_lite0_card_and_the_cat_photo_is_a_cat(lite0):
    card = card_of(lite0)
    assert card.dataset == "imagenet" and len(card.labels) == 1000 and card.labels[281] == "tabby"
    assert (card.input_size, card.resize, card.crop, card.output) == ([224, 224], 256, "center", "logits")
    assert card.accuracy is None and card.extra["reported_top1"] == pytest.approx(0.751)
    probs = onnx_probs(lite0, card_input(photo("chelsea")[None], card).numpy())
    assert int(probs.argmax()) in imagenet.CAT_CLASSES
    assert onnx_probs(lite0, card_input(photo("coffee")[None], card).numpy()).argmax() != probs.argmax()
    adapter = load_model(str(lite0))  # what every attack feeds it: the same top-1 on the cat
    assert int(adapter.probs(photo("chelsea")[None]).argmax()) == int(probs.argmax())
    assert lite0.with_suffix(".md").is_file()


def test_failed_check_leaves_no_file(tmp_path):
    def refuse(probs):
        raise FoolbenchError("not a cat")

    path = tmp_path / "m.onnx"
    with pytest.raises(FoolbenchError, match="not a cat"):
        export_onnx(LeNet().eval(), path, ModelCard(name="m"), torch.rand(2, 1, 28, 28), check=refuse)
    assert list(tmp_path.iterdir()) == []


def test_cat_check_rejects_a_dog():
    probs = np.zeros((2, 1000), dtype=np.float32)
    probs[0, 207] = 1.0  # golden retriever
    with pytest.raises(FoolbenchError, match="golden retriever"):
        imagenet.cat_check("x", imagenet.imagenet_labels())(probs)
    probs[0, 285] = 2.0
    imagenet.cat_check("x", imagenet.imagenet_labels())(probs)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(FoolbenchError, match="lenet-mnist, mlp-mnist, efficientnet-lite0"):
        zoo.build("resnet-9000", progress=False)


@pytest.mark.parametrize(
    ("name", "seed", "expected"),
    [
        ("lenet-mnist", 0, ("lenet-mnist", 0, "lenet-mnist")),
        ("lenet-mnist-s2", 0, ("lenet-mnist", 2, "lenet-mnist-s2")),
        ("lenet-mnist", 3, ("lenet-mnist", 3, "lenet-mnist-s3")),
        ("mlp-mnist-s1", 1, ("mlp-mnist", 1, "mlp-mnist-s1")),
    ],
)
def test_seed_twin_names(name, seed, expected):
    entry, got_seed, stem = registry.resolve(name, seed)
    assert (entry.name, got_seed, stem) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "lenet-mnist-s2", "seed": 3}, "give only one"),
        ({"name": "alexnet", "seed": 1}, "only the models trained here"),
        ({"name": "efficientnet-lite0-s1"}, "unknown zoo model"),
        ({"name": "lenet-mnist", "weights": "w.pth"}, "--weights is for alexnet"),
        ({"name": "googlenet", "data": "somewhere"}, "--data is for the MNIST models"),
    ],
)
def test_contradictory_options_are_refused(kwargs, message):
    with pytest.raises(FoolbenchError, match=message):
        zoo.build(progress=False, **kwargs)


def test_alexnet_offline_without_weights_says_pass_weights(tmp_path):
    with pytest.raises(FoolbenchError) as err:
        zoo.build("alexnet", out_dir=tmp_path, progress=False)
    message = str(err.value)
    assert (
        "--weights FILE" in message
        and registry.TORCHVISION_URLS["alexnet"] in message
        and "\n" not in message
    )
    assert list(tmp_path.iterdir()) == []


def test_bad_weight_files_are_user_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_text("hello")
    lenet_weights = tmp_path / "lenet.pth"
    torch.save(LeNet().state_dict(), lenet_weights)
    shapes = tmp_path / "shapes.pth"
    torch.save(torchvision.models.alexnet(weights=None, num_classes=10).state_dict(), shapes)
    cases = [
        (tmp_path / "missing.pth", "does not exist"),
        (junk, "can read"),
        (lenet_weights, "missing keys"),
    ]
    for weights, message in cases + [(shapes, "wrong shape, e.g. 'classifier.6.weight' \\[10, 4096\\]")]:
        with pytest.raises(FoolbenchError, match=message) as err:
            zoo.build("alexnet", out_dir=tmp_path / "out", weights=weights, progress=False)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_googlenet_from_a_user_state_dict(tmp_path):
    """Random weights load and export, but are recorded as unverified and skip the cat check."""
    weights = tmp_path / "googlenet.pth"
    torch.manual_seed(0)
    torch.save(
        torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True).state_dict(), weights
    )
    path = zoo.build("googlenet", out_dir=tmp_path, weights=weights, progress=False)
    card = card_of(path)
    assert len(card.labels) == 1000 and card.mean == imagenet.IMAGENET_MEAN and card.resize == 256
    assert card.extra["weights_are_torchvision_release"] is False and "reported_top1" not in card.extra
    assert card.extra["rebuild"] == f"foolbench zoo build googlenet --weights {weights}"
    assert onnx_probs(path, np.zeros((3, 3, 224, 224), np.float32)).shape == (3, 1000)


def test_torchvision_release_is_downloaded_to_the_hub_cache_and_cat_checked(monkeypatch, tmp_path):
    """A file whose sha256 matches its torchvision-style name counts as the release: the cat check runs."""
    torch.manual_seed(0)
    state = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).state_dict()
    staged = tmp_path / "staged.pth"
    torch.save(state, staged)
    release = tmp_path / f"googlenet-{sha256_file(staged)[:8]}.pth"
    staged.rename(release)
    monkeypatch.setitem(registry.TORCHVISION_URLS, "googlenet", release.as_uri())
    monkeypatch.delenv("FOOLBENCH_OFFLINE")
    with pytest.raises(FoolbenchError, match="not a cat"):  # random weights see no cat
        zoo.build("googlenet", out_dir=tmp_path / "out", progress=False)
    assert (tmp_path / "torch-home" / "hub" / "checkpoints" / release.name).is_file()
    assert not (tmp_path / "out" / "googlenet.onnx").exists()


def test_torchvision_urls_agree_with_torchvision():
    from torchvision.models import AlexNet_Weights, GoogLeNet_Weights

    assert registry.TORCHVISION_URLS == {
        "alexnet": AlexNet_Weights.IMAGENET1K_V1.url,
        "googlenet": GoogLeNet_Weights.IMAGENET1K_V1.url,
    }
    assert imagenet._hash_prefix(registry.TORCHVISION_URLS["alexnet"]) == "7be5be79"


def test_list_zoo_and_zoo_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FOOLBENCH_ZOO", str(tmp_path))
    assert zoo.zoo_dir() == tmp_path
    (tmp_path / "mlp-mnist.onnx").write_bytes(b"")
    rows = {row["name"]: row for row in zoo.list_zoo()}
    assert tuple(rows) == zoo.ZOO_NAMES
    assert rows["mlp-mnist"]["built"] and not rows["lenet-mnist"]["built"]
    assert (
        rows["alexnet"]["needs_internet_or_weights"]
        and not rows["efficientnet-lite0"]["needs_internet_or_weights"]
    )
    monkeypatch.delenv("FOOLBENCH_ZOO")
    monkeypatch.chdir(tmp_path)  # from any working directory, a checkout's models stay in its zoo/
    assert zoo.zoo_dir() == Path(zoo.__file__).resolve().parents[2] / "zoo"


def test_run_on_a_missing_zoo_file_builds_it_there(tmp_path, monkeypatch, foolbench):
    """`--model zoo/NAME.onnx` where NAME is a zoo entry: the file is built into that folder (as
    `--model NAME` builds into the zoo) and the run uses it. On the MLP with 1 epoch of its recipe on
    256 digits (the full build is what the other zoo tests and `make run` cover)."""
    from foolbench.zoo import mnist_models

    factory, _, batch_size, summary = mnist_models.ARCHITECTURES["mlp-mnist"]
    monkeypatch.setitem(mnist_models.ARCHITECTURES, "mlp-mnist", (factory, 1, batch_size, summary))
    train = mnist_models.train_classifier
    monkeypatch.setattr(
        mnist_models, "train_classifier", lambda m, x, y, **kw: train(m, x[:256], y[:256], **kw)
    )
    monkeypatch.setenv("FOOLBENCH_ZOO", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zoo").mkdir()
    args = ["--attack", "mnist-cppn", "--classes", "0-1", "--generations", "1", "--out", "run"]
    result = foolbench("run", "--model", "zoo/mlp-mnist.onnx", *args)
    assert result.returncode == 0, result.stderr
    built = tmp_path / "zoo" / "mlp-mnist.onnx"
    assert built.is_file() and (tmp_path / "zoo" / "mlp-mnist.md").is_file()
    assert card_of(built).extra["epochs"] == 1
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["models"][0]["sha256"] == sha256_file(built)
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("name", ["alexnet", "googlenet"])
def test_run_on_a_missing_torchvision_zoo_file_says_how_to_give_weights(
    tmp_path, monkeypatch, foolbench, name
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zoo").mkdir()
    result = foolbench("run", "--model", f"zoo/{name}.onnx", "--out", "run")
    assert result.returncode == 2
    message = result.stderr.strip()
    file = registry.TORCHVISION_URLS[name].rsplit("/", 1)[1]
    assert f"foolbench zoo build {name} --weights FILE" in message and file in message
    assert len(message.splitlines()) == 1
    assert list((tmp_path / "zoo").iterdir()) == [] and not (tmp_path / "run").exists()
