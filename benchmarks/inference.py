"""Bare inference throughput (images/s) of each zoo model, onnxruntime vs eager PyTorch.

This is the ceiling every attack is measured against: an attack can be at most as fast as the
model's own forward pass. Batch sizes 1, 32 and 200; inputs prepared in advance; no softmax.
Results: benchmarks/results/inference.json.

    python benchmarks/inference.py [--quick]
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from common import best_rate, write

from foolbench.resolve import load_model

MODELS = ["lenet-mnist", "mlp-mnist", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
BATCHES = [1, 32, 200]


def torch_module(name: str) -> torch.nn.Module:
    """The PyTorch form of a zoo model (MNIST architectures untrained: speed does not need weights)."""
    if name.endswith("-mnist"):
        from foolbench.zoo.lenet import MLP, LeNet

        return (LeNet if name.startswith("lenet") else MLP)().eval()
    from foolbench.zoo.imagenet import build_efficientnet

    return build_efficientnet(name, progress=False).module.eval()


def main(quick: bool) -> None:
    rows = {}
    seconds = 0.3 if quick else 1.5
    for name in MODELS:
        model = load_model(name)
        net = torch_module(name)
        c, (h, w) = model.spec.channels, model.spec.size
        for batch in BATCHES:
            if quick and batch == 200 and not name.endswith("-mnist"):
                continue
            x = np.random.default_rng(0).random((batch, c, h, w), dtype=np.float32)
            feed = {model.input_name: x}
            xt = torch.from_numpy(x)

            def eager(xt=xt, net=net):
                with torch.no_grad():
                    net(xt)

            def ort(feed=feed, session=model.session):
                session.run(None, feed)

            ort_rate = best_rate(ort, batch, min_seconds=seconds)
            torch_rate = best_rate(eager, batch, min_seconds=seconds)
            rows[f"{name}@{batch}"] = {
                "model": name,
                "batch": batch,
                "input": [c, h, w],
                "onnxruntime_images_per_second": round(ort_rate, 1),
                "pytorch_images_per_second": round(torch_rate, 1),
                "onnxruntime_over_pytorch": round(ort_rate / torch_rate, 2),
            }
            print(rows[f"{name}@{batch}"], flush=True)
    write("inference", {"provider": model.provider, "cases": rows})


if __name__ == "__main__":
    main("--quick" in sys.argv)
