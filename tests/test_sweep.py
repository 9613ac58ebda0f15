"""`foolbench sweep` and `foolbench merge`: local and Ray executors give the runs a single `foolbench run`
gives, re-runs skip finished runs and resume killed ones, shards merge by the multi-cell rule, and bad
input is one line with exit 2 and nothing written."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import export, tiny

from foolbench.errors import FoolbenchError
from foolbench.images import load_png
from foolbench.models import load_model
from foolbench.rundir import load_checkpoint
from foolbench.runner import RunRequest, start_run
from foolbench.sweep import Sweep, parse_seeds, run_sweep

ATTACK, GENERATIONS, SEEDS = "mnist-direct", 6, (0, 1)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    """Two different tiny 10-class grey models, `a` and `b`."""
    folder = tmp_path_factory.mktemp("models")
    other = tiny()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.2)
    return [
        export(tiny(), folder / "a.onnx", (1, 1, 28, 28)),
        export(other, folder / "b.onnx", (1, 1, 28, 28)),
    ]


def sweep_spec(models, out, **kw) -> Sweep:
    args = dict(attacks=[ATTACK], seeds=list(SEEDS), scale="cpu", generations=GENERATIONS, checkpoint_every=2)
    return Sweep(models=[str(m) for m in models], out=out, **(args | kw))


@pytest.fixture(scope="module")
def reference(models, tmp_path_factory) -> dict[str, Path]:
    """Single runs, exactly as `foolbench run --model M --attack A --seed S` makes them."""
    folder = tmp_path_factory.mktemp("single")
    runs = {}
    for model in models:
        for seed in SEEDS:
            name = f"{model.stem}-{ATTACK}-s{seed}"
            req = RunRequest(
                models=[str(model)],
                attack=ATTACK,
                scale="cpu",
                generations=GENERATIONS,
                seed=seed,
                out=folder / name,
                progress=False,
            )
            runs[name] = start_run(req)
    return runs


@pytest.fixture(scope="module")
def swept(models, reference, tmp_path_factory) -> Path:
    """The 2 models x 1 attack x 2 seeds sweep on two local worker processes."""
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    run_sweep(sweep_spec(models, out), executor="local", jobs=2, log=lambda m: None)
    return out


def archive(run_dir: Path) -> dict:
    state = load_checkpoint(run_dir)
    return {k: v for k, v in state.items() if k.startswith(("archive/", "pool/")) or k == "rng"}


def assert_same_run(a: Path, b: Path) -> None:
    x, y = archive(a), archive(b)
    assert x.keys() == y.keys()
    for key in x:
        np.testing.assert_array_equal(x[key], y[key], err_msg=f"{a} vs {b}: {key}")
    pd.testing.assert_frame_equal(pd.read_csv(a / "results.csv"), pd.read_csv(b / "results.csv"))


def tree(folder: Path) -> dict:
    """Every file under `folder` with its size and modification time: what 'nothing changed' means."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_local_sweep_equals_single_runs(swept, reference):
    assert sorted(p.name for p in swept.iterdir()) == sorted(reference)
    for name, single in reference.items():
        assert_same_run(swept / name, single)


