"""CIFAR-10 from the user's copy: torchvision's pickled batches, ImageFolder folders, their archives.

The tests make tiny copies in each layout; the test against the full data set runs only where
$FOOLBENCH_DATA holds CIFAR-10 and says so when it skips.
"""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from foolbench.data import cifar10
from foolbench.data.cifar10 import CLASSES, load_cifar10, load_split
from foolbench.errors import FoolbenchError

TRAIN, TEST = 3, 2  # images per class in the tiny copies


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test decodes into its own cache folder, never the user's."""
    monkeypatch.setenv("FOOLBENCH_CACHE", str(tmp_path / "cache"))


def tiny_images(n: int, seed: int) -> np.ndarray:
    """uint8 [n, 3, 32, 32] of smooth colour ramps (they survive JPEG almost unchanged)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 32, dtype=np.float32)
    images = rng.uniform(0.2, 0.8, (n, 3, 1, 1)) * ramp[None, None, :, None] * 255
    return np.broadcast_to(images, (n, 3, 32, 32)).astype(np.uint8)


def write_folder(root, suffix=".png"):
    """ImageFolder layout: root/{train,test}/<class>/<i>.png; returns the arrays written per split."""
    written = {}
    for split, per_class, seed in (("train", TRAIN, 0), ("test", TEST, 1)):
        images = tiny_images(per_class * len(CLASSES), seed)
        for i, image in enumerate(images):
            folder = root / split / CLASSES[i // per_class]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i:04d}{suffix}")
        written[split] = (images, np.repeat(np.arange(len(CLASSES)), per_class))
    return written


def write_batches(root):
    """torchvision's layout: root/cifar-10-batches-py/data_batch_1..5 and test_batch, as it pickles them."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    written = {"train": ([], []), "test": ([], [])}
    for name in [*cifar10.BATCH_FILES["train"], "test_batch"]:
        images = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, 4)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": images,
            b"filenames": [b"x.png"] * 4,
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        split = "test" if name == "test_batch" else "train"
        written[split][0].append(images.reshape(-1, 3, 32, 32))
        written[split][1].extend(labels)
    return {k: (np.concatenate(x), np.array(y)) for k, (x, y) in written.items()}


def tar_of(folder, path, inside="."):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=inside)
    return path


def test_image_folder_is_read_in_class_order_with_labels(tmp_path):
    written = write_folder(tmp_path / "c10")
    data = load_cifar10(tmp_path / "c10")
    for split, (images, labels) in written.items():
        got = getattr(data, split)
        assert got.x.dtype == np.uint8 and got.x.shape == (len(labels), 3, 32, 32)
        assert np.array_equal(got.x, images) and got.y.tolist() == labels.tolist()
    assert data.train.layout == "ImageFolder" and "ImageFolder" in data.source
    assert str(tmp_path) not in data.source  # a card names the data by digest, never by path


def test_torchvision_batches_are_read_from_the_folder_or_the_one_above(tmp_path):
    written = write_batches(tmp_path)
    for given in (tmp_path, tmp_path / "cifar-10-batches-py"):
        data = load_cifar10(given)
        for split, (images, labels) in written.items():
            assert np.array_equal(getattr(data, split).x, images)
            assert getattr(data, split).y.tolist() == labels.tolist()
    assert data.train.layout == "torchvision batches" and len(data.train_y) == 20 and len(data.test_y) == 4


def test_archives_give_the_same_images_and_digest_as_folders(tmp_path):
    write_folder(tmp_path / "folder")
    write_batches(tmp_path / "batches")
    for folder, archive in (
        (tmp_path / "folder", tar_of(tmp_path / "folder", tmp_path / "cifar10-jpg.tar.gz")),
        (tmp_path / "batches", tar_of(tmp_path / "batches", tmp_path / "cifar-10-python.tar.gz")),
    ):
        unpacked, packed = load_cifar10(folder), load_cifar10(archive)
        assert packed.test.digest == unpacked.test.digest and packed.train.digest == unpacked.train.digest
        assert np.array_equal(packed.train_x, unpacked.train_x) and packed.source == unpacked.source


def test_decoded_splits_are_cached_and_read_back_identically(tmp_path, monkeypatch):
    write_folder(tmp_path / "c10", suffix=".jpg")
    archive = tar_of(tmp_path / "c10", tmp_path / "c10.tar.gz")
    first = load_split("test", archive)
    cached = list((tmp_path / "cache" / "cifar10").glob("*/test.npz"))
    assert len(cached) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cifar10, "_read_folder", no_decoding)
    again = load_split("test", archive)
    assert again.digest == first.digest and np.array_equal(again.x, first.x)
    cached[0].write_bytes(b"damaged")  # a damaged cache entry is decoded again, not trusted
    monkeypatch.undo()
    monkeypatch.setenv("FOOLBENCH_CACHE", str(tmp_path / "cache"))
    assert load_split("test", archive).digest == first.digest


