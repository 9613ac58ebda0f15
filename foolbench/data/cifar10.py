"""CIFAR-10 (Krizhevsky 2009) from the user's copy, in any of the layouts it usually comes in.

foolbench never downloads it. `load_cifar10(given)` finds the copy with `foolbench.data.locate`
(`--data DIR`, else `$FOOLBENCH_DATA/cifar10`, or one of the names below there) and reads:
- torchvision's layout: `cifar-10-batches-py/` (data_batch_1..5, test_batch), or the folder above
  it, or torchvision's download `cifar-10-python.tar.gz`. Those batches are Python pickles: they are
  read with an unpickler that builds only dicts, lists, strings and numpy arrays, so a doctored
  file cannot run code;
- ImageFolder layout: `train/<class>/*.jpg|png` and `test/<class>/*.jpg|png`, with the ten class
  folders named as torchvision names the classes, or an archive of that (`cifar10-jpg.tar.gz`).

An archive is read straight from the tar stream, never unpacked next to the data (which may be
read-only). What is decoded is kept as uint8 arrays in foolbench's cache folder
(`$FOOLBENCH_CACHE`, else `$XDG_CACHE_HOME/foolbench`, else `~/.cache/foolbench`), keyed by the
archive's sha256 (a folder: by its files' names, sizes and times), so 60,000 images are decoded once
(~15 s), and later loads take a fraction of a second.

Images are uint8 [N, 3, 32, 32] (channels first, foolbench's layout), labels int64 0..9 in
`CLASSES` order. `digest` is the sha256 of the arrays: the same images give the same digest
wherever they live, so a model card can name its data without naming a path.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foolbench.data.cache import cache_dir
from foolbench.data.locate import locate
from foolbench.errors import FoolbenchError
from foolbench.fileio import atomic_path

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
NAME = "cifar10"
BATCHES = "cifar-10-batches-py"
ARCHIVES = ("cifar10-jpg.tar.gz", "cifar-10-python.tar.gz")  # the ImageFolder copy; torchvision's download
ALIASES = ("CIFAR10", "cifar-10", BATCHES, *ARCHIVES)
WHAT = (
    "CIFAR-10 (torchvision's cifar-10-batches-py, or ImageFolder train/<class>/ and test/<class>/, "
    "or an archive of either)"
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SHAPE = (3, 32, 32)


@dataclass
class Split:
    """One split: uint8 images [N, 3, 32, 32], int64 labels, where it came from, and its digest."""

    x: np.ndarray
    y: np.ndarray
    layout: str  # "torchvision batches" or "ImageFolder"
    source: str  # the path it was read from (for messages, never for cards)
    digest: str  # sha256 of the images and labels

    def describe(self) -> str:
        """What a card records: layout, size and digest, no path (the same images, the same words)."""
        return f"CIFAR-10 {self.layout}, {len(self.y)} images, sha256 {self.digest[:16]}"


@dataclass
class Cifar10Data:
    """Both splits of CIFAR-10, with `train_x`/`test_x` uint8 [N, 3, 32, 32] and int64 labels."""

    train: Split
    test: Split

    @property
    def train_x(self) -> np.ndarray:
        return self.train.x

    @property
    def train_y(self) -> np.ndarray:
        return self.train.y

    @property
    def test_x(self) -> np.ndarray:
        return self.test.x

    @property
    def test_y(self) -> np.ndarray:
        return self.test.y

    @property
    def source(self) -> str:
        """The data a model trained on it records: layout, sizes and the digest of each split."""
        return (
            f"CIFAR-10 ({self.train.layout}): {len(self.train_y)} train (sha256 {self.train.digest[:16]}) / "
            f"{len(self.test_y)} test (sha256 {self.test.digest[:16]})"
        )


def locate_cifar10(given: str | Path | None = None) -> Path:
    """The user's CIFAR-10: `given`, else $FOOLBENCH_DATA/cifar10 (or one of `ALIASES` there)."""
    return locate(NAME, given, aliases=ALIASES, what=WHAT)


def find_cifar10(path: str | Path) -> Path | None:
    """The CIFAR-10 copy at or under `path` (as `--data` may name it), or None if it holds none."""
    try:
        return _source(Path(path)) if Path(path).exists() else None
    except FoolbenchError:
        return None


