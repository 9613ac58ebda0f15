"""Helpers shared by the benchmarks: timing side by side and writing results/*.json."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def rate(fn, items: int, seconds: float) -> float:
    """Items per second of `fn` called repeatedly for at least `seconds` (at least once)."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n * items / elapsed


def load_average() -> float:
    """The 1-minute load average: the machine is shared, so every result says how busy it was."""
    return round(os.getloadavg()[0], 2)


def machine() -> dict:
    import onnxruntime
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), **payload}
    tmp = path.with_suffix(".json.tmp")  # then renamed: a benchmark killed mid-write keeps the old file
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path
