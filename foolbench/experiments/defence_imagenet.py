"""The retraining defence on ImageNet (a zoo EfficientNet-Lite): only the classifier head is
fine-tuned, on the frozen network's pooled features, with a 1001st row for the fooling class.
Fooling images and random views of natural photos each carry half of the loss; the photos are
trained towards the original model's own probabilities, so its clean behaviour is kept. Part of the
photos is held out of fine-tuning: the clean accuracy is measured on those. Used by
`foolbench.experiments.defence`, which runs the loop.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foolbench.errors import FoolbenchError


def efficientnet_name(model) -> str | None:
    """The zoo EfficientNet-Lite a model is (by its card's name and 1000 classes), else None."""
    from foolbench.zoo.registry import ENTRIES

    name = model.card.name or model.name
    entry = ENTRIES.get(name)
    ok = entry is not None and entry.kind == "efficientnet" and len(model.labels) == 1000
    return name if ok else None


NATURAL_VIEWS = 128  # random crops of the training photos, in all, that keep the head's clean behaviour
HELD_OUT = 0.5  # share of the photos never fine-tuned on: the clean accuracy is measured on them


class Photos(Sequence):
    """Some of a collection's photos, by index, decoded only when indexed (a folder of 1,000 ImageNet
    photos is about 1.4 GB as float32 arrays, so none is held longer than it is used)."""

    def __init__(self, images, indices, labels=None):
        self.images, self.indices = images, [int(i) for i in indices]
        self.labels = None if labels is None else np.asarray(labels)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images[self.indices[i]]


class ImagenetDefence:
    """Fine-tune only the head of a zoo EfficientNet-Lite on pooled features, adding a fooling class."""

    SHARE = "fooling images and natural photos each carry half of the fine-tuning loss in every iteration"

    def __init__(self, model, data, seed: int):
        self.original = model
        self.data = data
        self.seed = seed
        self._photos = None
        self._reference = None
        self._network = None
        self._natural = None
        self._source = ""

    @property
    def labelled(self) -> bool:
        return self.photos()[1].labels is not None

    @property
    def clean_text(self) -> str:
        """What defence.json says the clean_accuracy column is."""
        held = "the held-out photos (each whole photo, preprocessed as the card says), never fine-tuned on"
        if self.labelled:
            return f"top-1 accuracy against the photos' labels on {held} (the fooling class counts as wrong)"
        return f"agreement with the original model's top-1 on {held} (they carry no labels)"

    def photos(self) -> tuple[Photos, Photos]:
        """(training photos, held-out photos): a seeded split of every photo, HELD_OUT of them held out
        (at least one). A folder's photos carry the labels of their class folders."""
        if self._photos is None:
            labels = None
            if self.data is None or str(self.data) == "skimage":
                from foolbench.data.photos import natural_photos

                images = [image for _, image in natural_photos()]
                self._source = "scikit-image's photos"
            else:
                from foolbench.data.photos import image_folder
                from foolbench.experiments.baseline import match_classes

                images, folder_labels, classes = image_folder(self.data)
                if self.original is not None:
                    labels = match_classes(classes, self.original.labels, str(self.data))[folder_labels]
                self._source = Path(self.data).resolve().name
            if len(images) < 2:
                raise FoolbenchError(
                    f"the ImageNet defence needs at least 2 natural photos (one to fine-tune on, one held "
                    f"out to measure clean accuracy); {self.data} holds {len(images)}"
                )
            order = np.random.default_rng(self.seed).permutation(len(images))
            held = max(1, round(HELD_OUT * len(images)))
            self._photos = (
                Photos(images, np.sort(order[held:]), labels),
                Photos(images, np.sort(order[:held]), labels),
            )
        return self._photos

    def facts(self) -> dict:
        """What defence.json records about the photos, and a defended model's card about its training."""
        training, held_out = self.photos()
        return {
            "clean_photos": {
                "held_out": len(held_out),
                "fine_tuned_on": len(training),
                "data": self._source,
                "labelled": held_out.labels is not None,
            }
        }

    def _top1(self, model) -> np.ndarray:
        from foolbench.experiments.baseline import top1

        return top1(model, self.photos()[1])[0]

    def clean_accuracy(self, model) -> float:
        """Accuracy on the held-out photos' labels, or, without labels, agreement with the original."""
        held_out = self.photos()[1]
        if held_out.labels is not None:
            return float(np.mean(self._top1(model) == held_out.labels))
        if self._reference is None:
            self._reference = self._top1(self.original)
        return float(np.mean(self._top1(model) == self._reference))

    def network(self):
        """The original network in PyTorch (from the zoo builder), its card and its head's weights."""
        if self._network is None:
            from foolbench.zoo.imagenet import build_efficientnet

            built = build_efficientnet(efficientnet_name(self.original), progress=False)
            fc = built.module._fc
            self._network = (built.module, built.card, fc.weight.detach().clone(), fc.bias.detach().clone())
        return self._network

    def natural(self):
        """Pooled features of random views of the training photos, with the original head's
        probabilities for them."""
        if self._natural is None:
            import torch

            module, card, weight, bias = self.network()
            training = self.photos()[0]
            views = max(1, math.ceil(NATURAL_VIEWS / len(training)))
            rng = np.random.default_rng(self.seed)
            batches = [
                pooled_features(module, [random_view(p, rng) if v else p for v in range(views)], card)
                for p in training
            ]
            features = np.concatenate(batches)
            logits = torch.from_numpy(features) @ weight.T + bias
            self._natural = (features, torch.softmax(logits, 1).numpy())
        return self._natural

    def retrain(self, images: np.ndarray, labels: list[str], stem: str, facts: dict, path: Path) -> None:
        """A copy of the network whose head has one more row (the last label's), fine-tuned, into `path`."""
        import copy

        import torch

        from foolbench.zoo.export import export_onnx
        from foolbench.zoo.imagenet import check_examples

        module, card, weight, bias = self.network()
        natural, targets = self.natural()
        fooling = pooled_features(module, list(images), card)
        new_weight, new_bias, loss = finetune_head(
            weight.numpy(), bias.numpy(), fooling, natural, targets, seed=self.seed
        )
        defended = copy.deepcopy(module)
        defended._fc = torch.nn.Linear(weight.shape[1], len(new_bias))
        with torch.no_grad():
            defended._fc.weight.copy_(torch.from_numpy(new_weight))
            defended._fc.bias.copy_(torch.from_numpy(new_bias))
        defended.eval()
        base = {k: v for k, v in self.original.card.extra.items() if k != "rebuild"}
        new_card = dataclasses.replace(
            self.original.card,
            name=stem,
            labels=list(labels),
            notes=f"{self.original.card.notes or ''} Head fine-tuned with an extra '{labels[-1]}' class (the "
            f"retraining defence of Nguyen, Yosinski & Clune, iteration {facts['iteration']}).".strip(),
            extra={**base, **facts, "natural_views": len(targets), "head_loss": round(loss, 6)},
        )
        export_onnx(defended, path, new_card, check_examples(new_card))


def random_view(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random square crop covering 40-100 % of the shorter side, mirrored half of the time."""
    _, h, w = image.shape
    side = int(min(h, w) * rng.uniform(0.4, 1.0))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    view = image[:, y : y + side, x : x + side]
    return np.ascontiguousarray(view[:, :, ::-1] if rng.random() < 0.5 else view)


def pooled_features(module, images: list[np.ndarray], card, batch: int = 16) -> np.ndarray:
    """EfficientNet's pooled penultimate features [N, D] of images preprocessed as `card` says."""
    import torch

    from foolbench.models.base import card_input

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.cat([card_input(im[None], card) for im in images[i : i + batch]])
            out.append(torch.nn.functional.adaptive_avg_pool2d(module.extract_features(x), 1).flatten(1))
    return torch.cat(out).numpy()


def finetune_head(
    weight: np.ndarray,
    bias: np.ndarray,
    fooling: np.ndarray,
    natural: np.ndarray,
    natural_targets: np.ndarray,
    *,
    seed: int = 0,
    steps: int = 300,
    lr: float = 1e-2,
    fooling_share: float = 0.5,
    tether: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """A K+1-way head from a K-way one: (weight [K+1, D], bias [K+1], final loss).

    The new row starts as the mean of the old ones. Full-batch Adam minimises
    fooling_share * CE(fooling -> K) + (1 - fooling_share) * CE(natural -> the original probabilities)
    plus `tether` times the squared distance of the old rows from where they started, so classes
    that no training example shows keep their behaviour. Deterministic for given inputs.
    """
    import torch
    import torch.nn.functional as F

    w0 = torch.as_tensor(weight, dtype=torch.float32)
    b0 = torch.as_tensor(bias, dtype=torch.float32)
    k = len(b0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        w = torch.cat([w0, w0.mean(0, keepdim=True)]).requires_grad_()
        b = torch.cat([b0, b0.mean().reshape(1)]).requires_grad_()
        fool = torch.as_tensor(fooling, dtype=torch.float32)
        nat = torch.as_tensor(natural, dtype=torch.float32)
        nat_p = torch.as_tensor(natural_targets, dtype=torch.float32)
        nat_p = torch.cat([nat_p, torch.zeros(len(nat_p), 1)], 1)  # the fooling class: probability 0
        fool_y = torch.full((len(fool),), k, dtype=torch.int64)
        optimizer = torch.optim.Adam([w, b], lr=lr)
        for _ in range(steps):
            loss = fooling_share * F.cross_entropy(fool @ w.T + b, fool_y)
            loss = loss + (1 - fooling_share) * F.cross_entropy(nat @ w.T + b, nat_p)
            loss = loss + tether * ((w[:k] - w0).pow(2).sum() + (b[:k] - b0).pow(2).sum())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return w.detach().numpy().copy(), b.detach().numpy().copy(), float(loss.detach())
