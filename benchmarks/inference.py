"""Bare inference throughput (images/s) of each zoo model, onnxruntime vs eager PyTorch.

This is the ceiling every attack is measured against: an attack can be at most as fast as the
model's own forward pass. Batch sizes 1, 32 and 200; inputs prepared in advance; no softmax.
Results: benchmarks/results/inference.json.

Each backend is measured at its best on the same cores, so the ratio compares backends, not set-ups:
- the same threads: torch's (one per core, or `--threads N`), and onnxruntime's intra-op threads
  set to that number (one thread each compares the backends on a shared, busy machine, where
  OpenMP's per-operation barriers would otherwise wait for descheduled threads);
- eager PyTorch as its documentation recommends for inference: `torch.inference_mode()`, and the
  faster of the NCHW and channels_last memory formats (recorded per case);
- one allocator policy for both. onnxruntime keeps its tensors in its own arena; eager PyTorch asks
  glibc for every large tensor, and glibc maps fresh pages for each (mmap) and returns them on free,
  so page faults dominate large batches (EfficientNet-Lite0 at batch 64: about 2 million minor
  faults per forward pass, and fewer images/s than at batch 8). The script runs itself with glibc's
  MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ raised, so freed memory is reused;
  `--glibc-default` measures without that;
- the two are timed in alternating rounds (best of each), so load from other processes hits both
  alike; the 1-minute load average before and after is recorded.
GOMP_SPINCOUNT is foolbench's (30000, set when foolbench is imported), as in every foolbench run.

    python benchmarks/inference.py [--quick] [--glibc-default] [--threads N]
"""

from __future__ import annotations

import os
import sys

REUSE_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**36)}
if "--glibc-default" not in sys.argv and any(os.environ.get(k) != v for k, v in REUSE_FREED_MEMORY.items()):
    # glibc reads these when the process starts: run again with them set
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **REUSE_FREED_MEMORY})

# isort: off
import copy  # noqa: E402

import foolbench  # noqa: E402, F401  (before torch: it sets GOMP_SPINCOUNT before libgomp loads)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import load_average, rate, write  # noqa: E402

# isort: on

MODELS = ["lenet-mnist", "mlp-mnist", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
BATCHES = [1, 32, 200]
ROUNDS = 3


def torch_module(name: str) -> torch.nn.Module:
    """The PyTorch form of a zoo model (MNIST architectures untrained: speed does not need weights)."""
    if name.endswith("-mnist"):
        from foolbench.zoo.lenet import MLP, LeNet

        return (LeNet if name.startswith("lenet") else MLP)().eval()
    from foolbench.zoo.imagenet import build_efficientnet

    return build_efficientnet(name, progress=False).module.eval()


def eager(net: torch.nn.Module, x: torch.Tensor, memory_format: torch.memory_format):
    """A call of (a copy of) the module in inference mode, module and input in `memory_format`."""
    net = copy.deepcopy(net).to(memory_format=memory_format)
    x = x.contiguous(memory_format=memory_format)

    def call():
        with torch.inference_mode():
            net(x)

    return call


def measure(session, input_name: str, net, x: np.ndarray, seconds: float) -> dict:
    """Images/s of onnxruntime and of eager PyTorch (each memory format), alternating rounds."""
    batch = len(x)
    calls = {"onnxruntime": lambda feed={input_name: x}: session.run(None, feed)}
    formats = {"nchw": torch.contiguous_format}
    if x.ndim == 4:
        formats["channels_last"] = torch.channels_last
    for name, memory_format in formats.items():
        calls[name] = eager(net, torch.from_numpy(x), memory_format)
    for call in calls.values():
        call()  # warm up: first calls allocate and pick kernels
    best = dict.fromkeys(calls, 0.0)
    for _ in range(ROUNDS):
        for name, call in calls.items():
            best[name] = max(best[name], rate(call, batch, seconds))
    fastest = max(formats, key=best.get)
    return {
        "onnxruntime_images_per_second": round(best["onnxruntime"], 1),
        "pytorch_images_per_second": round(best[fastest], 1),
        "pytorch_memory_format": fastest,
        "onnxruntime_over_pytorch": round(best["onnxruntime"] / best[fastest], 2),
    }


def main(quick: bool) -> None:
    if "--threads" in sys.argv:
        torch.set_num_threads(int(sys.argv[sys.argv.index("--threads") + 1]))
    threads = torch.get_num_threads()
    os.environ["FOOLBENCH_THREADS"] = str(threads)  # onnxruntime: as many threads as torch
    from foolbench.resolve import load_model

    load_before = load_average()
    rows = {}
    seconds = 0.3 if quick else 1.0
    for name in MODELS:
        model = load_model(name)
        net = torch_module(name)
        c, (h, w) = model.spec.channels, model.spec.size
        for batch in BATCHES:
            if quick and batch == 200 and not name.endswith("-mnist"):
                continue
            x = np.random.default_rng(0).random((batch, c, h, w), dtype=np.float32)
            rows[f"{name}@{batch}"] = {
                "model": name,
                "batch": batch,
                "input": [c, h, w],
                **measure(model.session, model.input_name, net, x, seconds),
            }
            print(rows[f"{name}@{batch}"], flush=True)
    settings = {
        "threads": threads,
        "allocator": "glibc default" if "--glibc-default" in sys.argv else "glibc, freed memory reused",
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
    }
    load = {"load_average_1min": [load_before, load_average()]}
    write("inference", {"provider": model.provider, **settings, **load, "cases": rows})


if __name__ == "__main__":
    main("--quick" in sys.argv)