def test_found_through_foolbench_data_by_name_or_archive_name(tmp_path, monkeypatch):
    write_folder(tmp_path / "home" / "cifar10")
    monkeypatch.setenv("FOOLBENCH_DATA", str(tmp_path / "home"))
    assert len(load_cifar10().test_y) == TEST * 10
    other = tmp_path / "other"
    write_folder(tmp_path / "unpacked")
    other.mkdir()
    tar_of(tmp_path / "unpacked", other / "cifar10-jpg.tar.gz")
    monkeypatch.setenv("FOOLBENCH_DATA", str(other))
    assert len(load_cifar10().train_y) == TRAIN * 10


def test_missing_data_says_where_to_put_it_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("FOOLBENCH_DATA", raising=False)
    with pytest.raises(FoolbenchError, match=r"--data DIR.*FOOLBENCH_DATA/cifar10") as err:
        load_cifar10()
    monkeypatch.setenv("FOOLBENCH_DATA", str(tmp_path))
    with pytest.raises(FoolbenchError, match=r"has no cifar10/") as err:
        load_cifar10()
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FoolbenchError, match="cifar-10-batches-py.*train/<class>") as err:
        load_cifar10(tmp_path / "empty")
    assert "\n" not in str(err.value)


def test_a_missing_or_strange_class_folder_is_named(tmp_path):
    write_folder(tmp_path / "c10")
    for image in (tmp_path / "c10" / "test" / "frog").iterdir():
        image.unlink()
    (tmp_path / "c10" / "test" / "frog").rmdir()
    with pytest.raises(FoolbenchError, match="no images for frog"):
        load_split("test", tmp_path / "c10")
    (tmp_path / "c10" / "test" / "frogs").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "c10" / "test" / "frogs" / "1.png")
    with pytest.raises(FoolbenchError, match="no images for frog"):
        load_split("test", tmp_path / "c10")


def test_wrong_sizes_and_broken_files_are_user_errors(tmp_path):
    write_folder(tmp_path / "c10")
    Image.new("RGB", (64, 64)).save(tmp_path / "c10" / "train" / "cat" / "big.png")
    with pytest.raises(FoolbenchError, match="big.png is 64x64, not 32x32"):
        load_split("train", tmp_path / "c10")
    (tmp_path / "c10" / "test" / "cat" / "broken.png").write_bytes(b"no image")
    with pytest.raises(FoolbenchError, match="broken.png is not a readable image"):
        load_split("test", tmp_path / "c10")
    (tmp_path / "not.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(FoolbenchError, match="not a tar archive"):
        load_split("test", tmp_path / "not.tar.gz")


class Boom:
    """A pickle that would run a command when loaded by an ordinary unpickler."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > pwned.txt",))


def test_a_doctored_batch_runs_no_code(tmp_path, monkeypatch):
    write_batches(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(
        pickle.dumps({b"data": Boom(), b"labels": []})
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FoolbenchError, match="not a CIFAR-10 batch.*refused to load") as err:
        load_split("test", tmp_path)
    assert not (tmp_path / "pwned.txt").exists() and "\n" not in str(err.value)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FoolbenchError, match="data_batch_3 missing"):
        load_split("train", tmp_path)


def full_copy():
    """The user's full CIFAR-10 through $FOOLBENCH_DATA, or a skip that says why."""
    try:
        return cifar10.locate_cifar10()
    except FoolbenchError as e:
        pytest.skip(f"needs the full CIFAR-10 ({e})")


def test_the_full_data_set_has_its_sizes_and_classes(monkeypatch):
    root = full_copy()
    monkeypatch.delenv("FOOLBENCH_CACHE")  # the user's cache: the full set is decoded once there
    data = load_cifar10(root)
    assert data.train_x.shape == (50000, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert np.bincount(data.train_y).tolist() == [5000] * 10
    assert np.bincount(data.test_y).tolist() == [1000] * 10


def test_cifar10_test_is_a_labelled_key_for_scoring_suites(tmp_path):
    from foolbench.data.labelled import labelled
    from foolbench.protocol import load_protocol

    written = write_folder(tmp_path / "c10")
    real = labelled("cifar10-test", tmp_path / "c10")
    assert real.classes == list(CLASSES) and real.labels.tolist() == written["test"][1].tolist()
    assert np.array_equal((real.images * 255).round().astype(np.uint8), written["test"][0])
    suite = load_protocol("v3").suite_for(3, 32, None)
    assert (suite.name, suite.data, suite.judge) == ("cifar", "cifar10-test", None)


def test_a_cifar_runs_rating_controls_are_cifar10_test_images(tmp_path, monkeypatch):
    """The rating page's controls for a CIFAR-10 run (its card says cifar10, its preset cifar) are
    CIFAR-10 test images of the right classes, found where the scoring suite finds them."""
    from foolbench.rating.controls import real_images

    written = write_folder(tmp_path / "home" / "cifar10")
    monkeypatch.setenv("FOOLBENCH_DATA", str(tmp_path / "home"))
    for dataset in ("cifar10", "cifar"):
        real = real_images(dataset, list(CLASSES))
        assert real.classes.tolist() == written["test"][1].tolist()
        assert all(name.startswith("cifar10-test/") for name in real.names)
        assert np.array_equal(np.asarray(real.load(0)).transpose(2, 0, 1), written["test"][0][0])