def load_cifar10(given: str | Path | None = None) -> Cifar10Data:
    """Both splits of the user's CIFAR-10 (see the module's docstring for where and what)."""
    root = locate_cifar10(given)
    return Cifar10Data(train=read_split(root, "train"), test=read_split(root, "test"))


def load_split(split: str, given: str | Path | None = None) -> Split:
    """One split ("train" or "test") of the user's CIFAR-10, e.g. the test images of a baseline."""
    return read_split(locate_cifar10(given), split)


def read_split(root: Path, split: str) -> Split:
    """Split `split` of the copy at `root` (a folder or an archive), from the cache when decoded before."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    source = _source(Path(root))
    cached = cache_dir() / NAME / _fingerprint(source) / f"{split}.npz"
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as saved:
                x, y, layout = saved["x"], saved["y"], str(saved["layout"])
            return _checked(x, y, layout, source, split)
        except (
            OSError,
            ValueError,
            KeyError,
            EOFError,
            zipfile.BadZipFile,
        ):  # a damaged entry is decoded again
            cached.unlink(missing_ok=True)
    layout, reader = _layout(source)
    result = _checked(*reader(source, split), layout, source, split)
    try:
        with atomic_path(cached) as tmp, open(tmp, "wb") as f:
            np.savez(f, x=result.x, y=result.y, layout=np.array(layout))
    except OSError:  # a read-only cache costs the decoding time again, nothing else
        pass
    return result


# -- which layout a path holds ---------------------------------------------------------------------------
def _source(root: Path) -> Path:
    """The folder or archive under `root` that holds CIFAR-10, or a one-line error naming the layouts."""
    if root.is_file() or (root / "data_batch_1").is_file():
        return root
    if (root / BATCHES / "data_batch_1").is_file():
        return root / BATCHES
    if (root / "train").is_dir() or (root / "test").is_dir():
        return root
    for archive in ARCHIVES:
        if (root / archive).is_file():
            return root / archive
    raise FoolbenchError(
        f"{root}: no CIFAR-10 found; expected {BATCHES}/ (torchvision's layout), train/<class>/ and "
        f"test/<class>/ image folders, or {' or '.join(ARCHIVES)}"
    )


def _layout(source: Path):
    """(the layout's name, its reader) of a folder or archive that `_source` found."""
    if source.is_dir():
        if (source / "data_batch_1").is_file():
            return "torchvision batches", _read_batches
        return "ImageFolder", _read_folder
    if not tarfile.is_tarfile(source):
        raise FoolbenchError(f"{source} is not a tar archive; pass a CIFAR-10 folder or a .tar.gz of one")
    with tarfile.open(source) as tar:
        names = tar.getnames()
    if any(Path(n).name == "data_batch_1" for n in names):
        return "torchvision batches", _read_batches
    if any(_folder_member(n) for n in names):
        return "ImageFolder", _read_folder
    raise FoolbenchError(
        f"{source}: the archive holds neither {BATCHES}/ nor train/<class>/ and test/<class>/ images"
    )


def _archive_files(path: Path, key) -> dict:
    """{key(name): bytes} of the archive's files whose `key` is not None, in one pass over the stream
    (a compressed tar cannot seek: reading members out of order would decompress it again each time)."""
    found = {}
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            k = key(member.name) if member.isfile() else None
            if k is not None:
                found[k] = tar.extractfile(member).read()
    return found


def _fingerprint(path: Path) -> str:
    """What identifies a copy's content for the cache: an archive's sha256, a folder's file listing."""
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return "archive-" + h.hexdigest()[:24]
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        h.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return "folder-" + h.hexdigest()[:24]


def _checked(x: np.ndarray, y: np.ndarray, layout: str, source: Path, split: str) -> Split:
    """The split as read, after checking it is 32x32 colour images with labels 0..9."""
    if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != SHAPE or len(x) != len(y) or not len(y):
        raise FoolbenchError(
            f"{source}: the {split} split is not CIFAR-10 (images {x.shape} {x.dtype}, {len(y)} labels); "
            "replace it with an intact copy"
        )
    y = np.asarray(y, dtype=np.int64)
    if y.min() < 0 or y.max() >= len(CLASSES):
        raise FoolbenchError(f"{source}: the {split} labels run outside 0..9; replace it with an intact copy")
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes() + y.tobytes()).hexdigest()
    return Split(x=x, y=y, layout=layout, source=str(source), digest=digest)


