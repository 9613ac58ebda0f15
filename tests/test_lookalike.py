"""The look-alike measure: real digits are look-alikes of their class, noise and CPPN patterns are not."""

import numpy as np
import pytest

from foolbench.data.mnist import load_mnist
from foolbench.encodings import CPPNEncoding
from foolbench.encodings.cppn import ACTIVATIONS, N_INPUTS
from foolbench.errors import FoolbenchError
from foolbench.lookalike import compare, mnist_reference, prepare, reference, run_lookalikes
from foolbench.zoo.outliers import outlier_images


@pytest.fixture(scope="module")
def digits():
    return load_mnist()


@pytest.fixture(scope="module")
def ref():
    return mnist_reference()


def held_out(digits):
    return digits.test_x[:, None].astype(np.float32) / 255, digits.test_y


def stripes(n: int) -> np.ndarray:
    """CPPNs whose output is sine(w x): vertical stripes, the kind of pattern evolution finds first."""
    encoding = CPPNEncoding(resolution=28, channels=1)
    pop = encoding.init(n, np.random.default_rng(0))
    pop["act"][:, N_INPUTS] = ACTIVATIONS.index("sine")
    pop["weight"][:, N_INPUTS, :N_INPUTS] = 0.0
    pop["weight"][:, N_INPUTS, 0] = np.linspace(4, 10, n)  # the x input only
    return encoding.render(pop)


def test_real_held_out_digits_are_lookalikes_of_their_own_class_only(digits, ref):
    images, labels = held_out(digits)
    own = compare(images, labels, ref)
    other = compare(images, (labels + 1) % 10, ref)
    assert own.share >= 0.9  # 94.7 % measured; 99 % of training digits by construction of the threshold
    assert other.share <= 0.01  # 0.3 % measured
    assert (own.table["distance"] < other.table["distance"]).mean() > 0.95


@pytest.mark.parametrize("kind", ["uniform", "smoothed"])
def test_noise_is_no_lookalike_of_any_class(ref, kind):
    noise = outlier_images(kind, 50, np.random.default_rng(3))
    for cls in range(10):
        found = compare(noise, [cls] * len(noise), ref)
        assert found.share == 0.0
        assert (found.table["distance"] > found.table["threshold"]).all()


def test_cppn_stripes_and_flat_images_are_no_lookalikes(ref):
    flat = np.stack([np.full((1, 28, 28), v, np.float32) for v in (0.0, 0.5, 1.0)])
    for images in (stripes(20), flat):
        for cls in range(10):
            assert compare(images, [cls] * len(images), ref).share == 0.0


def test_random_cppn_images_are_rarely_lookalikes(ref):
    images = outlier_images("cppn", 300, np.random.default_rng(1))
    shares = [compare(images, [cls] * len(images), ref).share for cls in range(10)]
    assert np.mean(shares) <= 0.01  # 0.4 % measured


def test_a_real_digit_ranks_closer_than_noise_and_stripes(digits, ref):
    images, labels = held_out(digits)
    digit = images[labels == 3][:1]
    candidates = np.concatenate([digit, outlier_images("uniform", 1, np.random.default_rng(0)), stripes(1)])
    table = compare(candidates, [3, 3, 3], ref).table
    assert table["lookalike"].tolist() == [True, False, False]
    assert table["distance"][0] < table["distance"][1:].min()


def test_nearest_real_image_is_of_the_target_class_and_exact_for_a_reference_image(ref):
    picks = np.array([0, 17, 123])
    found = compare(ref.images[picks], ref.labels[picks], ref)
    assert np.array_equal(found.nearest, ref.images[picks])
    assert np.allclose(found.table["distance"], 0.0, atol=1e-3) and found.table["lookalike"].all()
    noise = outlier_images("uniform", 4, np.random.default_rng(1))
    found = compare(noise, [7, 7, 2, 2], ref)
    nearest_labels = [
        ref.labels[np.flatnonzero((ref.images == im).all((1, 2, 3)))[0]] for im in found.nearest
    ]
    assert nearest_labels == [7, 7, 2, 2]


def test_distance_ignores_brightness_and_contrast(digits):
    images, _ = held_out(digits)
    a = images[:5]
    assert np.allclose(prepare(a).numpy(), prepare(0.2 + 0.5 * a).numpy(), atol=1e-5)


