"""The model adapter: the one interface every attack and report talks to.

`Model.probs(images)` takes float32 NCHW images in [0,1] at any resolution and returns class
probabilities [B, K] as float64 (float64 so that 99.99% and 99.999% stay distinguishable). The
adapter owns everything a model is particular about — see `preprocess.py` — so nothing outside it
knows how a model wants its input.

The adapter also owns the model's torch device (`Model.device`, see `device.py`): its torch form
lives there, and every engine, encoding and judge that makes tensors for it takes the device from
here rather than assuming the CPU. Inputs go to the device from pinned memory and are prepared there.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from foolbench.errors import FoolbenchError
from foolbench.models.card import ModelCard
from foolbench.models.differentiable import ProbabilityModule
from foolbench.models.preprocess import InputSpec, preprocess

DEFAULT_BATCH = 256
OUTPUTS = ("probs", "logits", "log_probs")
# Card fields an adapter can change after loading (`Model.with_options`): how images are prepared.
PREPROCESSING = ("crop", "resize", "mean", "std")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def looks_like_probs(out: np.ndarray) -> bool:
    """Outputs that are non-negative and sum to 1 per row are already probabilities."""
    return bool(np.all(out >= -1e-6) and np.allclose(out.sum(axis=1), 1.0, atol=1e-3))


class Model:
    """Base adapter. Subclasses implement `_forward(x: torch.Tensor) -> np.ndarray` (raw outputs)."""

    backend = "?"

    def __init__(
        self,
        name: str,
        card: ModelCard,
        spec: InputSpec,
        path: Path | None,
        batch_size: int,
        device: torch.device | None = None,
    ):
        self.name = name
        self.device = device if device is not None else torch.device("cpu")
        self.card = card
        self.spec = spec
        self.path = path
        self.batch_size = spec.fixed_batch or batch_size
        self.output_kind = card.output
        self.num_classes = 0
        self.labels: list[str] = []
        self.options = None  # the ModelOptions it was loaded with (models.load), so a run can reload it

    # -- set-up shared by subclasses -------------------------------------------------------------
    def _probe(self) -> None:
        """Run one probe batch to learn K, check the output's shape and detect logits vs probs."""
        rng = np.random.default_rng(0)
        h, w = self.spec.size
        side = max(h, w, self.spec.resize or 0)
        probe = rng.random((2, self.spec.channels, side, side), dtype=np.float32)
        out = self._raw(probe)
        if out.ndim != 2:
            raise FoolbenchError(
                f"{self.name}: the model's output has shape {list(out.shape)} but foolbench needs "
                "[batch, classes]; export a classifier whose output is one row of scores per image"
            )
        self.num_classes = out.shape[1]
        if self.output_kind is None:
            self.output_kind = "probs" if looks_like_probs(out) else "logits"
        labels = self.card.labels
        if labels is None:
            labels = [f"class {i}" for i in range(self.num_classes)]
        if len(labels) != self.num_classes:
            raise FoolbenchError(
                f"{self.name}: {len(labels)} labels given but the model outputs {self.num_classes} "
                "classes; pass a labels file with exactly one line per class"
            )
        self.labels = list(labels)

    # -- the interface ---------------------------------------------------------------------------
    def probs(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities [B, K] (float64) for float32 images [B, C, H, W] in [0, 1]."""
        images = self._check_images(images)
        out = self._raw(images)
        p = softmax(out) if self.output_kind == "logits" else out.astype(np.float64)
        if self.spec.views > 1:
            p = p.reshape(images.shape[0], self.spec.views, -1).mean(axis=1)
        return p

    def _raw(self, images: np.ndarray) -> np.ndarray:
        """Raw model outputs for all views of all images, run in chunks of the batch size."""
        step = max(1, self.batch_size // self.spec.views)
        outs = [self._run_chunk(images[i : i + step]) for i in range(0, len(images), step)]
        return np.concatenate(outs, axis=0)

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        n = chunk.shape[0]
        x = self._to_input_device(chunk)
        if not self.spec.is_identity_for(tuple(x.shape)):
            x = preprocess(x, self.spec)
        fixed = self.spec.fixed_batch
        if fixed is None:
            return self._forward(x)
        # A graph exported with a fixed batch: pad every piece up to that batch and drop the padding.
        outs = []
        for i in range(0, x.shape[0], fixed):
            piece = x[i : i + fixed]
            pad = fixed - piece.shape[0]
            if pad:
                piece = torch.cat([piece, piece[:1].expand(pad, *piece.shape[1:])])
            outs.append(self._forward(piece)[: fixed - pad])
        out = np.concatenate(outs)
        assert out.shape[0] == n * self.spec.views
        return out

    @property
    def input_device(self) -> torch.device:
        """Where inputs are prepared for `_forward`: the model's device (an ONNX session on the CPU
        takes host arrays, so its inputs stay on the CPU)."""
        return self.device

    def _to_input_device(self, chunk: np.ndarray) -> torch.Tensor:
        """The chunk as a float32 tensor on `input_device`; to a GPU from pinned memory, so the copy
        runs asynchronously. On the CPU it is the array itself, untouched."""
        x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
        device = self.input_device
        if device.type == "cpu":
            return x
        if device.type == "cuda":
            x = x.pin_memory()
        return x.to(device, non_blocking=True)

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise FoolbenchError(
                f"images must be [batch, 1 or 3, H, W] in [0,1]; got shape {list(images.shape)}"
            )
        return images

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def with_options(self, batch_size: int | None = None, **card) -> Model:
        """A new adapter of the same network with other preprocessing (`crop`, `resize`, `mean`,
        `std`) or batch size; this one is left as it is (as Foolbox's `transform_bounds`)."""
        unknown = sorted(set(card) - set(PREPROCESSING))
        if unknown:
            raise ValueError(f"with_options changes only {', '.join(PREPROCESSING)}, not {unknown[0]}")
        new = copy.copy(self)
        given = {k: v for k, v in card.items() if v is not None}
        if given:
            new.card = self.card.merged(given)
            fields = {k: tuple(v) if k in ("mean", "std") else v for k, v in given.items()}
            new.spec = dataclasses.replace(self.spec, **fields)
        if batch_size is not None:
            new.batch_size = self.spec.fixed_batch or batch_size
        return new

    def torch_module(self, output: str = "probs") -> torch.nn.Module:
        """A differentiable module from canonical images to `output`: "probs" (probabilities, as
        `probs`), "log_probs" (their logarithm, computed without underflow: a log-softmax) or
        "logits" (pre-softmax scores; for a model that outputs probabilities, their log, a logit up
        to a constant shared by the classes). For gradient ascent; on the model's device."""
        check_output(output)
        net = self._torch_net()
        return ProbabilityModule(net, self.spec, self.output_kind, output).to(self.device)

    def _torch_net(self) -> torch.nn.Module:
        """The network itself in PyTorch (raw outputs for preprocessed inputs), where there is one."""
        raise FoolbenchError(
            f"{self.name}: this {self.backend} model has no PyTorch form, so gradient ascent cannot "
            "run on it; the evolutionary attacks (direct, cppn) still work"
        )

    @property
    def provider(self) -> str:
        return "cpu"

    def describe(self) -> dict:
        """What the adapter understood, for `foolbench models inspect` and run manifests."""
        s = self.spec
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "backend": self.backend,
            "provider": self.provider,
            "device": self.device.type,
            "classes": self.num_classes,
            "labels": self.labels,
            "input": {
                "channels": s.channels,
                "size": list(s.size),
                "layout": "flat" if s.flat else s.layout,
                "fixed_batch": s.fixed_batch,
                "resize": s.resize,
                "crop": s.crop,
                "mean": list(s.mean) if s.mean else None,
                "std": list(s.std) if s.std else None,
            },
            "output": self.output_kind,
            "dataset": self.card.dataset,
            "accuracy": self.card.accuracy,
        }


