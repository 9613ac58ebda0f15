"""`foolbench baseline`: real-image confidences and how well max-softmax separates fooling images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from conftest import export, tiny
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve

from foolbench.data.photos import natural_photos
from foolbench.errors import FoolbenchError
from foolbench.experiments.baseline import auroc, baseline, fpr_at_tpr
from foolbench.models import load_model
from foolbench.runner import RunRequest, start_run


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return export(tiny(), tmp_path_factory.mktemp("m") / "tiny.onnx", (1, 1, 28, 28))


def onnx_probs(model: Path, x: np.ndarray) -> np.ndarray:
    """Independent of foolbench's adapter: onnxruntime on the raw array, then a float64 softmax."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0].astype(np.float64)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# -- the rank formula against sklearn ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_auroc_and_fpr_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n_pos, n_neg = rng.integers(1, 300, size=2)
    pos = rng.normal(rng.normal(), 1, n_pos)
    neg = rng.normal(0, 1, n_neg)
    if seed % 2:  # coarse scores: many ties, within and across the two groups
        pos, neg = np.round(pos, 1), np.round(neg, 1)
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    scores = np.r_[pos, neg]
    assert auroc(pos, neg) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
    expected = fpr[np.argmax(tpr >= 0.95)]  # OpenOOD's fpr_recall
    got, threshold = fpr_at_tpr(pos, neg)
    assert got == pytest.approx(expected, abs=1e-12)
    assert np.mean(pos >= threshold) >= 0.95 and np.mean(neg >= threshold) == got


def test_auroc_extremes():
    assert auroc([0.9, 0.8], [0.1, 0.2, 0.3]) == 1.0
    assert auroc([0.1], [0.9, 0.95]) == 0.0
    assert auroc([0.5, 0.5], [0.5]) == 0.5
    with pytest.raises(FoolbenchError):
        auroc([], [0.5])


# -- an image folder with hand-computed medians ---------------------------------------------------------
@pytest.fixture(scope="module")
def folder(model, tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """Grey 28x28 PNGs: the first 8 in the folder of their predicted class (right), the rest in another."""
    rng = np.random.default_rng(1)
    pixels = (rng.random((20, 28, 28)) * 255).round().astype(np.uint8)
    top = onnx_probs(model, pixels[:, None] / 255.0).argmax(1)
    root = tmp_path_factory.mktemp("data") / "images"
    truth = np.where(np.arange(20) < 8, top, (top + 1) % 10)
    for i, (image, cls) in enumerate(zip(pixels, truth, strict=True)):
        name = f"class {cls}" if cls % 2 else str(cls)  # label text or class index: both are accepted
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(root / name / f"{i}.png")
    return root, pixels, truth


def hand_baseline(model: Path, root: Path) -> dict:
    files = sorted(root.rglob("*.png"))
    x = np.stack([np.asarray(Image.open(f).convert("L"), dtype=np.float64) / 255 for f in files])[:, None]
    truth = [int(f.parent.name.removeprefix("class ")) for f in files]
    p = onnx_probs(model, x)
    conf, right = p.max(1), p.argmax(1) == np.array(truth)
    return {
        "median_confidence": np.median(conf),
        "median_confidence_correct": np.median(conf[right]),
        "median_confidence_wrong": np.median(conf[~right]),
        "correct": int(right.sum()),
        "wrong": int((~right).sum()),
        "conf": conf,
    }


def test_image_folder_baseline_and_fooling_separation(model, folder, tmp_path, foolbench):
    root, _, _ = folder
    run = start_run(
        RunRequest(
            models=[str(model)], attack="mnist-direct", generations=2, out=tmp_path / "run", progress=False
        )
    )
    out = tmp_path / "out"
    proc = foolbench("baseline", "--model", model, "--data", root, "--runs", run, "--out", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "baseline.json").read_text())
    hand = hand_baseline(model, root)
    assert result["images"] == 20 and result["labels_known"] is True
    assert (result["correct"], result["wrong"]) == (hand["correct"], hand["wrong"]) == (8, 12)
    assert result["accuracy"] == pytest.approx(0.4)
    for key in ("median_confidence", "median_confidence_correct", "median_confidence_wrong"):
        assert result[key] == pytest.approx(hand[key], abs=1e-6), key
    # Fooling vs real: the champion PNGs (negatives) against the folder's images (positives).
    results = pd.read_csv(run / "results.csv")
    fooling = np.stack([np.asarray(Image.open(run / f), dtype=np.float64) / 255 for f in results["file"]])
    fooling_conf = onnx_probs(model, fooling[:, None]).max(1)
    sep = result["fooling_vs_real"]
    assert sep["fooling_images"] == 10 and sep["real_images"] == 20
    y = np.r_[np.ones(20), np.zeros(10)]
    assert sep["auroc"] == pytest.approx(roc_auc_score(y, np.r_[hand["conf"], fooling_conf]), abs=1e-6)
    fpr, tpr, _ = roc_curve(y, np.r_[hand["conf"], fooling_conf], drop_intermediate=False)
    assert sep["fpr_at_95_tpr"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)])