def test_typical_distance_and_threshold_per_class(ref):
    assert ref.classes == list(range(10))
    for cls in ref.classes:
        assert 0 < ref.typical[cls] < ref.threshold[cls] < 2


def test_run_lookalikes_gives_records_share_and_nearest_images(digits):
    images, labels = held_out(digits)
    records, share, nearest = run_lookalikes(images[:10], labels[:10], "mnist")
    assert len(records) == 10 and nearest.shape == (10, 1, 28, 28)
    assert set(records[0]) == {"class", "distance", "typical", "threshold", "nearest_label", "lookalike"}
    assert isinstance(records[0]["lookalike"], bool) and isinstance(records[0]["class"], int)
    assert share == pytest.approx(np.mean([r["lookalike"] for r in records]))


@pytest.mark.parametrize(
    ("champions", "classes", "message"),
    [
        (np.zeros((2, 1, 14, 14), np.float32), [0, 1], "give images of one size"),
        (np.zeros((2, 1, 28, 28), np.float32), [0], "one class per image"),
        (np.zeros((1, 1, 28, 28), np.float32), [10], "no real images of class"),
        (np.full((1, 1, 28, 28), 2.0, np.float32), [0], r"in \[0, 1\]"),
        (np.zeros((28, 28), np.float32), [0], "non-empty"),
    ],
)
def test_bad_input_is_one_line(ref, champions, classes, message):
    with pytest.raises(FoolbenchError, match=message):
        compare(champions, classes, ref)


def test_reference_needs_two_images_per_class_and_one_label_each():
    images = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    with pytest.raises(FoolbenchError, match="at least 2"):
        reference(images, [0, 0, 1])
    with pytest.raises(FoolbenchError, match="one label per image"):
        reference(images, [0, 0])
    with pytest.raises(FoolbenchError, match="no real images known"):
        run_lookalikes(images, [0, 0, 1], "cifar")


def test_a_run_on_a_digit_model_records_its_lookalikes(lenet, tmp_path):
    """summary.json gives the share and classes, results.csv each champion's verdict and distance (as
    compare() gives them for the saved PNGs), and lookalikes.png pairs each champion with its nearest
    real digit."""
    import json

    import pandas as pd
    from PIL import Image

    from foolbench.images import load_png
    from foolbench.runner import RunRequest, start_run

    out = start_run(RunRequest(models=[str(lenet)], attack="mnist-cppn", evaluations=400, out=tmp_path / "r"))
    summary = json.loads((out / "summary.json").read_text())
    results = pd.read_csv(out / "results.csv")
    pngs = np.stack([load_png(out / f, 1) for f in results["file"]])
    found = compare(pngs, results["class"], mnist_reference())
    assert results["lookalike"].tolist() == found.table["lookalike"].tolist()
    np.testing.assert_allclose(results["lookalike_distance"], found.table["distance"], atol=1e-5)
    assert summary["lookalike_share"] == pytest.approx(found.share)
    assert summary["lookalike_classes"] == [int(c) for c in results["class"][results["lookalike"]]]
    fooled = (results["confidence"] >= 0.99) & ~results["lookalike"]
    assert summary["fooled_99_not_lookalike"] == int(fooled.sum())
    assert Image.open(out / "lookalikes.png").size == (1600, 2 * (160 + 34))  # champions over nearest reals


def test_a_reference_can_compare_images_in_a_models_feature_space(tmp_path):
    """`onnx_features` reads the input of a model file's last linear layer: for a known network it is
    the network's own flattened features, and a reference built on them judges in that space."""
    import torch
    from conftest import export, tiny

    from foolbench.lookalike import compare, onnx_features, prepare, reference

    net = tiny(channels=3, size=32)
    path = export(net, tmp_path / "c.onnx", (1, 3, 32, 32))
    rng = np.random.default_rng(0)
    images = rng.random((12, 3, 32, 32), dtype=np.float32)
    features = onnx_features(path)(images)
    with torch.no_grad():
        expected = prepare(net.body[:4](torch.from_numpy(images)).numpy())  # conv, ReLU, pool, flatten
    assert features.shape == (12, 6 * 14 * 14) and torch.allclose(features, expected, atol=1e-5)
    ref = reference(images, np.repeat([0, 1, 2], 4), embed=onnx_features(path))
    found = compare(images[:3], [0, 0, 0], ref)
    assert found.table["distance"][0] == 0.0 and found.table["lookalike"][0]  # itself, in any space