def check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, not {output!r}")


def card_spec(card: ModelCard) -> InputSpec:
    """The input a card describes completely (input size and channels given), as the adapter feeds it."""
    return InputSpec(
        channels=card.channels,
        size=tuple(card.input_size),
        layout=card.layout or "NCHW",
        resize=card.resize,
        crop=card.crop,
        mean=tuple(card.mean) if card.mean else None,
        std=tuple(card.std) if card.std else None,
    )


def card_input(images: np.ndarray, card: ModelCard) -> torch.Tensor:
    """The network input for canonical images [B,C,H,W] in [0,1], prepared as the card says, by the
    adapter's own preprocessing: for code that holds the network itself (zoo builders, a defence
    that fine-tunes it), so that it feeds the network exactly as the adapter will."""
    return preprocess(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), card_spec(card))


def spec_from_card(card: ModelCard, shape: list, name: str) -> InputSpec:
    """Combine a graph's declared input shape (ints or None for dynamic dims) with the card."""
    fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    rank = len(shape)
    if rank == 4:
        layout = card.layout or _detect_layout(shape)
        c, h, w = (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])
        flat = False
    elif rank == 2:
        layout, flat = "NCHW", True
        c, h, w = _flat_geometry(card, shape[1], name)
    else:
        raise FoolbenchError(
            f"{name}: the model's input has rank {rank} ({shape}); foolbench feeds images as "
            "[batch, channels, H, W], [batch, H, W, channels] or flattened [batch, C*H*W]"
        )
    c = card.channels or (c if isinstance(c, int) else None)
    if card.input_size:
        h, w = card.input_size
    if not all(isinstance(v, int) and v > 0 for v in (c, h, w)):
        raise FoolbenchError(
            f"{name}: the input size is not fixed in the model ({shape}); give it in a model card "
            "(input_size = [H, W], channels = C) or with --input-size/--channels"
        )
    return InputSpec(
        channels=c,
        size=(h, w),
        layout=layout,
        flat=flat,
        fixed_batch=fixed_batch,
        resize=card.resize,
        crop=card.crop,
        mean=tuple(card.mean) if card.mean else None,
        std=tuple(card.std) if card.std else None,
    )


def _detect_layout(shape: list) -> str:
    """Channels are the small dimension: NCHW when dim 1 is 1 or 3, NHWC when the last one is."""
    if shape[1] in (1, 3):
        return "NCHW"
    if shape[3] in (1, 3):
        return "NHWC"
    return "NCHW"


def _flat_geometry(card: ModelCard, features, name: str) -> tuple:
    if card.input_size:
        h, w = card.input_size
        c = card.channels or (features // (h * w) if isinstance(features, int) else 1)
        return c, h, w
    if isinstance(features, int):
        side = math.isqrt(features)
        if side * side == features:
            return 1, side, side
    raise FoolbenchError(
        f"{name}: the model takes flat rows of {features} values; say the image size in a model "
        "card (input_size = [H, W], channels = C) or with --input-size/--channels"
    )