def test_mixed_sizes_are_resized_and_counted(model, folder, tmp_path):
    root, pixels, _ = folder
    extra = tmp_path / "mixed"
    for i, size in enumerate((20, 28, 40, 40)):
        (extra / "3").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[i]).resize((size, size)).save(extra / "3" / f"{i}.png")
    result = baseline(str(model), str(extra), out=tmp_path / "out")
    assert result["images"] == 4 and result["correct"] + result["wrong"] == 4
    assert [Path(r["image"]).name for r in result["per_image"]] == ["0.png", "1.png", "2.png", "3.png"]


def test_photos_have_no_labels_so_only_the_overall_median(tmp_path):
    colour = export(tiny(channels=3), tmp_path / "colour.onnx", (1, 3, 28, 28))
    result = baseline(str(colour), "skimage", out=tmp_path / "out")
    assert result["images"] == 8 and result["labels_known"] is False
    # each photo scored alone (the baseline batches photos of one size together)
    scored = [load_model(str(colour)).probs(image[None])[0] for _, image in natural_photos()]
    assert [r["image"] for r in result["per_image"]] == [name for name, _ in natural_photos()]
    assert [r["top1"] for r in result["per_image"]] == [int(p.argmax()) for p in scored]
    assert result["median_confidence"] == pytest.approx(np.median([p.max() for p in scored]), abs=1e-6)
    assert result["median_confidence_correct"] is None and result["median_confidence_wrong"] is None
    assert result["accuracy"] is None and "no ImageNet labels" in result["note"]
    assert json.loads((tmp_path / "out" / "baseline.json").read_text()) == result


def test_mnist_held_out_digits(model, tmp_path):
    result = baseline(str(model), "mnist", out=tmp_path)
    assert result["images"] == 1000 and result["correct"] + result["wrong"] == 1000
    assert result["accuracy"] == pytest.approx(result["correct"] / 1000)


