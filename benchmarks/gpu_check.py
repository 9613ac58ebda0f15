"""On a GPU machine: does foolbench use the GPU, exactly, and fast enough? A few minutes.

    python benchmarks/gpu_check.py                 # on the GPU (--device cuda): results/gpu_check.json
    python benchmarks/gpu_check.py --device cpu    # the same checks on the CPU, to try the script out;
                                                   # writes runs/gpu_check/gpu_check-cpu.json, never results/

1. placement: where foolbench put each model (scoring provider, torch device, GPU) and the library
   versions a manifest records; on the GPU both an ONNX model and its torch form must be there.
2. overhead: attack evaluations/s over the bare model's images/s at the same batch, side by side in
   one process (`benchmarks/overhead.py`'s cases); the goal is >= 0.9 (recorded, not a failure).
3. kill and resume: a run killed with SIGKILL between checkpoints and resumed must end with the same
   checkpoint arrays and results as an uninterrupted run, which must equal a second uninterrupted
   run: MAP-Elites over CPPNs (onnxruntime) and gradient-cppn (torch), both on the device.
4. gradient-cppn: the uninterrupted run of 3: evaluations/s, median, non-finite gradients, device.
5. sweep: two local workers, two runs: where each ran and which GPU each worker saw.

Every check records `ok` and what it measured; the script exits 1 when a check fails. `--quick`
uses lenet-mnist for every check (about a minute on 2 CPU cores) instead of efficientnet-lite0.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, load_average, machine, write

from foolbench.errors import FoolbenchError
from foolbench.models import ModelOptions
from foolbench.models import device as devices
from foolbench.resolve import load_model
from foolbench.rundir import load_checkpoint, read_manifest, read_results, read_summary

FOOLBENCH = [sys.executable, "-m", "foolbench.cli"]
WORK = Path("runs/gpu_check")


def foolbench(*args, check: bool = True) -> subprocess.CompletedProcess:
    """The command line in a fresh process, as a user runs it (the device comes from the environment)."""
    done = subprocess.run([*FOOLBENCH, *map(str, args)], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"foolbench {' '.join(map(str, args))} failed: {done.stderr.strip()[-500:]}")
    return done


# -- 1. placement --------------------------------------------------------------------------------------
def placement_check(models: list[str], want_gpu: bool) -> dict:
    from foolbench.runner import versions

    out = {"versions": versions(), "asked": devices.requested(), "models": {}}
    ok = True
    for name in models:
        model = load_model(name)
        record = devices.placement(model)
        module = model.torch_module()
        record["torch_form"] = next(module.parameters()).device.type
        on_gpu = devices.CUDA_PROVIDER in record["provider"] and record["torch_form"] == "cuda"
        ok &= on_gpu if want_gpu else record["torch_device"] == "cpu"
        out["models"][name] = record
    return {"ok": bool(ok), **out}


# -- 2. overhead ---------------------------------------------------------------------------------------
def overhead_check(cases: list, quick: bool) -> dict:
    from overhead import bare_session, engine_for, interleaved

    out = {}
    for case, model_name, preset, batch in cases:
        model = load_model(model_name, ModelOptions(card={"crop": "center"}))
        engine, batch = engine_for(model, preset, batch)
        rounds, seconds = (2, 0.5) if quick else (5, 2.0)
        bare, attack, ratio = interleaved(bare_session(model, batch), engine.step, batch, rounds, seconds)
        out[case] = {
            "model": model_name,
            "preset": preset,
            "batch": batch,
            "provider": model.provider,
            "bare_images_per_second": round(bare, 1),
            "attack_evaluations_per_second": round(attack, 1),
            "ratio": round(ratio, 3),
            "goal_met": ratio >= 0.9,
        }
        print("overhead", case, out[case], flush=True)
    return {"ok": True, "goal": 0.9, "cases": out}


# -- 3. kill and resume --------------------------------------------------------------------------------
def kill_and_resume(name: str, args: list[str], kill_after: int) -> dict:
    """Two uninterrupted runs and one killed (SIGKILL, at its first checkpoint past `kill_after`) and
    resumed; every checkpoint array and every confidence must agree."""
    whole, again, cut = (WORK / f"{name}-{kind}" for kind in ("whole", "again", "cut"))
    t0 = time.perf_counter()
    foolbench("run", *args, "--out", whole, "--no-progress")
    seconds = time.perf_counter() - t0
    foolbench("run", *args, "--out", again, "--no-progress")
    killed_at = _kill_at(args, cut, kill_after)
    foolbench("run", "--resume", cut, "--no-progress")
    repeat = _compare(whole, again)
    resumed = _compare(whole, cut)
    ok = killed_at is not None and not repeat["differ"] and not resumed["differ"]
    return {
        "ok": ok,
        "args": args,
        "killed_after_generation": killed_at,
        "uninterrupted_twice": repeat,
        "killed_and_resumed": resumed,
        "placement": read_manifest(whole)["device"],
        "seconds": round(seconds, 1),
        "summary": {k: read_summary(whole)[k] for k in ("median_confidence", "evaluations_per_second")},
    }


def _kill_at(args: list[str], out: Path, kill_after: int) -> int | None:
    """Start the run, SIGKILL it as soon as a checkpoint past `kill_after` is written; the generation
    of the checkpoint it will resume from (None if it finished first: the check then proves nothing)."""
    latest = out / "checkpoint" / "latest.json"
    proc = subprocess.Popen(
        [*FOOLBENCH, "run", *map(str, args), "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    generation = None
    while proc.poll() is None:
        try:
            generation = json.loads(latest.read_text())["generation"]
        except (OSError, ValueError, KeyError):
            generation = None
        if generation is not None and generation > kill_after:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return int(json.loads(latest.read_text())["generation"])
        time.sleep(0.01)
    return None


def _compare(a: Path, b: Path) -> dict:
    x, y = load_checkpoint(a), load_checkpoint(b)
    differ = sorted(k for k in x.keys() | y.keys() if k != "metrics" and not _equal(x.get(k), y.get(k)))
    ra, rb = read_results(a)["confidence"].to_numpy(), read_results(b)["confidence"].to_numpy()
    gap = float(np.max(np.abs(ra - rb))) if ra.shape == rb.shape else None
    if gap != 0.0:
        differ.append("results.csv")
    return {"differ": differ[:8], "max_confidence_difference": gap}


def _equal(a, b) -> bool:
    return a is not None and b is not None and a.shape == b.shape and np.array_equal(a, b)


# -- 5. sweep ------------------------------------------------------------------------------------------
def sweep_check(model: str, attack: str, generations: int, want_gpu: bool) -> dict:
    out = WORK / "sweep"
    t0 = time.perf_counter()
    done = foolbench(
        "sweep", "--model", model, "--attack", attack, "--seeds", "0-1", "--jobs", "2", "--scale", "cpu",
        "--generations", generations, "--out", out,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    runs = sorted(p for p in out.iterdir() if (p / "summary.json").is_file())
    records = {p.name: read_manifest(p)["device"] for p in runs}
    seen = {r.get("cuda_visible_devices") for r in records.values()}
    gpus = devices.visible_gpus()
    on_gpu = all(r["torch_device"] == "cuda" for r in records.values())
    ok = len(runs) == 2 and (not want_gpu or (on_gpu and (len(gpus) < 2 or len(seen) == 2)))
    return {
        "ok": ok,
        "visible_gpus": gpus,
        "runs": records,
        "seconds": round(seconds, 1),
        "log": done.stderr.strip().splitlines()[-3:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=devices.DEVICES, default="cuda")
    parser.add_argument("--quick", action="store_true", help="lenet-mnist only (for a CPU try-out)")
    args = parser.parse_args()
    devices.use(args.device)  # this process and every foolbench command it starts
    want_gpu = devices.torch_device().type == "cuda" and devices.onnx_on_gpu()
    big = "lenet-mnist" if args.quick else "efficientnet-lite0"
    if WORK.exists():
        import shutil

        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    load_before = load_average()
    checks = {"placement": placement_check(sorted({"lenet-mnist", big}), want_gpu)}
    cases = [
        ("lenet-direct", "lenet-mnist", "mnist-direct", None),
        ("lenet-cppn", "lenet-mnist", "mnist-cppn", None),
    ]
    if not args.quick:
        cases.append(("lite0-cppn", "efficientnet-lite0", "imagenet-cppn", 40))
    checks["overhead"] = overhead_check(cases, args.quick)
    evolve = ["--model", big, "--attack", "mnist-cppn" if args.quick else "imagenet-cppn"]
    common = ["--scale", "cpu", "--generations", 16, "--checkpoint-every", 4]
    checks["resume_map_elites"] = kill_and_resume("map-elites", [*evolve, *common], kill_after=4)
    gradient = kill_and_resume("gradient-cppn", ["--model", big, "--attack", "gradient-cppn", *common], 4)
    checks["resume_gradient_cppn"] = gradient
    checks["gradient_cppn"] = {
        "ok": gradient["placement"]["torch_device"] == ("cuda" if want_gpu else "cpu"),
        **read_summary(WORK / "gradient-cppn-whole"),
    }
    checks["sweep"] = sweep_check("lenet-mnist", "mnist-cppn", 30, want_gpu)
    payload = {
        "device": args.device,
        "on_gpu": want_gpu,
        "load_average_1min": [load_before, load_average()],
        "passed": all(c["ok"] for c in checks.values()),
        "checks": checks,
    }
    if want_gpu:
        write("gpu_check", payload)
    else:  # never in results/: a CPU try-out is not a GPU measurement
        path = WORK / "gpu_check-cpu.json"
        payload = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), **payload}
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"wrote {path} (a CPU try-out; {RESULTS} is for GPU results)")
    for name, check in checks.items():
        print(f"{name:22s} {'ok' if check['ok'] else 'FAILED'}")
    sys.exit(0 if payload["passed"] else 1)


if __name__ == "__main__":
    try:
        main()
    except FoolbenchError as e:  # --device cuda without a usable GPU, say
        print(f"gpu_check: {e}", file=sys.stderr)
        sys.exit(2)