def test_rerun_skips_finished_and_resumes_a_killed_run(swept, reference, models, foolbench, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(swept, out)
    killed = out / f"b-{ATTACK}-s1"
    # As if killed after generation 4: the final checkpoint and the finished files never got written.
    latest = killed / "checkpoint" / "latest.json"
    entry = json.loads(latest.read_text())
    (killed / "checkpoint" / entry["file"]).unlink()
    latest.write_text(json.dumps(entry["previous"]))
    for name in ("summary.json", "results.csv", "gallery.png"):
        (killed / name).unlink()
    before = tree(out)
    args = [a for m in models for a in ("--model", m)]
    proc = foolbench(
        "sweep", *args, "--attack", ATTACK, "--seeds", "0-1", "--generations", GENERATIONS,
        "--checkpoint-every", 2, "--scale", "cpu", "--jobs", 2, "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("(skipped)") == 3 and f"b-{ATTACK}-s1 resumed" in proc.stderr
    for name in reference:
        if name != killed.name:  # finished runs are not touched
            assert {p: v for p, v in tree(out / name).items()} == {
                p: v for p, v in before.items() if p.is_relative_to(out / name)
            }
    assert_same_run(killed, reference[killed.name])
    assert "median" in proc.stdout and len(proc.stdout.splitlines()) == 6  # header + 4 runs + folder


@pytest.fixture
def ray_cluster(tmp_path, monkeypatch):
    """A local Ray cluster on a free port, started as a user would (`ray start --head`), stopped after.

    Token authentication is off on both sides: Ray turns it on for `ray start` when an earlier local
    `ray.init()` left a token in ~/.ray, and a driver given an address does not read that token.
    """
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run(
        [ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)


def test_ray_executor_gives_the_same_runs(ray_cluster, models, reference, tmp_path):
    out = tmp_path / "sweep"
    lines = []
    done = run_sweep(sweep_spec(models, out), executor="ray", address=ray_cluster, jobs=2, log=lines.append)
    assert len(done) == 4 and len(lines) == 4 and all("started" in line for line in lines)
    for name, single in reference.items():
        assert_same_run(out / name, single)


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    """A model whose classes 5-9 repeat the logits of classes 0-4: an image good for class c is as good
    for c + 5, so the champion of a class in one shard can take a class of the other shard."""

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = tiny(classes=5)

        def forward(self, x):
            out = self.body(x)
            return torch.cat([out, out], dim=1)

    return export(Twin(), tmp_path_factory.mktemp("twin") / "twin.onnx", (1, 1, 28, 28))


def shard(model: Path, out: Path, classes: str, generations: int, seed: int) -> Path:
    req = RunRequest(
        models=[str(model)], attack=ATTACK, scale="cpu", generations=generations, classes=classes,
        seed=seed, out=out, progress=False,
    )  # fmt: skip
    return start_run(req)


def test_merge_applies_the_multi_cell_rule_across_shards(twin, foolbench, tmp_path):
    a = shard(twin, tmp_path / "a", "0-4", generations=20, seed=1)  # well evolved
    b = shard(twin, tmp_path / "b", "5-9", generations=0, seed=2)  # random images only
    proc = foolbench("merge", a, b, "--out", tmp_path / "m")
    assert proc.returncode == 0, proc.stderr
    merged = tmp_path / "m"
    results = pd.read_csv(merged / "results.csv")
    assert list(results["class"]) == list(range(10))
    model = load_model(str(twin))
    rescored = model.probs(np.stack([load_png(merged / f, 1) for f in results["file"]]))
    np.testing.assert_allclose(rescored[np.arange(10), results["class"]], results["confidence"], atol=1e-6)
    # Each class holds the best of all shards' champions on it.
    pngs = {
        (run, c): load_png(run / f, 1)
        for run in (a, b)
        for c, f in pd.read_csv(run / "results.csv")[["class", "file"]].itertuples(index=False)
    }
    candidates = model.probs(np.stack(list(pngs.values())))
    np.testing.assert_allclose(results["confidence"], candidates.max(axis=0), atol=1e-6)
    # ... so shard a's evolved images took shard b's classes from b's random champions.
    own_b = pd.read_csv(b / "results.csv").set_index("class")["confidence"]
    taken = [
        c for c in range(5, 10)
        if np.array_equal(load_png(merged / results["file"][c], 1), pngs[(a, c - 5)])
    ]  # fmt: skip
    assert taken and all(results["confidence"][c] > own_b[c] for c in taken)
    summary = json.loads((merged / "summary.json").read_text())
    parts = [json.loads((d / "summary.json").read_text()) for d in (a, b)]
    assert summary["evaluations"] == sum(p["evaluations"] for p in parts) and summary["classes"] == 10
    assert summary["median_confidence"] == pytest.approx(float(np.median(results["confidence"])))
    manifest = json.loads((merged / "manifest.json").read_text())
    assert [m["run"] for m in manifest["merged_from"]] == [str(a.resolve()), str(b.resolve())]
    # Runs of another attack do not merge: one line, nothing written.
    c = tmp_path / "c"
    start_run(
        RunRequest(models=[str(twin)], attack="mnist-cppn", scale="cpu", generations=0, out=c, progress=False)
    )
    proc = foolbench("merge", a, c, "--out", tmp_path / "bad")
    assert proc.returncode == 2 and "they differ in attack" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_sharded_sweep_splits_classes_and_merges(models, tmp_path):
    out = tmp_path / "sweep"
    done = run_sweep(
        sweep_spec(models[:1], out, seeds=[3], shards=2, generations=2), jobs=1, log=lambda m: None
    )
    names = [d.name for d in done]
    assert names == [f"a-{ATTACK}-s3-shard1of2", f"a-{ATTACK}-s3-shard2of2", f"a-{ATTACK}-s3-merged"]
    manifests = [json.loads((d / "manifest.json").read_text()) for d in done]
    assert [m["classes"] for m in manifests] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], list(range(10))]
    assert manifests[0]["seed"] != manifests[1]["seed"] and manifests[2]["seed"] == 3
    merged = pd.read_csv(done[2] / "results.csv").set_index("class")["confidence"]
    for part in done[:2]:  # a class's merged champion is at least as good as its own shard's
        own = pd.read_csv(part / "results.csv").set_index("class")["confidence"]
        assert (merged[own.index] >= own - 1e-9).all()
    again = []
    run_sweep(sweep_spec(models[:1], out, seeds=[3], shards=2, generations=2), jobs=1, log=again.append)
    assert all("skipped" in line for line in again) and len(again) == 3


def test_failed_job_is_named_and_finished_runs_stay(models, tmp_path):
    second = shutil.copy(models[0], tmp_path / "c.onnx")
    out = tmp_path / "sweep"

    def log(line):  # the model file disappears after the sweep checked it, before its run
        if "a-mnist-direct-s0 started" in line:
            Path(second).unlink()

    spec = sweep_spec([models[0], second], out, seeds=[0])
    with pytest.raises(FoolbenchError, match=f"run c-{ATTACK}-s0 failed: model '.*c.onnx' not found"):
        run_sweep(spec, jobs=1, log=log)
    assert (out / f"a-{ATTACK}-s0" / "summary.json").is_file() and not (out / f"c-{ATTACK}-s0").exists()


def test_bad_input_is_one_line_and_nothing_is_written(swept, models, foolbench, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(swept / f"a-{ATTACK}-s0", out / f"a-{ATTACK}-s0")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    before = tree(out)
    base = ["sweep", "--attack", ATTACK, "--generations", GENERATIONS, "--scale", "cpu", "--out", out]
    cases = {
        "unknown attack": ["sweep", "--model", models[0], "--attack", "no-such-attack", "--out", out],
        "unreachable cluster": [*base, "--model", models[0], "--executor", "ray", "--address", "127.0.0.1:1"],
        "model fails to load": [*base, "--model", models[0], "--model", broken],
        "bad seeds": [*base, "--model", models[0], "--seeds", "3-1"],
        "no workers": [*base, "--model", models[0], "--jobs", 0],
        "other settings there": [*base, "--model", models[0], "--seeds", "0", "--classes", "0-4"],
    }
    for case, args in cases.items():
        proc = foolbench(*args)
        assert proc.returncode == 2, (case, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("foolbench: error:"), (
            case
        )
        assert tree(out) == before, case


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("3,0-1,3") == [3, 0, 1]
    for bad in ("", "a", "4-2", "-1", "1,,2"):
        with pytest.raises(FoolbenchError, match="--seeds"):
            parse_seeds(bad)