def test_a_defended_model_is_read_on_its_digits(tmp_path):
    """A model with the retraining defence's `fooling` class: the digits are its real classes, an image
    it puts in `fooling` is wrong, and confidence is the largest digit probability (never the
    rejection's); a 12-class model is refused."""
    from foolbench.data.mnist import load_mnist
    from foolbench.models.card import FOOLING, ModelCard

    labels = [str(d) for d in range(10)] + [FOOLING]
    path = export(tiny(classes=11), tmp_path / "defended.onnx", (1, 1, 28, 28), card=ModelCard(labels=labels))
    result = baseline(str(path), "mnist", out=tmp_path / "out")
    digits = load_mnist()
    p = onnx_probs(path, digits.test_x.astype(np.float32)[:, None] / 255)
    right = p.argmax(1) == digits.test_y
    assert result["correct"] == int(right.sum()) and result["images"] == 1000
    assert result["median_confidence"] == pytest.approx(np.median(p[:, :10].max(1)), abs=1e-6)
    assert "without the 'fooling' class" in result["confidence"]
    twelve = export(tiny(classes=12), tmp_path / "twelve.onnx", (1, 1, 28, 28))
    with pytest.raises(FoolbenchError, match="needs a 10-class digit model .* has 12 classes"):
        baseline(str(twelve), "mnist", out=tmp_path / "none")
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("case", ["no-class-folders", "empty-class-folder"])
def test_a_folder_without_images_fails_in_one_line(model, tmp_path, case, foolbench):
    data = tmp_path / "data"
    data.mkdir()
    if case == "empty-class-folder":
        (data / "3").mkdir()
        (data / "3" / "notes.txt").write_text("not an image")
    if case == "no-class-folders":
        proc = foolbench("baseline", "--model", model, "--data", data, "--out", tmp_path / "out")
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
        assert proc.stderr.startswith("foolbench: error:") and "no images" in proc.stderr
    else:
        with pytest.raises(FoolbenchError, match="no images"):
            baseline(str(model), str(data), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_class_folder_is_named(model, folder, tmp_path):
    data = tmp_path / "data"
    (data / "giraffe").mkdir(parents=True)
    Image.fromarray(folder[1][0]).save(data / "giraffe" / "0.png")
    with pytest.raises(FoolbenchError, match="'giraffe' is neither a label"):
        baseline(str(model), str(data), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- a user's labelled colour photos: folders named by label, loosely ------------------------------------
COLOUR_LABELS = [
    "airplane",
    "Golden Retriever",
    "sports_car",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
FOLDERS = {"AIRPLANE": 0, "golden_retriever": 1, "sports car": 2, "Cat": 3}


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> Path:
    path = export(tiny(channels=3, size=32), tmp_path_factory.mktemp("c") / "colour.onnx", (1, 3, 32, 32))
    path.with_suffix(".toml").write_text(f"labels = {json.dumps(COLOUR_LABELS)}\n")
    return path


def photo_folder(root: Path, names) -> Path:
    rng = np.random.default_rng(2)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_folders_named_by_label_ignoring_case_spaces_and_underscores(colour_model, tmp_path, foolbench):
    root = photo_folder(tmp_path / "photos", FOLDERS)
    out = tmp_path / "out"
    proc = foolbench("baseline", "--model", colour_model, "--data", root, "--out", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "baseline.json").read_text())
    files = sorted(root.rglob("*.png"))
    x = np.stack([np.asarray(Image.open(f), dtype=np.float64).transpose(2, 0, 1) / 255 for f in files])
    right = onnx_probs(colour_model, x).argmax(1) == [FOLDERS[f.parent.name] for f in files]
    assert result["labels_known"] is True and result["images"] == 12
    assert (result["correct"], result["wrong"]) == (int(right.sum()), int((~right).sum()))
    assert {r["top1_label"] for r in result["per_image"]} <= set(COLOUR_LABELS)


@pytest.mark.parametrize(
    "names, message",
    [
        (["giraffe", "zebra"], "none of its 2 class folders names a class of the model: 'giraffe'"),
        (["cat", "zebra"], "1 of its 2 class folders name no class of the model: 'zebra'"),
    ],
)
def test_folders_that_name_no_class_fail_in_one_line_and_write_nothing(
    colour_model, tmp_path, foolbench, names, message
):
    root = photo_folder(tmp_path / "photos", names)
    out = tmp_path / "out"
    proc = foolbench("baseline", "--model", colour_model, "--data", root, "--out", out)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert message in proc.stderr and "'airplane', 'Golden Retriever', 'sports_car', ..." in proc.stderr
    assert not out.exists()


# -- CIFAR-10's test images ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory) -> Path:
    from test_cifar10 import write_folder

    root = tmp_path_factory.mktemp("cifar") / "cifar10"
    write_folder(root)
    return root


def cifar_model(tmp_path: Path, labels) -> Path:
    path = export(tiny(channels=3, size=32), tmp_path / "c10.onnx", (1, 3, 32, 32))
    path.with_suffix(".toml").write_text(f"labels = {json.dumps(labels)}\n")
    return path


def test_cifar10_models_are_read_on_cifar10_test(cifar_folder, tmp_path, monkeypatch, foolbench):
    """A 10-class 32x32 colour model gets CIFAR-10's test split by default where the data is found, its
    classes matched by label (any order); a model labelled "0".."9" is read in CIFAR-10's order."""
    from foolbench.data.cifar10 import CLASSES

    monkeypatch.setenv("FOOLBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FOOLBENCH_DATA", str(cifar_folder.parent))
    shuffled = list(reversed(CLASSES))
    for labels, order in (
        (shuffled, [shuffled.index(c) for c in CLASSES]),
        ([str(i) for i in range(10)], list(range(10))),
    ):
        model = cifar_model(tmp_path, labels)
        result = baseline(str(model), out=tmp_path / "out")
        files = sorted((cifar_folder / "test").rglob("*.png"))
        x = np.stack([np.asarray(Image.open(f), dtype=np.float64).transpose(2, 0, 1) / 255 for f in files])
        truth = np.array([order[CLASSES.index(f.parent.name)] for f in files])
        p = onnx_probs(model, x)
        assert result["data"] == "cifar10" and result["images"] == 20
        assert result["accuracy"] == pytest.approx(np.mean(p.argmax(1) == truth))
        assert result["median_confidence"] == pytest.approx(np.median(p.max(1)), abs=1e-6)
        assert ("CIFAR-10's order" in result.get("note", "")) == labels[0].isdigit()
    proc = foolbench("baseline", "--model", model, "--data", cifar_folder, "--out", tmp_path / "cli")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "cli" / "baseline.json").read_text())["images"] == 20


def test_cifar10_baseline_refuses_models_that_are_not_cifar10(cifar_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("FOOLBENCH_CACHE", str(tmp_path / "cache"))
    mixed = cifar_model(tmp_path, COLOUR_LABELS)  # some labels are CIFAR-10's, some are not
    with pytest.raises(FoolbenchError, match="automobile"):
        baseline(str(mixed), str(cifar_folder), out=tmp_path / "out")
    monkeypatch.setenv("FOOLBENCH_DATA", str(cifar_folder.parent))
    assert baseline(str(mixed), out=tmp_path / "out")["data"] == "skimage"  # the default falls back
    twelve = export(tiny(channels=3, classes=12, size=32), tmp_path / "twelve.onnx", (1, 3, 32, 32))
    with pytest.raises(FoolbenchError, match="needs a 10-class model"):
        baseline(str(twelve), "cifar10", out=tmp_path / "out")
