"""Shared fixtures: tiny models exported to ONNX in temporary folders, and the zoo's LeNet."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from foolbench.models.card import CARD_METADATA_KEY, ModelCard


def export(
    net: torch.nn.Module, path: Path, shape: tuple, dynamic: bool = True, card: ModelCard | None = None
):
    """Export `net` to ONNX (legacy exporter: fast and quiet enough for tests)."""
    import onnx

    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            torch.zeros(*shape),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None,
            dynamo=False,
        )
    if card is not None:
        proto = onnx.load(str(path))
        proto.metadata_props.add(key=CARD_METADATA_KEY, value=card.to_json())
        onnx.save(proto, str(path))
    return path


class TinyCNN(torch.nn.Module):
    """A 10-class grey-image CNN small enough to export and run in milliseconds."""

    def __init__(self, channels: int = 1, classes: int = 10, softmax: bool = False, nhwc: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.nhwc, self.softmax = nhwc, softmax
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 6, 5),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
            torch.nn.LazyLinear(classes),
        )

    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        out = self.body(x)
        return out.softmax(1) if self.softmax else out


def tiny(channels=1, classes=10, size=28, **kw) -> TinyCNN:
    net = TinyCNN(channels, classes, **kw)
    shape = (1, size, size, channels) if kw.get("nhwc") else (1, channels, size, size)
    net(torch.zeros(*shape))  # materialise the lazy layer
    return net.eval()


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    """A zoo folder shared by the whole session; models are built into it at most once."""
    folder = Path(os.environ.get("FOOLBENCH_TEST_ZOO") or tmp_path_factory.mktemp("zoo"))
    os.environ["FOOLBENCH_ZOO"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def lenet(zoo_dir) -> Path:
    from foolbench.zoo import ensure

    return ensure("lenet-mnist", out_dir=zoo_dir)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def foolbench(capsys, monkeypatch):
    """The real entry point (`foolbench.cli:main`) in this process: no second torch import per call.

    Returns returncode, stdout and stderr like subprocess.run, for asserting on what a user sees.
    """
    from foolbench.cli import main

    def call(*args):
        monkeypatch.setattr(sys, "argv", ["foolbench", *map(str, args)])
        monkeypatch.setenv("FOOLBENCH_DEVICE", os.environ.get("FOOLBENCH_DEVICE", "auto"))  # --device sets it
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main()
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=exit_.value.code, stdout=out, stderr=err)

    return call