# -- torchvision's pickled batches ------------------------------------------------------------------------
BATCH_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol 2 writes bytes from Python 3: a string to encode
}


class _DataOnly(pickle.Unpickler):
    """An unpickler that builds containers and numpy arrays and refuses every other global (code)."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def _unpickle(data: bytes, where: str) -> dict:
    try:
        batch = _DataOnly(io.BytesIO(data), encoding="bytes").load()
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, *SHAPE)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise FoolbenchError(
            f"{where} is not a CIFAR-10 batch ({type(e).__name__}: {e}); replace it with an intact copy"
        ) from None
    return {"x": images, "y": labels}


def _read_batches(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = BATCH_FILES[split]
    if source.is_file():
        files = _archive_files(source, lambda name: Path(name).name if Path(name).name in names else None)
        missing = [n for n in names if n not in files]
        _need(not missing, f"{source}: the archive lacks {', '.join(missing)} of {BATCHES}/")
        batches = [_unpickle(files[n], f"{source}:{n}") for n in names]
    else:
        missing = [n for n in names if not (source / n).is_file()]
        _need(
            not missing,
            f"{source}: {', '.join(missing)} missing; a complete {BATCHES}/ holds {', '.join(sum(BATCH_FILES.values(), []))}",
        )
        batches = [_unpickle((source / n).read_bytes(), str(source / n)) for n in names]
    return np.concatenate([b["x"] for b in batches]), np.concatenate([b["y"] for b in batches])


# -- ImageFolder: train/<class>/<image>, test/<class>/<image> ---------------------------------------------
def _folder_member(name: str) -> tuple[str, str] | None:
    """(split, class) of an archive member or relative path `SPLIT/CLASS/IMAGE` (any leading folders)."""
    parts = Path(name).parts
    if len(parts) >= 3 and parts[-3] in SPLITS and Path(parts[-1]).suffix.lower() in IMAGE_SUFFIXES:
        return parts[-3], parts[-2]
    return None


def _read_folder(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Every image of SPLIT/<class>/, in class order, then file-name order (the same order everywhere)."""
    if source.is_file():

        def key(name: str):
            where = _folder_member(name)
            return (
                (where[1], f"{split}/{where[1]}/{Path(name).name}") if where and where[0] == split else None
            )

        members = {k: (k[1], data) for k, data in _archive_files(source, key).items()}
        return _decode(_by_class(members, f"{source}:{split}/"), lambda m: m[1], source)
    folder = source / split
    _need(
        folder.is_dir(),
        f"{source}: no {split}/ folder; an ImageFolder copy holds train/<class>/ and test/<class>/",
    )
    members = {
        (p.parent.name, p.name): (str(p), p)
        for p in folder.glob("*/*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }
    files = _by_class(members, f"{folder}/")
    return _decode(files, lambda m: m[1].read_bytes(), source)


def _by_class(members: dict, where: str) -> list[tuple[int, object]]:
    """(label, member) sorted by class then file name; every one of the ten classes must be there."""
    found = {cls for cls, _ in members}
    missing = [c for c in CLASSES if c not in found]
    strangers = sorted(found - set(CLASSES))
    _need(
        not missing and not strangers,
        f"{where}: "
        + (f"no images for {', '.join(missing)}" if missing else f"unknown classes {', '.join(strangers)}")
        + f"; CIFAR-10's class folders are {', '.join(CLASSES)}",
    )
    return [
        (CLASSES.index(cls), members[(cls, name)])
        for cls, name in sorted(members, key=lambda k: (CLASSES.index(k[0]), k[1]))
    ]


def _decode(files: list, read, source: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    x = np.empty((len(files), *SHAPE), dtype=np.uint8)
    for i, (_, member) in enumerate(files):
        try:
            with Image.open(io.BytesIO(read(member))) as image:
                rgb = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for broken files
            raise FoolbenchError(
                f"{source}: {member[0]} is not a readable image ({type(e).__name__}); replace it"
            ) from None
        _need(rgb.shape == (32, 32, 3), f"{source}: {member[0]} is {rgb.shape[1]}x{rgb.shape[0]}, not 32x32")
        x[i] = rgb.transpose(2, 0, 1)
    return x, np.array([label for label, _ in files], dtype=np.int64)


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise FoolbenchError(message)
